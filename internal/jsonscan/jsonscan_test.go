package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/timbus-dev/timbus/internal/benchratio"
)

func TestObject(t *testing.T) {
	tests := []struct {
		in   string
		want string // members as key=value;... or the error
	}{
		{`{}`, ``},
		{` { "a" : 1 , "b":[1,{"c":"}"}], "d":"x\"y" } `, `a=1;b=[1,{"c":"}"}];d="x\"y";`},
		{`{"a":{"b":{"c":[[],{}]}},"e":null,"f":true,"g":-1.5e3}`, `a={"b":{"c":[[],{}]}};e=null;f=true;g=-1.5e3;`},
		{`{"k\"ey":"v"}`, `k"ey="v";`},
		{`{"Error\u0043ode":1,"a\/b":2,"\ud83d\ude00":3}`, `ErrorCode=1;a/b=2;😀=3;`},
		{`{"a":{"b":1,"b":2}}`, `a={"b":1,"b":2};`}, // only the top level is Object's
		{`[]`, ErrNotObject.Error()},
		{`"s"`, ErrNotObject.Error()},
		{`{"a":1}{}`, ErrSyntax.Error()},
		{`{"a":}`, ErrSyntax.Error()},
		{``, ErrSyntax.Error()},
		{`{"a":1,}`, ErrSyntax.Error()},
		{`{"a":1,"a":2}`, ErrDuplicateKey.Error()},
		{`{"ErrorCode":0,"Error\u0043ode":999999}`, ErrDuplicateKey.Error()},
		{`{"\u0041":0,"A":1}`, ErrDuplicateKey.Error()},
		{"{\"a\":\"\xff\"}", ErrUTF8.Error()},
		{`{"a":"\udc00"}`, ErrUTF8.Error()},
		{`{"a\u0000":1}`, ErrNULKey.Error()},
		{`{"a":"\u0000"}`, `a="\u0000";`}, // NUL is refused in keys only
		{strings.Repeat(`{"a":`, 65) + `1` + strings.Repeat(`}`, 65), ErrDepth.Error()},
	}
	for _, tt := range tests {
		var got bytes.Buffer
		err := Object([]byte(tt.in), func(k, v []byte) error {
			fmt.Fprintf(&got, "%s=%s;", k, v)
			return nil
		})
		if err != nil {
			got.Reset()
			for _, sentinel := range []error{ErrNotObject, ErrSyntax, ErrDuplicateKey, ErrUTF8, ErrNULKey, ErrDepth} {
				if errors.Is(err, sentinel) {
					got.WriteString(sentinel.Error())
				}
			}
		}
		if got.String() != tt.want {
			t.Errorf("Object(%s) = %s, want %s", tt.in, got.String(), tt.want)
		}
	}
}

// TestObject_ManyKeys: past the keys compared pairwise, duplicates are still
// found, however far apart and however written.
func TestObject_ManyKeys(t *testing.T) {
	object := func(n int, extra string) []byte {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			fmt.Fprintf(&b, `"k%d":%d,`, i, i)
		}
		b.WriteString(extra + "}")
		return []byte(b.String())
	}
	tests := []struct {
		name string
		doc  []byte
		dup  string // the duplicate key, or ""
	}{
		{"500 distinct keys", object(500, `"last":0`), ""},
		{"a repeat of the first key, past the inline keys", object(400, `"k0":1`), "k0"},
		{"a repeat of the last inline key", object(keysInline, `"k31":1`), "k31"},
		{"an escaped repeat", object(100, `"k\u0037":1`), "k7"},
		{"an escaped repeat of an escaped key", object(100, `"\u0041":1,"\u0041":2`), "A"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Object(tt.doc, func(k, v []byte) error { return nil })
			switch {
			case tt.dup == "" && err != nil:
				t.Fatal(err)
			case tt.dup != "" && (!errors.Is(err, ErrDuplicateKey) || !strings.Contains(err.Error(), strconv.Quote(tt.dup))):
				t.Fatalf("err = %v, want a duplicate %q", err, tt.dup)
			}
		})
	}
}

