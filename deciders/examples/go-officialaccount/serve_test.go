package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/ask"
	"github.com/timbus-dev/timbus/internal/natstest"
)

const testApp = "1400000001"

// logBuffer collects the decider's JSON log lines; handlers log from NATS
// goroutines while the test reads.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testConfig(url string) config {
	return config{
		NATSURL:       url,
		SubjectPrefix: protocol.DefaultSubjectPrefix,
		SdkAppID:      "*",
		Reserved:      []string{"admin", "boss"},
		Code:          120077,
		QueueGroup:    "timbus-officialaccount",
	}
}

// startServe runs serve until the test ends and checks that it stops cleanly.
// It returns a function that stops it early and reports serve's error.
func startServe(t *testing.T, cfg config) (*logBuffer, func() error) {
	t.Helper()
	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, zerolog.New(logs).Level(zerolog.DebugLevel)) }()
	var (
		once sync.Once
		err  error
	)
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				err = errors.New("serve did not return within 10s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return logs, stop
}

// startDecider runs a NATS server and the decider on it and returns a client
// connection once the decider answers.
func startDecider(t *testing.T, edit func(*config)) (*nats.Conn, *logBuffer) {
	t.Helper()
	s := natstest.Run(t)
	cfg := testConfig(s.ClientURL())
	if edit != nil {
		edit(&cfg)
	}
	logs, _ := startServe(t, cfg)
	nc := natstest.Connect(t, s)
	waitReady(t, nc, testApp)
	return nc, logs
}

// waitReady polls until the decider's endpoint subscription has reached the
// server; before that a request finds no responders.
func waitReady(t *testing.T, nc *nats.Conn, app string) {
	t.Helper()
	limit := time.Now().Add(10 * time.Second)
	for {
		_, err := ask.Request(nc, callback(app, sampleBody(t, "ready"), time.Now().Add(time.Second)), time.Second)
		if err == nil {
			return
		}
		if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(limit) {
			t.Fatalf("decider not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// callback builds the NATS request the bridge sends for one Tencent callback,
// the deadline and the request id in the reply subject (with
// --decide-headers all, so with the client IP and platform headers too).
func callback(app string, body []byte, deadline time.Time) *nats.Msg {
	id := "req-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	return &nats.Msg{
		Subject: protocol.Subject(protocol.DefaultSubjectPrefix, protocol.KindDecide, app, command),
		Reply:   string(protocol.AppendReply(nil, nats.NewInbox(), deadline, id, "r")),
		Header:  nats.Header(protocol.Request{ClientIP: "127.0.0.1", OptPlatform: "RESTAPI"}.Header()),
		Data:    body,
	}
}

func TestServe_Decides(t *testing.T) {
	nc, logs := startDecider(t, nil)
	allow := `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`
	tests := []struct {
		name      string
		body      []byte
		reply     string // the reply subject's tokens after the inbox; "": a deadline 2s ahead
		wantReply string
		wantError bool // micro error headers instead of a verdict
	}{
		{name: "reserved", body: sampleBody(t, "admin"),
			wantReply: `{"ActionStatus":"OK","ErrorCode":120077,"ErrorInfo":"official account name \"admin\" is reserved"}`},
		{name: "allowed", body: sampleBody(t, "TestOfficialAccount"), wantReply: allow},
		{name: "upper case", body: sampleBody(t, "BOSS"),
			wantReply: `{"ActionStatus":"OK","ErrorCode":120077,"ErrorInfo":"official account name \"BOSS\" is reserved"}`},
		{name: "mixed case and spaces", body: sampleBody(t, "  aDmIn\t"),
			wantReply: `{"ActionStatus":"OK","ErrorCode":120077,"ErrorInfo":"official account name \"  aDmIn\\t\" is reserved"}`},
		{name: "look-alike allowed", body: sampleBody(t, "admins"), wantReply: allow},
		{name: "deadline ahead", body: sampleBody(t, "admin"),
			reply:     strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10) + ".req-ahead.r",
			wantReply: `{"ActionStatus":"OK","ErrorCode":120077,"ErrorInfo":"official account name \"admin\" is reserved"}`},
		{name: "no deadline (nats request's reply subject)", body: sampleBody(t, "x"), reply: "r", wantReply: allow},
		{name: "malformed deadline answered", body: sampleBody(t, "x"), reply: "soon.req-soon.r", wantReply: allow},
		{name: "garbage body", body: []byte("<xml/>"), wantError: true},
		{name: "not an object", body: []byte(`"admin"`), wantError: true},
		{name: "no name", body: sampleBody(t, nil), wantError: true},
		{name: "name not a string", body: sampleBody(t, []string{"admin"}), wantError: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := callback(testApp, tt.body, time.Now().Add(2*time.Second))
			if tt.reply != "" {
				req.Reply = nats.NewInbox() + "." + tt.reply
			}
			_, id, _ := protocol.ParseReply(req.Reply)
			rep, err := ask.Request(nc, req, 2*time.Second)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			desc, code := rep.Header.Get(protocol.HeaderServiceError), rep.Header.Get(protocol.HeaderServiceErrorCode)
			if tt.wantError {
				if code != "400" || !strings.HasPrefix(desc, "bad callback body: ") {
					t.Fatalf("error headers %s=%q %s=%q, want 400 and a bad callback body description; data %s",
						protocol.HeaderServiceErrorCode, code, protocol.HeaderServiceError, desc, rep.Data)
				}
				return
			}
			if desc != "" || code != "" {
				t.Fatalf("unexpected error headers: %q %q", code, desc)
			}
			if string(rep.Data) != tt.wantReply {
				t.Fatalf("reply\n got %s\nwant %s", rep.Data, tt.wantReply)
			}
			if id != "" && !strings.Contains(logs.String(), `"request_id":"`+id+`"`) {
				t.Fatalf("no log line for %s in:\n%s", id, logs)
			}
		})
	}
}

// A request whose deadline has passed gets no reply at all: the bridge has
// given up on it, and any reply would only be counted as late.
func TestServe_ExpiredDeadlineNotAnswered(t *testing.T) {
	nc, logs := startDecider(t, nil)
	// (A deadline of 0 counts as malformed, so it is answered:
	// protocol.ParseReply; 1 is the earliest deadline there is.)
	for _, deadline := range []time.Time{time.Now().Add(-time.Millisecond), time.Now().Add(-time.Hour), time.UnixMilli(1)} {
		req := callback(testApp, sampleBody(t, "admin"), deadline)
		rep, err := ask.Request(nc, req, 200*time.Millisecond)
		if !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("deadline %v: got %v, %v; want nats.ErrTimeout", deadline, rep, err)
		}
		_, id, _ := protocol.ParseReply(req.Reply)
		if !strings.Contains(logs.String(), `"request_id":"`+id+`"`) {
			t.Fatalf("no debug line for %s in:\n%s", id, logs)
		}
	}
}

