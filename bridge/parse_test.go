package bridge

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/timbus-dev/timbus/internal/benchratio"
	"github.com/timbus-dev/timbus/internal/samples"
)

func TestParseCallback(t *testing.T) {
	tests := []struct {
		body    string
		command string
		ok      bool
	}{
		{`{"CallbackCommand":"Group.CallbackBeforeSendMsg","EventTime":"1670574414123"}`, "Group.CallbackBeforeSendMsg", true},
		{`{"CallbackCommand":"Group.CallbackBeforeSendMsg","EventTime":1670574414123}`, "Group.CallbackBeforeSendMsg", true},
		{`{"EventTime":1,"Nested":{"CallbackCommand":"x"}}`, "", true}, // only the top level counts
		{`{"CallbackCommand":"\u0047roup.CallbackBeforeSendMsg"}`, "Group.CallbackBeforeSendMsg", true},
		{`{"Text":"你好 🌏"}`, "", true},
		{`{"CallbackCommand":null}`, "", false},
		{`{"CallbackCommand":"a","CallbackCommand":"b"}`, "", false},
		{`{`, "", false},
		{`[]`, "", false},
		// Keys are compared decoded: an escaped key is the key.
		{`{"Callback\u0043ommand":"Group.CallbackBeforeSendMsg"}`, "Group.CallbackBeforeSendMsg", true},
		{`{"CallbackCommand":"C2C.CallbackBeforeSendMsg","Callback\u0043ommand":"Group.CallbackBeforeSendMsg"}`, "", false},
		{`{"Callback\u0043ommand":"Group.CallbackBeforeSendMsg","CallbackCommand":"C2C.CallbackBeforeSendMsg"}`, "", false},
		{`{"CallbackCommand":"C2C.CallbackBeforeSendMsg","Text":1,"Te\u0078t":2}`, "", false}, // any key twice
		{`{"CallbackCommand":"C2C.CallbackBeforeSendMsg","callbackcommand":"Group.CallbackBeforeSendMsg"}`, "", false},
		{`{"CALLBAC\u212aCOMMAND":"Group.CallbackBeforeSendMsg"}`, "", false}, // the Kelvin sign folds to k
		{`{"CallbackCommand\u0000":"Group.CallbackBeforeSendMsg","CallbackCommand":"C2C.CallbackBeforeSendMsg"}`, "", false},
		{"{\"CallbackCommand\":\"C2C.CallbackBeforeSendMsg\",\"Text\":\"\xff\"}", "", false},
		{`{"CallbackCommand":"C2C.CallbackBeforeSendMsg","Text":"\udfff"}`, "", false},
		{`{"a":` + strings.Repeat("[", 63) + strings.Repeat("]", 63) + `}`, "", true},
		{`{"a":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `}`, "", false},
	}
	for _, tt := range tests {
		got, err := parseCallback([]byte(tt.body))
		if (err == nil) != tt.ok || string(got) != tt.command {
			t.Errorf("parseCallback(%.80s) = %q, %v", tt.body, got, err)
		}
	}
}

// FuzzParseCallback holds parseCallback to encoding/json's reading of the
// same body: a body it accepts is an object whose CallbackCommand member,
// decoded, is the command it returns, and no other key could pass for that
// member in a decoder that ignores case.
func FuzzParseCallback(f *testing.F) {
	for _, s := range samples.Requests() {
		f.Add(s.Body)
	}
	f.Add([]byte(`{"CallbackCommand":"C2C.CallbackBeforeSendMsg","Callback\u0043ommand":"Group.CallbackBeforeSendMsg"}`))
	f.Add([]byte(`{"Callback\u0043ommand":"Group.CallbackBeforeSendMsg"}`))
	f.Add([]byte(`{"callbackCommand":"Group.CallbackBeforeSendMsg"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		command, err := parseCallback(body)
		if err != nil {
			return
		}
		var members map[string]json.RawMessage
		if err := json.Unmarshal(body, &members); err != nil || members == nil {
			t.Fatalf("accepted %q, which encoding/json does not read as an object: %v", body, err)
		}
		for k := range members {
			if k != "CallbackCommand" && strings.EqualFold(k, "CallbackCommand") {
				t.Fatalf("accepted the look-alike key %q", k)
			}
		}
		raw, ok := members["CallbackCommand"]
		if !ok {
			if command != nil {
				t.Fatalf("found a command %q in a body without the key", command)
			}
			return
		}
		var want string
		if err := json.Unmarshal(raw, &want); err != nil || string(command) != want {
			t.Fatalf("command %q; encoding/json reads %s (%v)", command, raw, err)
		}
	})
}

// BenchmarkParseCallback measures parseCallback on a callback body;
// "x_encoding_json" is its time over decoding the same body's command with
// encoding/json, measured in the same run.
func BenchmarkParseCallback(b *testing.B) {
	body := sample(b, "Group.CallbackBeforeSendMsg")
	b.SetBytes(int64(len(body)))
	var decoded struct{ CallbackCommand string }
	benchratio.Run(b, "x_encoding_json", func() {
		if err := json.Unmarshal(body, &decoded); err != nil {
			b.Fatal(err)
		}
	}, func() {
		if _, err := parseCallback(body); err != nil {
			b.Fatal(err)
		}
	})
}