// A duplicate's error names the key, cut short: it goes into logs.
func TestObject_LongDuplicate(t *testing.T) {
	long := strings.Repeat("k", 10000)
	err := Object([]byte(`{"`+long+`":1,"`+long+`":2}`), func(k, v []byte) error { return nil })
	if !errors.Is(err, ErrDuplicateKey) || len(err.Error()) > 200 {
		t.Fatalf("err = %.300v (%d bytes)", err, len(err.Error()))
	}
}

// TestObject_Allocs: a callback-sized object costs no allocation, escaped
// keys and all checks included.
func TestObject_Allocs(t *testing.T) {
	doc := []byte(`{"CallbackCommand":"Group.CallbackBeforeSendMsg","GroupId":"@TGS#2J4SZEAEL","Type":"Community",` +
		`"From_Account":"jared","Operator_Account":"admin","Random":123456,"OnlineOnlyFlag":1,` +
		`"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"红包 🧧"}}],"CloudCustomData":"x","EventTime":"1670574414123"}`)
	n := 0
	allocs := testing.AllocsPerRun(100, func() {
		n = 0
		if err := Object(doc, func(k, v []byte) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 || n != 10 {
		t.Errorf("%v allocations for %d members", allocs, n)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		doc  string
		want error // nil: accepted
	}{
		{`{"a":"plain ascii, long enough for the word loop"}`, nil},
		{`"微信 😀 é"`, nil},
		{`"\ud83d\ude00"`, nil}, // a pair
		{`"\ufffd"`, nil},
		{"\"\xef\xbf\xbd\"", nil}, // U+FFFD written out
		{`{"a\u0001":"\u0000"}`, nil},
		{strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth), nil},
		{strings.Repeat(`{"a":`, 10) + "1" + strings.Repeat("}", 10), nil},
		{strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), ErrDepth},
		{strings.Repeat(`{"a":`, 9999) + "1" + strings.Repeat("}", 9999), ErrDepth},
		{"\"\xff\"", ErrUTF8},
		{"\"abcdefghijkl\x80\"", ErrUTF8}, // a continuation byte alone, past the word loop
		{"\"\xc0\xaf\"", ErrUTF8},         // overlong
		{"\"\xed\xa0\x80\"", ErrUTF8},     // a surrogate in UTF-8
		{"\"\xe4\xb8\"", ErrUTF8},         // cut short
		{"{\"\xe4\xb8\":1}", ErrUTF8},     // in a key
		{`"\ud800"`, ErrUTF8},             // a high surrogate alone
		{`"\udc00"`, ErrUTF8},             // a low one alone
		{`"\udc00\ud800"`, ErrUTF8},       // in the wrong order
		{`"\ud800\u0041"`, ErrUTF8},       // followed by no low surrogate
		{`"\ud800\\u0041"`, ErrUTF8},      // followed by an escaped backslash
		{`"\ud800\uzzzz"`, ErrSyntax},
		{`{"\u0000":1}`, ErrNULKey},
		{`[{"a":{"b\u0000c":1}}]`, ErrNULKey},
		{`{"a":1,}`, ErrSyntax},
		{`nul`, ErrSyntax},
		{"\"a\x01\"", ErrSyntax},
	}
	for _, tt := range tests {
		err := Check([]byte(tt.doc))
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			name := tt.doc
			if len(name) > 40 {
				name = name[:40] + "..."
			}
			t.Errorf("Check(%q) = %v, want %v", name, err, tt.want)
		}
	}
	if err := Check([]byte(strings.Repeat("[", 65) + strings.Repeat("]", 65))); err == nil || !strings.Contains(err.Error(), "limit of 64 levels") {
		t.Errorf("the depth error does not name the limit: %v", err)
	}
}

func TestObject_StopsAtCallerError(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := Object([]byte(`{"a":1,"b":2,"c":3}`), func(k, v []byte) error {
		n++
		if string(k) == "b" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Errorf("err = %v after %d members", err, n)
	}
}

func TestElements(t *testing.T) {
	var got []string
	err := Elements([]byte(`[ 1, "a,b", [2,3], {"x":[]} ,null]`), func(e []byte) error {
		got = append(got, string(e))
		return nil
	})
	if err != nil || fmt.Sprint(got) != `[1 "a,b" [2,3] {"x":[]} null]` {
		t.Errorf("got %q, %v", got, err)
	}
	if err := Elements([]byte(`{}`), func([]byte) error { return nil }); !errors.Is(err, ErrNotArray) {
		t.Errorf("object as array: %v", err)
	}
	if err := Elements([]byte(`[]`), func([]byte) error { t.Error("called for an empty array"); return nil }); err != nil {
		t.Error(err)
	}
}

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		`"plain"`:      "plain",
		`""`:           "",
		`"a\"b"`:       `a"b`,
		`"\u0047roup"`: "Group",
		`"微信"`:         "微信",
	} {
		got, ok := String([]byte(in))
		if !ok || string(got) != want {
			t.Errorf("String(%s) = %q, %v", in, got, ok)
		}
	}
	for _, in := range []string{`1`, `null`, `{}`, ``} {
		if _, ok := String([]byte(in)); ok {
			t.Errorf("String(%s) accepted", in)
		}
	}
}

