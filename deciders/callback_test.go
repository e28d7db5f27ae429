package deciders_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/timbus-dev/timbus/deciders"
	"github.com/timbus-dev/timbus/internal/samples"
)

func sample(t *testing.T, command string) []byte {
	t.Helper()
	b, ok := samples.Request(command)
	if !ok {
		t.Fatalf("no sample for %s", command)
	}
	return b
}

func TestCallback_Fields(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		want deciders.Fields
	}{
		{
			// Tencent's sample sends EventTime as a string here.
			name: "group message", body: sample(t, "Group.CallbackBeforeSendMsg"),
			want: deciders.Fields{
				CallbackCommand: "Group.CallbackBeforeSendMsg",
				GroupID:         "@TGS#2J4SZEAEL",
				Type:            "Community",
				FromAccount:     "jared",
				OperatorAccount: "admin",
				MsgBody:         []deciders.MsgElem{{MsgType: "TIMTextElem", MsgContent: json.RawMessage(`{"Text": "red packet"}`)}},
				CloudCustomData: "your cloud custom data",
				EventTime:       1670574414123,
			},
		},
		{
			// ... and as a number here.
			name: "official account creation", body: sample(t, "OfficialAccount.CallbackBeforeCreateOfficialAccount"),
			want: deciders.Fields{
				CallbackCommand: "OfficialAccount.CallbackBeforeCreateOfficialAccount",
				OperatorAccount: "107867",
				OwnerAccount:    "107867",
				Name:            "TestOfficialAccount",
				EventTime:       1670574414123,
			},
		},
		{
			name: "c2c message", body: sample(t, "C2C.CallbackBeforeSendMsg"),
			want: deciders.Fields{
				CallbackCommand: "C2C.CallbackBeforeSendMsg",
				FromAccount:     "jared",
				ToAccount:       "John",
				MsgBody:         []deciders.MsgElem{deciders.TextElem("red packet")},
				CloudCustomData: "your cloud custom data",
			},
		},
		{name: "empty object", body: []byte(`{}`)},
		{name: "nulls are absent", body: []byte(`{"Name":null,"MsgBody":null,"EventTime":null}`)},
		{name: "names match exactly", body: []byte(`{"name":"admin","from_account":"x","GroupID":"g"}`)},
		{name: "unknown members ignored", body: []byte(`{"Name":"n","Extra":{"a":[1,2]}}`), want: deciders.Fields{Name: "n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cb := &deciders.Callback{Body: tt.body}
			got, err := cb.Fields()
			if err != nil {
				t.Fatalf("Fields: %v", err)
			}
			if !equalFields(got, tt.want) {
				t.Fatalf("Fields\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// equalFields compares MsgContent as JSON values, not bytes.
func equalFields(a, b deciders.Fields) bool {
	if len(a.MsgBody) != len(b.MsgBody) {
		return false
	}
	for i := range a.MsgBody {
		var x, y any
		if a.MsgBody[i].MsgType != b.MsgBody[i].MsgType ||
			json.Unmarshal(a.MsgBody[i].MsgContent, &x) != nil || json.Unmarshal(b.MsgBody[i].MsgContent, &y) != nil ||
			!reflect.DeepEqual(x, y) {
			return false
		}
	}
	a.MsgBody, b.MsgBody = nil, nil
	return reflect.DeepEqual(a, b)
}

func TestCallback_FieldsErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"not JSON", `<xml/>`, "invalid character"},
		{"empty", ``, "unexpected end"},
		{"array", `["Name"]`, "not a JSON object"},
		{"null", `null`, "not a JSON object"},
		{"name not a string", `{"Name":42}`, `"Name" is a JSON number, want string`},
		{"msg body not an array", `{"MsgBody":{"MsgType":"TIMTextElem"}}`, `"MsgBody" is a JSON object`},
		{"msg element not an object", `{"MsgBody":["hi"]}`, `"MsgBody": not a JSON object`},
		{"msg type not a string", `{"MsgBody":[{"MsgType":1,"MsgContent":{}}]}`, `"MsgType" is a JSON number`},
		{"event time words", `{"EventTime":"yesterday"}`, `"EventTime": "yesterday" is not an integer`},
		{"event time fraction", `{"EventTime":1.5}`, `"EventTime": 1.5 is not an integer`},
		// A name written twice, however spelt, is ambiguous: the decider and
		// Tencent could each read another value.
		{"command twice, one escaped", `{"CallbackCommand":"C2C.CallbackBeforeSendMsg","Callback\u0043ommand":"Group.CallbackBeforeSendMsg"}`, `duplicate key "CallbackCommand"`},
		{"command twice, first escaped", `{"Callback\u0043ommand":"Group.CallbackBeforeSendMsg","CallbackCommand":"C2C.CallbackBeforeSendMsg"}`, `duplicate key "CallbackCommand"`},
		{"any member twice", `{"Random":1,"Random":2}`, `duplicate key "Random"`},
		{"a member twice in a message element", `{"MsgBody":[{"MsgType":"TIMTextElem","Msg\u0054ype":"TIMFaceElem","MsgContent":{}}]}`, `"MsgBody": duplicate key "MsgType"`},
		{"invalid UTF-8 names alike once decoded", "{\"a\xff\":1,\"a\xfe\":2}", "duplicate key \"a\ufffd\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cb := &deciders.Callback{Body: []byte(tt.body)}
			got, err := cb.Fields()
			if !errors.Is(err, deciders.ErrBody) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Fields(%s) = %+v, %v; want ErrBody with %q", tt.body, got, err, tt.want)
			}
		})
	}
}

