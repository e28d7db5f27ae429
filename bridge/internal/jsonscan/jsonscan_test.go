package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/timbus-dev/timbus/bridge/internal/benchratio"
)

func TestObject(t *testing.T) {
	tests := []struct {
		in   string
		want string // members as key=value;... or the error
	}{
		{`{}`, ``},
		{` { "a" : 1 , "b":[1,{"c":"}"}], "d":"x\"y" } `, `a=1;b=[1,{"c":"}"}];d="x\"y";`},
		{`{"a":{"b":{"c":[[],{}]}},"e":null,"f":true,"g":-1.5e3}`, `a={"b":{"c":[[],{}]}};e=null;f=true;g=-1.5e3;`},
		{`{"k\"ey":"v"}`, `k\"ey="v";`},
		{`[]`, ErrNotObject.Error()},
		{`"s"`, ErrNotObject.Error()},
		{`{"a":1}{}`, ErrSyntax.Error()},
		{`{"a":}`, ErrSyntax.Error()},
		{``, ErrSyntax.Error()},
		{`{"a":1,}`, ErrSyntax.Error()},
	}
	for _, tt := range tests {
		var got bytes.Buffer
		err := Object([]byte(tt.in), func(k, v []byte) error {
			fmt.Fprintf(&got, "%s=%s;", k, v)
			return nil
		})
		if err != nil {
			got.Reset()
			got.WriteString(err.Error())
		}
		if got.String() != tt.want {
			t.Errorf("Object(%s) = %s, want %s", tt.in, got.String(), tt.want)
		}
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
	for _, s := range []string{`{}`, `{"a":1}`, `{"a":[1,{"b":"c"}],"d":"e\"f"}`, `[1]`, `{"a":"\\"}`, ` {"x" : {"y":[]}} `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want map[string]json.RawMessage
		wantErr := json.Unmarshal(b, &want)
		got := map[string][]byte{}
		err := Object(b, func(k, v []byte) error {
			key, ok := String(append(append([]byte{'"'}, k...), '"'))
			if !ok {
				t.Fatalf("key %q does not unquote", k)
			}
			// encoding/json replaces invalid UTF-8 in keys; so does []rune.
			got[string([]rune(string(key)))] = v
			return nil
		})
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("Object err = %v, encoding/json err = %v", err, wantErr)
		}
		if err != nil {
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