func TestInt(t *testing.T) {
	for in, want := range map[string]int64{`0`: 0, `1`: 1, `-7`: -7, `120005`: 120005, `999999999999999999`: 999999999999999999} {
		if got, ok := Int([]byte(in)); !ok || got != want {
			t.Errorf("Int(%s) = %d, %v", in, got, ok)
		}
	}
	for _, in := range []string{``, `-`, `1.0`, `1e3`, `"1"`, `true`, `1234567890123456789`} {
		if _, ok := Int([]byte(in)); ok {
			t.Errorf("Int(%s) accepted", in)
		}
	}
}

// FuzzObject compares the members Object hands out with encoding/json's view
// of the same document.
func FuzzObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"a":[1,{"b":"c"}],"d":"e\"f"}`, `[1]`, `{"a":"\\"}`, ` {"x" : {"y":[]}} `, `null`} {
		f.Add([]byte(s))
	}
	for _, s := range attacks {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want map[string]json.RawMessage
		wantErr := json.Unmarshal(b, &want)
		got := map[string][]byte{}
		err := Object(b, func(k, v []byte) error {
			got[string(k)] = v
			return nil
		})
		switch {
		case err == nil && wantErr != nil:
			t.Fatalf("Object accepted what encoding/json refuses: %v", wantErr)
		case err == nil:
		case errors.Is(err, ErrNotObject) && want == nil, // null
			wantErr != nil:
			return
		case errors.Is(err, ErrSyntax) || errors.Is(err, ErrNotObject):
			t.Fatalf("Object err = %v, encoding/json accepts it", err)
		default: // one of Check's or Object's own rules
			return
		}
		if len(got) != len(want) {
			t.Fatalf("%d members, encoding/json has %d", len(got), len(want))
		}
		for k, v := range want {
			if !bytes.Equal(bytes.TrimSpace(got[k]), bytes.TrimSpace(v)) {
				t.Fatalf("member %q = %s, encoding/json has %s", k, got[k], v)
			}
		}
	})
}

// attacks are documents that a reader comparing keys as written would read
// otherwise than encoding/json does.
var attacks = []string{
	`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","Error\u0043ode":999999}`,
	`{"Action\u0053tatus":"FAIL","ActionStatus":"OK","ErrorCode":0}`,
	`{"ActionStatus":"OK","ErrorCode":0,"Msg\u0042ody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"x"}}]}`,
	`{"CallbackCommand":"C2C.CallbackBeforeSendMsg","Callback\u0043ommand":"Group.CallbackBeforeSendMsg"}`,
	`{"CallbackCommand\u0000":"Group.CallbackBeforeSendMsg","CallbackCommand":"C2C.CallbackBeforeSendMsg"}`,
	`{"a":1,"a":2}`,
	`{"\ud83d\ude00":1,"😀":2}`,
	`{"\ud800":1,"\ufffd":2}`,
	"{\"a\xff\":1,\"a\xfe\":2}",
	`{"a\/b":1,"a/b":2}`,
	`{"x":{"y":1,"y":2}}`,
}

// tokenKeys reads b with encoding/json's token stream: the top-level keys of
// the object b holds, decoded, and how deep b nests. ok is false unless b is
// one JSON object.
func tokenKeys(b []byte) (keys []string, depth int, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, 0, false
	}
	d := 1
	depth = 1
	for d > 0 {
		if d == 1 && dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return nil, 0, false
			}
			keys = append(keys, tok.(string))
		}
		tok, err := dec.Token()
		if err != nil {
			return nil, 0, false
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			d++
			depth = max(depth, d)
		case json.Delim('}'), json.Delim(']'):
			d--
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, 0, false
	}
	return keys, depth, true
}