func TestEventTime(t *testing.T) {
	tests := []struct {
		in      string
		want    deciders.EventTime
		wantErr bool
	}{
		{in: `1670574414123`, want: 1670574414123},
		{in: `"1670574414123"`, want: 1670574414123},
		{in: `0`, want: 0},
		{in: `null`, want: 0},
		{in: `""`, wantErr: true},
		{in: `"12a"`, wantErr: true},
		{in: `1e3`, wantErr: true},
		{in: `true`, wantErr: true},
		{in: `{}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var got deciders.EventTime
			err := json.Unmarshal([]byte(tt.in), &got)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("Unmarshal(%s) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
	if got, want := deciders.EventTime(1670574414123).Time(), time.UnixMilli(1670574414123); !got.Equal(want) {
		t.Fatalf("Time = %v, want %v", got, want)
	}
	if !deciders.EventTime(0).Time().IsZero() {
		t.Fatal("zero EventTime is not the zero Time")
	}
}

func TestMsgElem_Text(t *testing.T) {
	tests := []struct {
		name   string
		elem   deciders.MsgElem
		want   string
		wantOK bool
	}{
		{"built", deciders.TextElem(`say "hi" <3`), `say "hi" <3`, true},
		{"parsed", deciders.MsgElem{MsgType: "TIMTextElem", MsgContent: json.RawMessage(`{"Text": "red packet"}`)}, "red packet", true},
		{"empty text", deciders.MsgElem{MsgType: "TIMTextElem", MsgContent: json.RawMessage(`{"Text":""}`)}, "", true},
		{"other type", deciders.MsgElem{MsgType: "TIMFaceElem", MsgContent: json.RawMessage(`{"Text":"x"}`)}, "", false},
		{"no text", deciders.MsgElem{MsgType: "TIMTextElem", MsgContent: json.RawMessage(`{}`)}, "", false},
		{"text not a string", deciders.MsgElem{MsgType: "TIMTextElem", MsgContent: json.RawMessage(`{"Text":1}`)}, "", false},
		{"lower-case member", deciders.MsgElem{MsgType: "TIMTextElem", MsgContent: json.RawMessage(`{"text":"x"}`)}, "", false},
		{"no content", deciders.MsgElem{MsgType: "TIMTextElem"}, "", false},
		{"escaped member", deciders.MsgElem{MsgType: "TIMTextElem", MsgContent: json.RawMessage(`{"T\u0065xt":"x"}`)}, "x", true},
		{"text twice", deciders.MsgElem{MsgType: "TIMTextElem", MsgContent: json.RawMessage(`{"Text":"clean","T\u0065xt":"dirty"}`)}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.elem.Text()
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("Text() = %q, %v; want %q, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// A parsed element goes back out as it came: Modify with an untouched
// element does not change its content.
func TestMsgElem_RoundTrip(t *testing.T) {
	in := `{"MsgType":"TIMCustomElem","MsgContent":{"Data":"message","Desc":"notification","Ext":"url","Sound":"dingdong.aiff"}}`
	var e deciders.MsgElem
	if err := json.Unmarshal([]byte(in), &e); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(e)
	if err != nil || string(out) != in {
		t.Fatalf("round trip = %s, %v; want %s", out, err, in)
	}
}

func TestCallback_Decode(t *testing.T) {
	cb := &deciders.Callback{Body: sample(t, "Group.CallbackBeforeSendMsg")}
	var v struct {
		Random         int
		OnlineOnlyFlag int
		TopicID        string `json:"TopicId"`
	}
	if err := cb.Decode(&v); err != nil {
		t.Fatal(err)
	}
	if v.Random != 123456 || v.OnlineOnlyFlag != 1 || v.TopicID == "" {
		t.Fatalf("Decode = %+v", v)
	}
	for _, body := range []string{"nope", `{"Random":1,"R\u0061ndom":2}`, `[1]`} {
		cb.Body = []byte(body)
		if err := cb.Decode(&v); !errors.Is(err, deciders.ErrBody) {
			t.Fatalf("Decode(%s) = %v, want ErrBody", body, err)
		}
	}
}

// FuzzCallbackFields holds Fields to a plain decoding of the same body: a
// body it accepts is a JSON object, and each field holds exactly what the
// member of that name holds (missing or null: the zero value).
func FuzzCallbackFields(f *testing.F) {
	for _, s := range samples.Requests() {
		f.Add(s.Body)
	}
	for _, s := range []string{`{}`, `null`, `[]`, `{"Name":null,"EventTime":"12"}`, `{"name":"x","Name":"y"}`,
		`{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`, `{"EventTime":1e3}`, `{"Name":1}`,
		`{"CallbackCommand":"C2C.CallbackBeforeSendMsg","Callback\u0043ommand":"Group.CallbackBeforeSendMsg"}`,
		`{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"a","T\u0065xt":"b"}}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := (&deciders.Callback{Body: body}).Fields()
		if err != nil {
			if !errors.Is(err, deciders.ErrBody) {
				t.Fatalf("error %v does not wrap ErrBody", err)
			}
			return
		}
		var plain map[string]any
		if err := json.Unmarshal(body, &plain); err != nil || plain == nil {
			var typeErr *json.UnmarshalTypeError
			if errors.As(err, &typeErr) && strings.HasPrefix(typeErr.Value, "number") && json.Valid(body) && plain != nil {
				return // a number beyond float64 (1e700): valid JSON the plain decoding cannot hold
			}
			t.Fatalf("Fields accepted %q, which is not a JSON object (%v)", body, err)
		}
		for name, value := range map[string]string{
			"CallbackCommand": got.CallbackCommand, "From_Account": got.FromAccount, "To_Account": got.ToAccount,
			"Operator_Account": got.OperatorAccount, "Owner_Account": got.OwnerAccount, "GroupId": got.GroupID,
			"Type": got.Type, "Name": got.Name, "CloudCustomData": got.CloudCustomData,
		} {
			want, _ := plain[name].(string) // accepted, so a string, null or missing
			if value != want {
				t.Fatalf("%s = %q, the body holds %q", name, value, want)
			}
		}
		if repeatsKey(body) {
			t.Fatalf("Fields accepted %q, which holds a key twice", body)
		}
		elems, _ := plain["MsgBody"].([]any)
		if len(got.MsgBody) != len(elems) {
			t.Fatalf("%d MsgBody elements, the body holds %d", len(got.MsgBody), len(elems))
		}
		var rawElems []json.RawMessage
		_ = json.Unmarshal(members(t, body)["MsgBody"], &rawElems)
		for i, e := range got.MsgBody {
			if repeatsKey(rawElems[i]) {
				t.Fatalf("Fields accepted the element %s, which holds a key twice", rawElems[i])
			}
			member, _ := elems[i].(map[string]any)
			if wantType, _ := member["MsgType"].(string); e.MsgType != wantType {
				t.Fatalf("element %d: MsgType %q, the body holds %q", i, e.MsgType, wantType)
			}
			content, _ := member["MsgContent"].(map[string]any)
			wantText, isText := content["Text"].(string)
			text, ok := e.Text()
			if ok != (isText && e.MsgType == deciders.MsgTypeText && !repeatsKey(e.MsgContent)) || text != wantText && ok {
				t.Fatalf("element %d: Text() = %q, %v; the body holds %v", i, text, ok, member)
			}
		}
		switch v := plain["EventTime"].(type) {
		case float64:
			if v == float64(int64(v)) && math.Abs(v) < 1<<53 && int64(got.EventTime) != int64(v) {
				t.Fatalf("EventTime = %d, the body holds %v", got.EventTime, v)
			}
		case string:
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && int64(got.EventTime) != n {
				t.Fatalf("EventTime = %d, the body holds %q", got.EventTime, v)
			}
		case nil:
			if got.EventTime != 0 {
				t.Fatalf("EventTime = %d, the body holds none", got.EventTime)
			}
		}
	})
}

// repeatsKey reports whether encoding/json's token stream reads a key twice
// at the top level of the object b.
func repeatsKey(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if seen[tok.(string)] {
			return true
		}
		seen[tok.(string)] = true
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return false
		}
	}
	return false
}

// members decodes the object b as encoding/json does, the last of a repeated
// key winning.
func members(t *testing.T, b []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
