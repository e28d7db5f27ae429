package bridge

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/timbus-dev/timbus/bridge/catalog"
	"github.com/timbus-dev/timbus/bridge/internal/benchratio"
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
	}
	for _, tt := range tests {
		got, err := parseCallback([]byte(tt.body))
		if (err == nil) != tt.ok || string(got) != tt.command {
			t.Errorf("parseCallback(%s) = %q, %v", tt.body, got, err)
		}
	}
}

func FuzzParseCallback(f *testing.F) {
	for _, s := range catalog.SampleRequests() {
		f.Add(s.Body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		command, err := parseCallback(body)
		if err == nil && command != nil && !bytes.Contains(body, []byte("CallbackCommand")) {
			t.Fatalf("found a command %q in a body without the key", command)
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
