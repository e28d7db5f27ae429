package deciders_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/timbus-dev/timbus/bridge/catalog"
	"github.com/timbus-dev/timbus/deciders"
)

func sample(t *testing.T, command string) []byte {
	t.Helper()
	b, ok := catalog.SampleRequest(command)
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
	cb.Body = []byte("nope")
	if err := cb.Decode(&v); !errors.Is(err, deciders.ErrBody) {
		t.Fatalf("Decode(nope) = %v, want ErrBody", err)
	}
}
