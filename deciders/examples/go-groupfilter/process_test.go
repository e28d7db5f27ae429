package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/timbus-dev/timbus/internal/exampletest"
)

// The example built and run as its own process, behind a real bridge,
// answering callbacks Tencent sends over HTTP.
func TestProcess_ThroughBridge(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the example and runs it as a process")
	}
	bin := filepath.Join(t.TempDir(), "go-groupfilter")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// A deny default tells a decider error apart from an allow.
	e := exampletest.Start(t, exampletest.Options{
		Default: "deny",
		Timeout: 1900 * time.Millisecond, // room for a loaded machine running -race
	})
	p := exampletest.Run(t, []string{"NATS_URL=" + e.NATSURL}, ".", bin)
	e.WaitForDecider(t, command, 20*time.Second)
	e.Conform(t, command)

	tests := []struct {
		name string
		body []byte
		want string
	}{
		{name: "documented sample", body: exampletest.Sample(t, command),
			want: `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`},
		{name: "banned words",
			body: body(t, `[{"MsgType":"TIMTextElem","MsgContent":{"Text":"this is SPAM, not a scam"}},`+face+`]`),
			want: `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgBody":[` +
				`{"MsgType":"TIMTextElem","MsgContent":{"Text":"this is ****, not a ****"}},` + face + `]}`},
		{name: "unreadable body: the bridge's default", body: body(t, `"spam"`),
			want: `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, answer := e.Post(t, command, tt.body)
			if status != 200 || answer != tt.want {
				t.Fatalf("answer %d %s\nwant 200 %s", status, answer, tt.want)
			}
		})
	}

	p.Stop(5 * time.Second)
	if out := p.Output(); !strings.Contains(out, "msg=stopping") || strings.Contains(out, "level=ERROR") {
		t.Fatalf("no clean stop in the output:\n%s", out)
	}
}