func TestServe_OnlyConfiguredApp(t *testing.T) {
	nc, _ := startDecider(t, func(c *config) { c.SdkAppID = testApp })
	_, err := ask.Request(nc, callback("1400000002", sampleBody(t, "admin"), time.Now().Add(time.Second)), time.Second)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request for another app: %v, want nats.ErrNoResponders", err)
	}
}

func TestServe_MicroDiscovery(t *testing.T) {
	nc, _ := startDecider(t, func(c *config) { c.QueueGroup = "q-test" })

	rep, err := nc.Request("$SRV.PING."+serviceName, nil, time.Second)
	if err != nil {
		t.Fatalf("ping: %v", err)
	}
	var ping micro.Ping
	if err := json.Unmarshal(rep.Data, &ping); err != nil {
		t.Fatalf("ping reply %s: %v", rep.Data, err)
	}
	if ping.Name != serviceName || ping.Version != serviceVersion {
		t.Fatalf("ping = %+v, want %s %s", ping, serviceName, serviceVersion)
	}

	rep, err = nc.Request("$SRV.INFO."+serviceName, nil, time.Second)
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	var info micro.Info
	if err := json.Unmarshal(rep.Data, &info); err != nil {
		t.Fatalf("info reply %s: %v", rep.Data, err)
	}
	want := "timbus.decide.*." + command
	if len(info.Endpoints) != 1 || info.Endpoints[0].Subject != want || info.Endpoints[0].QueueGroup != "q-test" {
		t.Fatalf("endpoints = %+v, want one on %s in queue group q-test", info.Endpoints, want)
	}
}

// make run starts the decider and the bridge's embedded NATS server together,
// so the decider must wait for the server rather than exit.
func TestServe_StartsBeforeNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a reconnect interval")
	}
	// The port is free now; something else taking it before the server
	// starts would fail this test, not hide a bug.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	logs, _ := startServe(t, testConfig("nats://127.0.0.1:"+strconv.Itoa(port)))
	time.Sleep(100 * time.Millisecond)
	opts := natstest.Options()
	opts.Port = port
	s := natstest.RunWith(t, opts)
	nc := natstest.Connect(t, s)
	waitReady(t, nc, testApp)
	if !strings.Contains(logs.String(), "connected to NATS") {
		t.Fatalf("no connected line in:\n%s", logs)
	}
}

// Stopping drains: the endpoint leaves, serve returns without error.
func TestServe_Stop(t *testing.T) {
	s := natstest.Run(t)
	_, stop := startServe(t, testConfig(s.ClientURL()))
	nc := natstest.Connect(t, s)
	waitReady(t, nc, testApp)
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	_, err := ask.Request(nc, callback(testApp, sampleBody(t, "admin"), time.Time{}), time.Second)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request after stop: %v, want nats.ErrNoResponders", err)
	}
}

// Stopping while NATS has never been reachable must not hang.
func TestServe_StopWithoutNATS(t *testing.T) {
	_, stop := startServe(t, testConfig("nats://127.0.0.1:1"))
	time.Sleep(50 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatalf("serve: %v", err)
	}
}

func TestServe_InvalidConfig(t *testing.T) {
	cfg := testConfig("nats://127.0.0.1:1")
	cfg.Code = 1
	if err := serve(context.Background(), cfg, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "--code") {
		t.Fatalf("serve with code 1: %v, want a --code error", err)
	}
}