// strictRef reads a document json.Valid accepts and says which of Check's
// rules besides UTF-8 it breaks: how deep it nests, whether a string holds an
// unpaired surrogate escape, whether a key holds \u0000.
func strictRef(b []byte) (depth int, lone, nulKey bool) {
	d := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{', '[':
			d++
			depth = max(depth, d)
		case '}', ']':
			d--
		case '"':
			j := i + 1
			high, nul := false, false
			for b[j] != '"' {
				if b[j] != '\\' || b[j+1] != 'u' {
					lone = lone || high
					high = false
					if b[j] == '\\' {
						j++
					}
					j++
					continue
				}
				v, _ := strconv.ParseUint(string(b[j+2:j+6]), 16, 16)
				j += 6
				isHigh, isLow := 0xD800 <= v && v < 0xDC00, 0xDC00 <= v && v < 0xE000
				if high && isLow {
					high = false
					continue
				}
				lone = lone || high || isLow
				high = isHigh
				nul = nul || v == 0
			}
			lone = lone || high
			k := j + 1
			for k < len(b) && strings.IndexByte(" \t\r\n", b[k]) >= 0 {
				k++
			}
			nulKey = nulKey || nul && k < len(b) && b[k] == ':'
			i = j
		}
	}
	return depth, lone, nulKey
}

// FuzzObjectKeys holds the keys Object hands out to encoding/json's token
// stream on the same input: the same decoded keys in the same order, and a
// duplicate refused exactly when the token stream repeats a key.
func FuzzObjectKeys(f *testing.F) {
	for _, s := range attacks {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"a":{"b":[1,{"c":2}]},"d":"\u00e9","\u00e9":3}`))
	many := `{"k":0`
	for i := range 40 {
		many += fmt.Sprintf(`,"k%d":%d`, i, i)
	}
	f.Add([]byte(many + `}`))
	f.Add([]byte(many + `,"k\u0033\u0039":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got []string
		err := Object(b, func(k, _ []byte) error {
			got = append(got, string(k))
			return nil
		})
		keys, depth, ok := tokenKeys(b)
		if err == nil && !ok {
			t.Fatalf("Object accepted %q; encoding/json's token stream does not read one object", b)
		}
		if !ok {
			return
		}
		_, lone, nulKey := strictRef(b)
		if !utf8.Valid(b) || lone || nulKey || depth > MaxDepth {
			if err == nil || errors.Is(err, ErrDuplicateKey) {
				t.Fatalf("Object(%q) = %v, want Check's refusal", b, err)
			}
			return
		}
		first := map[string]bool{}
		want := keys
		for i, k := range keys {
			if first[k] {
				want = keys[:i]
				break
			}
			first[k] = true
		}
		if dup := len(want) < len(keys); dup != errors.Is(err, ErrDuplicateKey) || !dup && err != nil {
			t.Fatalf("Object(%q) = %v; encoding/json's keys %q", b, err, keys)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("Object handed out keys %q, encoding/json reads %q", got, want)
		}
	})
}

