package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckAcceptsAndSummarises(t *testing.T) {
	clearEnv(t)
	file := writeFile(t, "timbus.yaml", `
listen: ":8080"
metrics-listen: ":9090"
sdkappid: [1400000001]
apps:
  - sdkappid: 1400000002
    default: deny
    token: app-token-secret
nats-url: [nats://user:hunter2@nats-1:4222, nats://nats-2:4222]
audit-stream: AUDIT
events-stream: EVENTS
streams:
  audit: {replicas: 3, max_age: 720h}
  events: {replicas: 3}
commands:
  Group.CallbackBeforeSendMsg:
    fire_and_forget: true
drain-delay: 5s
`)
	code, stdout, stderr := runTimbus(t, context.Background(), "check", "--config", file)
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
	}
	if first := strings.SplitN(stdout, "\n", 2)[0]; first != file+": ok" {
		t.Errorf("first line = %q, want %q", first, file+": ok")
	}
	for _, want := range []string{
		"apps:", "1400000002 (default deny)", "1400000001",
		"nats:", "external nats://user:REDACTED@nats-1:4222", "nats://nats-2:4222",
		"streams:", "audit AUDIT (replicas 3, max_age 720h)", "events EVENTS (replicas 3)",
		"ops:", "on :9090",
		"commands:", "Group.CallbackBeforeSendMsg",
		"auth:", "signed callbacks required except for 1400000001",
		"shutdown:", "not ready for 5s",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	for _, secret := range []string{"hunter2", "app-token-secret"} {
		if strings.Contains(stdout, secret) {
			t.Errorf("summary shows the secret %q:\n%s", secret, stdout)
		}
	}
}

func TestCheckEmbeddedWithoutFile(t *testing.T) {
	clearEnv(t)
	code, stdout, stderr := runTimbus(t, context.Background(), "check", "--sdkappid", "1400000001",
		"--nats-store", "/var/lib/timbus/nats", "--audit-stream", "AUDIT")
	if code != exitOK {
		t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
	}
	for _, want := range []string{
		"settings (no config file): ok",
		"embedded server on 127.0.0.1:4222 (JetStream in /var/lib/timbus/nats; no authentication (loopback only))",
		"audit AUDIT (replicas 1)",
		"on :8080 (the callback listener)",
		"NOT authenticated", "TIMBUS_TOKEN",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
}

// TestCheckReadsEnvironment: containers set secrets and overrides through
// TIMBUS_* variables, so check must see them exactly as serve does.
func TestCheckReadsEnvironment(t *testing.T) {
	file := writeFile(t, "timbus.yaml", "sdkappid: 1400000001\ntimeout: 1s\n")

	t.Run("token", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("TIMBUS_TOKEN", "s3cret-from-env")
		code, stdout, stderr := runTimbus(t, context.Background(), "check", "--config", file)
		if code != exitOK {
			t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
		}
		if !strings.Contains(stdout, "signed callbacks required (token set)") || strings.Contains(stdout, "s3cret") {
			t.Errorf("summary:\n%s", stdout)
		}
	})
	t.Run("config file from TIMBUS_CONFIG", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("TIMBUS_CONFIG", file)
		code, stdout, _ := runTimbus(t, context.Background(), "check")
		if code != exitOK || !strings.HasPrefix(stdout, file+": ok\n") {
			t.Errorf("exit code %d, stdout:\n%s", code, stdout)
		}
	})
	t.Run("environment beats the file", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("TIMBUS_TIMEOUT", "2500ms")
		code, stdout, stderr := runTimbus(t, context.Background(), "check", "--config", file)
		if code != exitUsage || stdout != "" {
			t.Fatalf("exit code %d, stdout %q", code, stdout)
		}
		for _, want := range []string{"timbus check:", "timeout=2.5s (from TIMBUS_TIMEOUT)", "2s deadline"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, stderr)
			}
		}
	})
	t.Run("a flag beats the environment", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("TIMBUS_TIMEOUT", "2500ms")
		code, _, stderr := runTimbus(t, context.Background(), "check", "--config", file, "--timeout", "1200ms")
		if code != exitOK {
			t.Errorf("exit code %d, stderr:\n%s", code, stderr)
		}
	})
}

