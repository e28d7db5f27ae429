package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer the bridge's goroutines can log into while a
// test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// clearEnv hides any TIMBUS_ variable of the environment the tests run in;
// an empty variable counts as unset.
func clearEnv(t *testing.T) {
	t.Helper()
	t.Setenv(envName(configOption), "")
	for _, opt := range serveOptions {
		t.Setenv(envName(opt.name), "")
	}
}

// writeFile writes a temporary file and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runTimbus runs the binary in-process. A command that should return at
// once but serves instead fails the test when the deadline ends it.
func runTimbus(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, &out, &errOut) }()
	select {
	case code = <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("timbus %s did not return within 15s; stderr:\n%s", strings.Join(args, " "), errOut.String())
	}
	return code, out.String(), errOut.String()
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout bool // usage on stdout, else on stderr
		wantErr    string
	}{
		{name: "no arguments", args: nil, wantCode: exitOK, wantStdout: true},
		{name: "help", args: []string{"help"}, wantCode: exitOK, wantStdout: true},
		{name: "--help", args: []string{"--help"}, wantCode: exitOK, wantStdout: true},
		{name: "-h", args: []string{"-h"}, wantCode: exitOK, wantStdout: true},
		{name: "unknown command", args: []string{"srve"}, wantCode: exitUsage, wantErr: `unknown command "srve"`},
		{name: "help for unknown command", args: []string{"help", "srve"}, wantCode: exitUsage, wantErr: `unknown command "srve"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runTimbus(t, context.Background(), tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d", code, tt.wantCode)
			}
			usage := stderr
			if tt.wantStdout {
				usage = stdout
			}
			for _, name := range []string{"serve", "commands", "conform", "audit", "replay", "version", "help"} {
				if !strings.Contains(usage, "\t"+name+" ") {
					t.Errorf("usage does not list %q:\n%s", name, usage)
				}
			}
			if !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.wantErr)
			}
		})
	}
}

func TestHelpCommandShowsCommandHelp(t *testing.T) {
	clearEnv(t)
	for _, name := range []string{"serve", "commands", "conform", "audit", "replay", "version"} {
		t.Run(name, func(t *testing.T) {
			code, viaHelp, _ := runTimbus(t, context.Background(), "help", name)
			if code != exitOK {
				t.Fatalf("timbus help %s: exit code %d", name, code)
			}
			_, viaFlag, _ := runTimbus(t, context.Background(), name, "--help")
			if viaHelp != viaFlag || !strings.HasPrefix(viaHelp, "Usage: timbus "+name) {
				t.Errorf("timbus help %s printed\n%s\nwant the output of timbus %s --help:\n%s", name, viaHelp, name, viaFlag)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	old := version
	version = "v1.2.3"
	t.Cleanup(func() { version = old })

	code, stdout, stderr := runTimbus(t, context.Background(), "version")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if lines[0] != "timbus v1.2.3" {
		t.Errorf("first line = %q, want %q", lines[0], "timbus v1.2.3")
	}
	if !strings.Contains(stdout, runtime.Version()) {
		t.Errorf("output does not name the Go version %s:\n%s", runtime.Version(), stdout)
	}

	if code, _, _ := runTimbus(t, context.Background(), "version", "extra"); code != exitUsage {
		t.Errorf("timbus version extra: exit code %d, want %d", code, exitUsage)
	}
}