// FuzzCheck holds Check to its rules, each found by other means: json.Valid,
// utf8.Valid, and a plain reading of depth, surrogate and key escapes.
func FuzzCheck(f *testing.F) {
	for _, s := range attacks {
		f.Add([]byte(s))
	}
	for _, s := range []string{`"\ud83d\ude00"`, `"\ud800"`, `"\ud800\ud800\udc00"`, `"\udc00\ud800"`, `"\ud800\u0041"`, `"\ud800\uzzzz"`,
		`"\ud800x"`, `["\ud800",1]`, "\"\xed\xa0\x80\"", "\"\xc0\xaf\"", "\"\xe4\xb8\"", `"\ufffd"`, "\"\xef\xbf\xbd\"",
		`{"\u0000":1}`, `{"a":"\u0000"}`, `{"a" : {"b\u0000" :1}}`, strings.Repeat("[", 64) + strings.Repeat("]", 64),
		strings.Repeat("[", 65) + strings.Repeat("]", 65), `"` + strings.Repeat("abcdefgh", 5) + `\"é"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := Check(b)
		if !json.Valid(b) {
			if err == nil {
				t.Fatalf("Check accepted %q, which is not JSON", b)
			}
			return
		}
		if errors.Is(err, ErrSyntax) {
			t.Fatalf("Check(%q) = %v, but it is JSON", b, err)
		}
		depth, lone, nulKey := strictRef(b)
		checks := []struct {
			broken bool
			err    error
		}{{!utf8.Valid(b) || lone, ErrUTF8}, {nulKey, ErrNULKey}, {depth > MaxDepth, ErrDepth}}
		var some bool
		for _, c := range checks {
			some = some || c.broken
			if errors.Is(err, c.err) && !c.broken {
				t.Fatalf("Check(%q) = %v, which it does not break", b, err)
			}
		}
		if some != (err != nil) {
			t.Fatalf("Check(%q) = %v; UTF-8 or surrogates broken %v, NUL key %v, depth %d",
				b, err, !utf8.Valid(b) || lone, nulKey, depth)
		}
	})
}

// FuzzValid holds Valid to encoding/json's verdict on any input.
func FuzzValid(f *testing.F) {
	for _, s := range []string{`{}`, `[]`, `{"a":1}`, `[1,2.5e-3,-0,"x\u00e9",true,false,null]`, `{"a":[1,{"b":"c"}],"d":"e\"f"}`,
		`{"a" : 1 , }`, `[1,]`, `01`, `-`, `1.`, `1e`, `"\x"`, `"\u12g4"`, "\"a\x01\"", `{"a"}`, `{1:2}`, ` 1 2 `, `nul`, `[[[[]]]]`, "\xff\"\xfe\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := Valid(b), json.Valid(b); got != want {
			t.Fatalf("Valid(%q) = %v, encoding/json says %v", b, got, want)
		}
	})
}

func TestValid_Depth(t *testing.T) {
	for _, n := range []int{63, 64, 65, maxDepth, maxDepth + 1} {
		doc := strings.Repeat("[", n) + strings.Repeat("]", n)
		if got, want := Valid([]byte(doc)), json.Valid([]byte(doc)); got != want {
			t.Errorf("depth %d: Valid = %v, encoding/json says %v", n, got, want)
		}
	}
}

// BenchmarkValid measures Valid on a callback body; "x_encoding_json" is its
// time over json.Valid's on the same body, measured in the same run.
func BenchmarkValid(b *testing.B) {
	doc := []byte(`{"CallbackCommand":"OfficialAccount.CallbackBeforeCreateOfficialAccount","Owner_Account":"leckie","Type":"Public","Name":"TestOfficialAccount","Introduction":"This is an introduction","Notification":"This is a notification","FaceUrl":"http://this.is.face.url","MaxMemberNum":20000,"EventTime":1670574414123}`)
	check := func(ok bool) {
		if !ok {
			b.Fatal("invalid")
		}
	}
	benchratio.Run(b, "x_encoding_json", func() { check(json.Valid(doc)) }, func() { check(Valid(doc)) })
}

// BenchmarkCheck measures Check on callback bodies, ASCII and mostly
// Chinese text; "x_encoding_json" is its time over json.Valid's, which checks
// neither UTF-8 nor depth, measured in the same run.
func BenchmarkCheck(b *testing.B) {
	for _, bench := range []struct {
		name string
		doc  string
	}{
		{"ascii", `{"CallbackCommand":"OfficialAccount.CallbackBeforeCreateOfficialAccount","Owner_Account":"leckie","Type":"Public","Name":"TestOfficialAccount","Introduction":"This is an introduction","Notification":"This is a notification","FaceUrl":"http://this.is.face.url","MaxMemberNum":20000,"EventTime":1670574414123}`},
		{"chinese", `{"CallbackCommand":"Group.CallbackBeforeSendMsg","GroupId":"@TGS#2J4SZEAEL","Type":"Community","From_Account":"小明","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"今天晚上七点在老地方见面，别忘了带上红包和礼物 🧧🎁"}}],"EventTime":1670574414123}`},
	} {
		b.Run(bench.name, func(b *testing.B) {
			doc := []byte(bench.doc)
			b.SetBytes(int64(len(doc)))
			benchratio.Run(b, "x_encoding_json", func() {
				if !json.Valid(doc) {
					b.Fatal("invalid")
				}
			}, func() {
				if err := Check(doc); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}