func TestCheckRefusesBadConfig(t *testing.T) {
	long := strings.Repeat("k", 129)
	tests := []struct {
		name string
		file string
		env  map[string]string
		args []string
		want []string // all must appear in stderr
		not  []string // none may
	}{
		{
			name: "no file, no sdkappid",
			want: []string{"no SdkAppid", "--sdkappid", "TIMBUS_SDKAPPID"},
		},
		{
			name: "missing file",
			args: []string{"--config", "/nonexistent/timbus.yaml"},
			want: []string{"/nonexistent/timbus.yaml"},
		},
		{
			name: "not YAML",
			file: "sdkappid: [1\n",
			want: []string{"config file", "timbus.yaml"},
		},
		{
			name: "misspelt key",
			file: "sdkappid: 1\nnats_url: nats://a:4222\n",
			want: []string{`unknown key "nats_url" (did you mean "nats-url"?)`},
		},
		{
			name: "sdkappid not a number",
			file: "sdkappid: [1400000001, app]\n",
			want: []string{"sdkappid=app", "decimal number"},
		},
		{
			name: "timeout past Tencent's deadline",
			file: "sdkappid: 1\ntimeout: 5s\n",
			want: []string{"timeout=5s", `key "timeout" in`, "2s deadline"},
		},
		{
			name: "command default the command cannot answer",
			file: "sdkappid: 1\ncommands:\n  OfficialAccount.CallbackBeforeCreateOfficialAccount:\n    default: \"10101\"\n",
			want: []string{"commands.OfficialAccount.CallbackBeforeCreateOfficialAccount.default=10101", "accepts ErrorCode"},
		},
		{
			name: "stream on the embedded server without a store",
			file: "sdkappid: 1\naudit-stream: AUDIT\n",
			want: []string{"audit-stream=AUDIT", `key "audit-stream" in`, "nats-store"},
		},
		{
			name: "three replicas on the embedded server",
			file: "sdkappid: 1\nnats-store: /tmp/x\nevents-stream: EVENTS\nstreams:\n  events: {replicas: 3}\n",
			want: []string{"events-stream=EVENTS", "one replica"},
		},
		{
			name: "audit and events in one stream",
			file: "sdkappid: 1\nnats-url: nats://n:4222\naudit-stream: S\nevents-stream: S\n",
			want: []string{"events-stream=S", "must differ from audit-stream"},
		},
		{
			name: "stream name with a dot",
			args: []string{"--sdkappid", "1", "--nats-url", "nats://n:4222", "--audit-stream", "timbus.audit"},
			want: []string{"audit-stream=timbus.audit (from --audit-stream)"},
		},
		{
			name: "trusted proxy not a network",
			file: "sdkappid: 1\ntrusted-proxy: [lb.internal]\n",
			want: []string{"trusted-proxy=[lb.internal]"},
		},
		{
			name: "subject prefix with a wildcard",
			env:  map[string]string{"TIMBUS_SUBJECT_PREFIX": "timbus.*"},
			file: "sdkappid: 1\n",
			want: []string{"subject-prefix=timbus.* (from TIMBUS_SUBJECT_PREFIX)"},
		},
		{
			name: "token too long, from the environment",
			env:  map[string]string{"TIMBUS_TOKEN": long},
			file: "sdkappid: 1\n",
			want: []string{"token=(secret) (from TIMBUS_TOKEN)", "at most 128"},
			not:  []string{long},
		},
		{
			name: "path without slash",
			file: "sdkappid: 1\npath: callback\n",
			want: []string{"path=callback"},
		},
		{
			name: "negative drain delay",
			file: "sdkappid: 1\ndrain-delay: -1s\n",
			want: []string{"drain-delay=-1s"},
		},
		{
			name: "bad log format",
			file: "sdkappid: 1\nlog-format: text\n",
			want: []string{`invalid log-format "text"`},
		},
		{
			name: "positional argument",
			args: []string{"--sdkappid", "1", "timbus.yaml"},
			want: []string{`unexpected argument "timbus.yaml"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			args := append([]string{"check"}, tt.args...)
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, "timbus.yaml", tt.file))
			}
			code, stdout, stderr := runTimbus(t, context.Background(), args...)
			if code != exitUsage {
				t.Errorf("exit code = %d, want %d", code, exitUsage)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			if !strings.HasPrefix(stderr, "timbus check: ") {
				t.Errorf("stderr does not start with the command's name:\n%s", stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, stderr)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(stderr, w) {
					t.Errorf("stderr shows %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestCheckStartsNothing: check must succeed where serve could not start,
// and touch neither the network nor the disk.
func TestCheckStartsNothing(t *testing.T) {
	clearEnv(t)
	// Held by the test: serve could bind neither, and NATS is "there".
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	natsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer natsLn.Close()
	store := filepath.Join(t.TempDir(), "never-created")

	for _, args := range [][]string{
		{"--listen", busy.Addr().String(), "--nats-listen", busy.Addr().String(), "--nats-store", store, "--audit-stream", "AUDIT"},
		{"--listen", busy.Addr().String(), "--metrics-listen", busy.Addr().String(), "--nats-url", "nats://" + natsLn.Addr().String()},
	} {
		code, _, stderr := runTimbus(t, context.Background(), append([]string{"check", "--sdkappid", "1400000001"}, args...)...)
		if code != exitOK {
			t.Errorf("check %v: exit code %d, stderr:\n%s", args, code, stderr)
		}
	}
	if _, err := os.Stat(store); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("check created the NATS store %s (stat: %v)", store, err)
	}
	if err := natsLn.(*net.TCPListener).SetDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if conn, err := natsLn.Accept(); err == nil {
		conn.Close()
		t.Error("check connected to NATS")
	}
}

func TestCheckHelp(t *testing.T) {
	clearEnv(t)
	code, stdout, stderr := runTimbus(t, context.Background(), "check", "--help")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	for _, want := range []string{"Usage: timbus check", "TIMBUS_", "TIMBUS_TOKEN", "--config", "Exit status"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("help lacks %q:\n%s", want, stdout)
		}
	}
	_, viaHelp, _ := runTimbus(t, context.Background(), "help", "check")
	if viaHelp != stdout {
		t.Errorf("timbus help check differs from timbus check --help:\n%s", viaHelp)
	}
	_, usage, _ := runTimbus(t, context.Background())
	if !strings.Contains(usage, "\tcheck ") {
		t.Errorf("usage does not list check:\n%s", usage)
	}
}
