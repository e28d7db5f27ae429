package bridge

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/natstest"
	"github.com/timbus-dev/timbus/internal/samples"
)

const testApp = "1400000001"

// testBridge is a running bridge with its NATS server and a client for
// playing deciders and subscribers.
type testBridge struct {
	*Bridge
	ns   *server.Server
	nc   *nats.Conn
	base string // http://127.0.0.1:port
	logs *syncBuffer
}

// startBridge runs a bridge on 127.0.0.1 against a fresh embedded NATS
// server. mutate adjusts the config before New.
func startBridge(t testing.TB, mutate func(*Config)) *testBridge {
	t.Helper()
	ns := natstest.Run(t)
	logs := &syncBuffer{}
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSURL = ns.ClientURL()
	cfg.Apps = []App{{ID: testApp}}
	cfg.Logger = zerolog.New(logs)
	cfg.LogCallbacks = LogCallbacksAll // tests read the line of every callback
	if mutate != nil {
		mutate(&cfg)
	}
	b := runConfig(t, cfg)
	return &testBridge{Bridge: b, ns: ns, nc: natstest.Connect(t, ns), base: "http://" + b.Addr(), logs: logs}
}

// runConfig starts a bridge with cfg and shuts it down when the test ends,
// failing the test if Shutdown reports an error.
func runConfig(t testing.TB, cfg Config) *Bridge {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return b
}

// callbackURL is the URL Tencent would call for command.
func (tb *testBridge) callbackURL(command string) string {
	return tb.base + "/?SdkAppid=" + testApp + "&CallbackCommand=" + command +
		"&contenttype=json&ClientIP=10.0.0.7&OptPlatform=RESTAPI"
}

// answer is an HTTP response read whole.
type answer struct {
	status  int
	body    string
	elapsed time.Duration
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func post(t *testing.T, url string, body []byte) answer {
	t.Helper()
	start := time.Now()
	resp, err := httpClient.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return answer{status: resp.StatusCode, body: string(b), elapsed: time.Since(start)}
}

// decider replies to every request on subject with handle's answer, in a
// queue group like real deciders.
func decider(t *testing.T, nc *nats.Conn, subject string, handle func(*nats.Msg) *nats.Msg) *nats.Subscription {
	t.Helper()
	sub, err := nc.QueueSubscribe(subject, "deciders", func(m *nats.Msg) {
		if reply := handle(m); reply != nil {
			reply.Subject = m.Reply
			_ = m.RespondMsg(reply)
		}
	})
	if err != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return sub
}

// replyWith answers every request with body.
func replyWith(body string) func(*nats.Msg) *nats.Msg {
	return func(*nats.Msg) *nats.Msg { return &nats.Msg{Data: []byte(body)} }
}

// capture records every message on subject until the test ends.
type capture struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

// subscribe captures the messages on subject; a batch of audit records
// counts as one message per record.
func subscribe(t *testing.T, nc *nats.Conn, subject string) *capture {
	t.Helper()
	c := &capture{}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(m.Data) == 0 || m.Data[0] != protocol.RecordSeparator {
			c.msgs = append(c.msgs, m)
			return
		}
		// A batch of audit records: one message per record, as the
		// tests read them (TestAuditor_Batches checks batches).
		protocol.EachRecord(m.Data, func(record []byte) bool {
			one := *m
			one.Data = record
			c.msgs = append(c.msgs, &one)
			return true
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return c
}

func (c *capture) all() []*nats.Msg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*nats.Msg(nil), c.msgs...)
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t *testing.T, total time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v: %v", total, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// quiet proves that nothing but audit records reached c: a marker published
// after the requests arrives, and it is the only other message.
func (c *capture) quiet(t *testing.T, nc *nats.Conn, subject string) {
	t.Helper()
	if err := nc.Publish(subject, []byte("marker")); err != nil {
		t.Fatal(err)
	}
	var others []*nats.Msg
	waitFor(t, 5*time.Second, func() error {
		others = others[:0]
		for _, m := range c.all() {
			if !strings.Contains(m.Subject, ".audit.") && !strings.HasPrefix(m.Subject, "$SRV.") {
				others = append(others, m)
			}
		}
		if len(others) == 0 || string(others[len(others)-1].Data) != "marker" {
			return errNotYet
		}
		return nil
	})
	if len(others) != 1 {
		t.Fatalf("expected nothing published, got %d messages, first on %s", len(others), others[0].Subject)
	}
}

var errNotYet = io.ErrNoProgress

// sample returns Tencent's documented request body for command.
func sample(t testing.TB, command string) []byte {
	t.Helper()
	b, ok := samples.Request(command)
	if !ok {
		t.Fatalf("no sample for %s", command)
	}
	return b
}

// syncBuffer collects log output from concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSpace(s.buf.String()), "\n")
}
