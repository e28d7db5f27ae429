package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/bridge"
	"github.com/timbus-dev/timbus/internal/natstest"
)

// serving is a "timbus serve" running in-process.
type serving struct {
	bridge   *bridge.Bridge
	cancel   context.CancelFunc
	finished chan struct{}
	code     int
	stderr   *syncBuffer
}

// startServe runs "timbus serve args..." until it serves, and stops it when
// the test ends.
func startServe(t *testing.T, args ...string) *serving {
	t.Helper()
	started := make(chan *bridge.Bridge, 1)
	onStarted = func(b *bridge.Bridge) { started <- b }
	ctx, cancel := context.WithCancel(context.Background())
	s := &serving{cancel: cancel, finished: make(chan struct{}), stderr: &syncBuffer{}}
	go func() {
		defer close(s.finished)
		s.code = run(ctx, append([]string{"serve"}, args...), io.Discard, s.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.finished:
		case <-time.After(15 * time.Second):
			t.Error("serve still running 15s after cancellation")
			return
		}
		// Only now, with run returned, is the hook no longer read.
		onStarted = nil
	})
	select {
	case s.bridge = <-started:
	case <-s.finished:
		t.Fatalf("serve exited with code %d before serving; stderr:\n%s", s.code, s.stderr)
	case <-time.After(10 * time.Second):
		t.Fatalf("serve did not start within 10s; stderr:\n%s", s.stderr)
	}
	return s
}

// stop cancels the run's context, as a signal would, and returns the exit code.
func (s *serving) stop(t *testing.T) int {
	t.Helper()
	s.cancel()
	select {
	case <-s.finished:
		return s.code
	case <-time.After(5 * time.Second):
		t.Fatalf("serve did not return within 5s of cancellation; stderr:\n%s", s.stderr)
		return -1
	}
}

// postCallback sends a callback the way Tencent does.
func postCallback(t *testing.T, addr, appID, command, body string) (int, string) {
	t.Helper()
	q := url.Values{"SdkAppid": {appID}, "CallbackCommand": {command}, "contenttype": {"json"}, "ClientIP": {"127.0.0.1"}, "OptPlatform": {"RESTAPI"}}
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Post(fmt.Sprintf("http://%s/?%s", addr, q.Encode()), "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", command, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: read answer: %v", command, err)
	}
	return resp.StatusCode, string(answer)
}

const (
	testApp       = "1400000001"
	createAccount = "OfficialAccount.CallbackBeforeCreateOfficialAccount"
	memberJoined  = "Group.CallbackAfterNewMemberJoin"
	okAnswer      = `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`
)

