package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/timbus-dev/timbus/internal/exampletest"
)

// buildExample builds this example into a temporary directory, as a user
// would run it.
func buildExample(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "go-officialaccount")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// The example as its own process, behind a real bridge, answering callbacks
// Tencent sends over HTTP.
func TestProcess_ThroughBridge(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the example and runs it as a process")
	}
	bin := buildExample(t)
	// A deny default tells a decider error apart from an allow.
	e := exampletest.Start(t, exampletest.Options{
		Default: "deny",
		Timeout: 1900 * time.Millisecond, // room for a loaded machine running -race
	})
	p := exampletest.Run(t, []string{"NATS_URL=" + e.NATSURL}, ".", bin, "--reserved", "admin,boss", "--log-level", "debug")
	e.WaitForDecider(t, command, 20*time.Second)
	e.Conform(t, command)

	const defaultDeny = `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":1}`
	tests := []struct {
		name string
		body []byte
		want string
	}{
		{name: "documented sample", body: exampletest.Sample(t, command),
			want: `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`},
		{name: "reserved name", body: sampleBody(t, "admin"),
			want: `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"official account name \"admin\" is reserved"}`},
		{name: "reserved in another case", body: sampleBody(t, " Boss"),
			want: `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"official account name \" Boss\" is reserved"}`},
		{name: "body without a name: the bridge's default", body: sampleBody(t, nil), want: defaultDeny},
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
	if out := p.Output(); !strings.Contains(out, "stopping") || strings.Contains(out, "stopped") {
		t.Fatalf("no clean stop in the output:\n%s", out)
	}
}
