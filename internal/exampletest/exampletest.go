// Package exampletest runs example deciders the way users run them: a real
// timbus bridge on an embedded NATS server, the example as its own process
// (Go, Node, C, shell…), and callbacks sent to the bridge over HTTP.
package exampletest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/timbus-dev/timbus/bridge"
	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/ask"
	"github.com/timbus-dev/timbus/internal/natstest"
	"github.com/timbus-dev/timbus/internal/samples"
)

// SdkAppID is the app the bridge serves in these tests.
const SdkAppID = "1400000001"

// Env is a running bridge with its NATS server.
type Env struct {
	// NATSURL is where example deciders connect.
	NATSURL string
	// BridgeURL is the bridge's base URL, http://127.0.0.1:port.
	BridgeURL string
	nc        *nats.Conn
}

// Options are the bridge settings a test of an example may change; the
// examples' tests set them through here rather than through bridge.Config,
// so that nothing under deciders/ depends on the bridge package.
type Options struct {
	// SubjectPrefix replaces the default first subject token.
	SubjectPrefix string
	// Timeout is how long the bridge waits for a verdict.
	Timeout time.Duration
	// Default is the bridge's default verdict as the --default flag reads
	// it ("allow", "deny", "<code>:<info>").
	Default string
	// CommandDefaults sets the default verdict of single commands.
	CommandDefaults map[string]string
	// Logs receives the bridge's JSON log lines, one per callback; nil
	// discards them.
	Logs io.Writer
}

// Start runs NATS and a bridge serving SdkAppID with opts, both stopped when
// the test ends.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	ns := natstest.Run(t)
	cfg := bridge.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSURL = ns.ClientURL()
	cfg.Apps = []bridge.App{{ID: SdkAppID}}
	cfg.Logger = zerolog.Nop()
	if opts.Logs != nil {
		cfg.Logger = zerolog.New(opts.Logs)
		cfg.LogCallbacks = bridge.LogCallbacksAll
	}
	if opts.SubjectPrefix != "" {
		cfg.SubjectPrefix = opts.SubjectPrefix
	}
	if opts.Timeout > 0 {
		cfg.Timeout = opts.Timeout
	}
	if opts.Default != "" {
		cfg.Default = verdict(t, opts.Default)
	}
	if len(opts.CommandDefaults) > 0 {
		cfg.Commands = make(map[string]bridge.CommandConfig, len(opts.CommandDefaults))
		for command, text := range opts.CommandDefaults {
			v := verdict(t, text)
			cfg.Commands[command] = bridge.CommandConfig{Default: &v}
		}
	}
	b, err := bridge.New(cfg)
	if err != nil {
		t.Fatalf("bridge: %v", err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("bridge: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	})
	return &Env{NATSURL: ns.ClientURL(), BridgeURL: "http://" + b.Addr(), nc: natstest.Connect(t, ns)}
}

func verdict(t testing.TB, text string) bridge.Verdict {
	t.Helper()
	v, err := bridge.ParseVerdict(text)
	if err != nil {
		t.Fatalf("exampletest: %v", err)
	}
	return v
}

// Post sends a callback for command to the bridge as Tencent would and
// returns the HTTP status and answer.
func (e *Env) Post(t testing.TB, command string, body []byte) (int, string) {
	t.Helper()
	url := e.BridgeURL + "/?SdkAppid=" + SdkAppID + "&CallbackCommand=" + command +
		"&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI"
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", command, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(answer)
}

// Sample returns Tencent's documented request body for command.
func Sample(t testing.TB, command string) []byte {
	t.Helper()
	b, ok := samples.Request(command)
	if !ok {
		t.Fatalf("no sample for %s", command)
	}
	return b
}

// WaitForDecider returns once a decider answers requests for command, or
// fails the test after total.
func (e *Env) WaitForDecider(t testing.TB, command string, total time.Duration) {
	t.Helper()
	subject := protocol.Subject(protocol.DefaultSubjectPrefix, protocol.KindDecide, SdkAppID, command)
	deadline := time.Now().Add(total)
	body := []byte(`{}`)
	if b, ok := samples.Request(command); ok {
		body = b
	}
	for {
		_, err := ask.RequestBy(e.nc, &nats.Msg{Subject: subject, Data: body}, time.Now().Add(500*time.Millisecond), "wait-for-decider")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no decider answers on %s after %v: %v", subject, total, err)
		}
		if errors.Is(err, nats.ErrNoResponders) {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Process is an example decider running as its own process.
type Process struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// Run starts name with args (and env entries "K=V" added to the test's
// environment), and stops it when the test ends. Its output is shown if the
// test fails.
func Run(t testing.TB, env []string, dir, name string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(cmd.Environ(), env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// A grandchild that keeps the output pipes open must not hold Wait
	// forever; the process group lets Stop reach such grandchildren too.
	cmd.WaitDelay = 5 * time.Second
	ownProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{cmd: cmd, out: out, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, out.String())
		}
	})
	return p
}

// Stop sends SIGTERM (SIGKILL after grace) to the process and everything it
// started, and waits for the process to end.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	signalGroup(p.cmd, terminate)
	select {
	case <-p.done:
	case <-time.After(grace):
		signalGroup(p.cmd, kill)
		<-p.done
	}
}

// Output is what the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	buildOnce sync.Once
	timbusBin string
	buildErr  error
)

// Conform runs `timbus conform` (built from this repository) against the
// deciders on the env's NATS server for command, and fails the test unless
// every check passes.
func (e *Env) Conform(t testing.TB, command string) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "timbus-conform")
		if err != nil {
			buildErr = err
			return
		}
		timbusBin = filepath.Join(dir, "timbus")
		out, err := exec.Command("go", "build", "-o", timbusBin, "github.com/timbus-dev/timbus/cmd/timbus").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build timbus: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, timbusBin, "conform", "--nats-url", e.NATSURL,
		"--sdkappid", SdkAppID, "--command", command).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "1 passed, 0 failed") {
		t.Fatalf("timbus conform --command %s: %v\n%s", command, err, out)
	}
	return string(out)
}