func TestServeWithExternalNATS(t *testing.T) {
	clearEnv(t)
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	const verdict = `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"reserved"}`
	asked := make(chan *nats.Msg, 1)
	_, err := nc.Subscribe("timbus.decide."+testApp+"."+createAccount, func(m *nats.Msg) {
		asked <- m
		m.Respond([]byte(verdict))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	s := startServe(t, "--listen", "127.0.0.1:0", "--nats-url", ns.ClientURL(), "--sdkappid", testApp)
	addr := s.bridge.Addr()
	body := `{"CallbackCommand":"` + createAccount + `","Name":"x"}`
	status, answer := postCallback(t, addr, testApp, createAccount, body)
	if status != http.StatusOK || answer != verdict {
		t.Errorf("answer = %d %s, want 200 %s", status, answer, verdict)
	}
	select {
	case m := <-asked:
		if string(m.Data) != body {
			t.Errorf("the decider got %s, want the callback body %s", m.Data, body)
		}
	default:
		t.Error("the decider was not asked")
	}

	if code := s.stop(t); code != exitOK {
		t.Errorf("exit code = %d, want %d; stderr:\n%s", code, exitOK, s.stderr)
	}
	for _, w := range []string{addr, ns.ClientURL()} {
		if !strings.Contains(s.stderr.String(), w) {
			t.Errorf("the log does not mention %s:\n%s", w, s.stderr)
		}
	}
}

func TestServeWithEmbeddedNATS(t *testing.T) {
	clearEnv(t)
	// The file's commands section must reach the bridge: with no decider
	// listening, the command answers its own default.
	config := writeFile(t, "timbus.yaml", "commands:\n  "+createAccount+":\n    default: \"120002:closed\"\n")
	s := startServe(t, "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--sdkappid", testApp, "--config", config)
	natsURL := s.bridge.NATSURL()
	if !strings.HasPrefix(natsURL, "nats://127.0.0.1:") {
		t.Fatalf("embedded NATS URL = %q, want one on 127.0.0.1", natsURL)
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatalf("connect to the embedded server: %v", err)
	}
	defer nc.Close()
	events, err := nc.SubscribeSync("timbus.event." + testApp + "." + memberJoined)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	body := `{"CallbackCommand":"` + memberJoined + `","GroupId":"@TGS#1"}`
	status, answer := postCallback(t, s.bridge.Addr(), testApp, memberJoined, body)
	if status != http.StatusOK || answer != okAnswer {
		t.Errorf("after command: answer = %d %s, want 200 %s", status, answer, okAnswer)
	}
	if m, err := events.NextMsg(5 * time.Second); err != nil {
		t.Errorf("no event published: %v", err)
	} else if string(m.Data) != body {
		t.Errorf("event = %s, want the callback body %s", m.Data, body)
	}

	const closed = `{"ActionStatus":"OK","ErrorInfo":"closed","ErrorCode":120002}`
	status, answer = postCallback(t, s.bridge.Addr(), testApp, createAccount, `{"CallbackCommand":"`+createAccount+`","Name":"x"}`)
	if status != http.StatusOK || answer != closed {
		t.Errorf("before command without decider: answer = %d %s, want 200 %s", status, answer, closed)
	}

	nc.Close()
	if code := s.stop(t); code != exitOK {
		t.Errorf("exit code = %d, want %d; stderr:\n%s", code, exitOK, s.stderr)
	}
}

func TestServeFailsWhenItCannotListen(t *testing.T) {
	clearEnv(t)
	ns := natstest.Run(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// Should Start wrongly succeed, the deadline ends the run with exit 0.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	code, _, stderr := runTimbus(t, ctx, "serve", "--listen", busy.Addr().String(), "--nats-url", ns.ClientURL(), "--sdkappid", testApp)
	if code != exitFailure {
		t.Errorf("exit code = %d, want %d", code, exitFailure)
	}
	if !strings.Contains(stderr, "cannot start") || !strings.Contains(stderr, busy.Addr().String()) {
		t.Errorf("the log does not say why it cannot start:\n%s", stderr)
	}
}

func TestServeConsoleLog(t *testing.T) {
	clearEnv(t)
	t.Setenv("TIMBUS_LOG_FORMAT", "console")
	s := startServe(t, "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--sdkappid", testApp)
	if code := s.stop(t); code != exitOK {
		t.Fatalf("exit code = %d", code)
	}
	log := s.stderr.String()
	if strings.Contains(log, `{"level"`) || !strings.Contains(log, "INF") || strings.Contains(log, "\x1b[") {
		t.Errorf("want an uncoloured console log, got:\n%s", log)
	}
}

// TestEmbeddedNATSBeyondLoopbackNeedsAuth: an embedded server open to the
// network without users is refused by serve and check alike, naming the fix.
func TestEmbeddedNATSBeyondLoopbackNeedsAuth(t *testing.T) {
	for _, command := range []string{"serve", "check"} {
		t.Run(command, func(t *testing.T) {
			clearEnv(t)
			// Should serve wrongly start, the deadline ends it with exit 0.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			code, _, stderr := runTimbus(t, ctx, command, "--listen", "127.0.0.1:0", "--nats-listen", "0.0.0.0:0", "--sdkappid", testApp)
			if code != exitUsage {
				t.Errorf("exit code = %d, want %d", code, exitUsage)
			}
			for _, want := range []string{"nats-listen", "127.0.0.1", "--nats-config"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("the message lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
}

// TestCheckShowsEmbeddedNATSAuth: check summarises the file's users, never
// their passwords.
func TestCheckShowsEmbeddedNATSAuth(t *testing.T) {
	clearEnv(t)
	t.Setenv("DECIDER_PASSWORD", "decider-secret")
	t.Setenv("AUDITOR_PASSWORD", "auditor-secret")
	code, stdout, stderr := runTimbus(t, context.Background(), "check", "--sdkappid", testApp,
		"--nats-listen", "0.0.0.0:4222", "--nats-config", deployPath("nats", "embedded.conf"))
	if code != exitOK {
		t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
	}
	if want := "2 users, 0 nkeys, timbus's own NKey user in the global account"; !strings.Contains(stdout, want) {
		t.Errorf("summary lacks %q:\n%s", want, stdout)
	}
	for _, secret := range []string{"decider-secret", "auditor-secret"} {
		if strings.Contains(stdout, secret) {
			t.Errorf("summary shows the password %q:\n%s", secret, stdout)
		}
	}
}
