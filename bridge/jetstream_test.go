package bridge

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/timbus-dev/timbus/bridge/natstest"
	"github.com/timbus-dev/timbus/deciders/protocol"
)

// startEmbedded starts a bridge that runs its own NATS server, with
// JetStream in dir unless dir is empty. The caller shuts it down.
func startEmbedded(t *testing.T, dir string, mutate func(*Config)) *Bridge {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSListen = "127.0.0.1:0"
	cfg.NATSStoreDir = dir
	cfg.Apps = []App{{ID: testApp}}
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

func streamMsgs(t *testing.T, url, stream string) uint64 {
	t.Helper()
	nc := natsConnect(t, url)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestBridge_AuditStreamSurvivesRestart: every callback's record is in the
// audit stream, acknowledged before Shutdown returns, and still there after
// the bridge and its embedded server restart.
func TestBridge_AuditStreamSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	withStream := func(c *Config) { c.AuditStream = StreamConfig{Name: "AUDIT", MaxAge: time.Hour} }
	b := startEmbedded(t, dir, withStream)
	const n = 50
	for i := 0; i < n; i++ {
		command := oaCreate
		if i%2 == 1 {
			command = "Group.CallbackAfterNewMemberJoin"
		}
		got := post(t, "http://"+b.Addr()+"/?SdkAppid="+testApp+"&CallbackCommand="+command, sample(t, command))
		if got.status != 200 {
			t.Fatalf("callback %d: %d %s", i, got.status, got.body)
		}
	}
	post(t, "http://"+b.Addr()+"/?SdkAppid=999&CallbackCommand="+oaCreate, sample(t, oaCreate)) // a refusal
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	b = startEmbedded(t, dir, withStream)
	defer b.Shutdown(context.Background())
	if got := streamMsgs(t, b.NATSURL(), "AUDIT"); got != n+1 {
		t.Fatalf("%d records in the stream after restart, want %d", got, n+1)
	}
	nc := natsConnect(t, b.NATSURL())
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, "AUDIT")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, "timbus.audit.rejected.>")
	if err != nil {
		t.Fatal(err)
	}
	var r protocol.AuditRecord
	if err := json.Unmarshal(msg.Data, &r); err != nil || r.Outcome != "rejected" || r.SdkAppID != "999" {
		t.Errorf("refusal record %+v, %v", r, err)
	}
}

// TestBridge_EventsStream: after callbacks are stored before Tencent gets its
// OK, a repeated delivery is stored once, and a stream that does not
// acknowledge yields a non-200 answer so that Tencent can retry.
func TestBridge_EventsStream(t *testing.T) {
	opts := natstest.Options()
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	ns := natstest.RunWith(t, opts)
	tb := startBridge(t, func(c *Config) {
		c.NATSURL = ns.ClientURL()
		c.EventsStream = StreamConfig{Name: "EVENTS", DuplicateWindow: time.Minute}
	})
	const command = "Group.CallbackAfterNewMemberJoin"
	body := sample(t, command)
	for i := 0; i < 3; i++ { // Tencent retrying the same delivery
		if got := post(t, tb.base+"/?SdkAppid="+testApp+"&CallbackCommand="+command, body); got.status != 200 || got.body != allowAnswer {
			t.Fatalf("delivery %d: %d %s", i, got.status, got.body)
		}
	}
	other := []byte(`{"CallbackCommand":"` + command + `","GroupId":"@TGS#other"}`)
	post(t, tb.base+"/?SdkAppid="+testApp+"&CallbackCommand="+command, other)
	if got := streamMsgs(t, ns.ClientURL(), "EVENTS"); got != 2 {
		t.Errorf("%d events stored, want 2 (one per distinct callback)", got)
	}
	if line := tb.lastCallbackLog(t); line["outcome"] != "published" {
		t.Errorf("log %v", line)
	}

	// Without the stream, nothing acknowledges: Tencent must hear a failure.
	js, _ := jetstream.New(natsConnect(t, ns.ClientURL()))
	if err := js.DeleteStream(context.Background(), "EVENTS"); err != nil {
		t.Fatal(err)
	}
	got := post(t, tb.base+"/?SdkAppid="+testApp+"&CallbackCommand="+command, body)
	if got.status == 200 {
		t.Errorf("unstored event answered %d %s", got.status, got.body)
	}
	if got.elapsed > tb.cfg.Timeout+250*time.Millisecond {
		t.Errorf("unstored event answered after %v", got.elapsed)
	}
}

func TestBridge_StreamConfigConflicts(t *testing.T) {
	opts := natstest.Options()
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	ns := natstest.RunWith(t, opts)
	js, _ := jetstream.New(natsConnect(t, ns.ClientURL()))
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "TAKEN", Subjects: []string{"other.>"}}); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSURL = ns.ClientURL()
	cfg.Apps = []App{{ID: testApp}}
	cfg.AuditStream = StreamConfig{Name: "TAKEN"}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err == nil {
		b.Shutdown(context.Background())
		t.Fatal("started with an audit stream that does not capture the audit subjects")
	}

	cfg = DefaultConfig()
	cfg.Apps = []App{{ID: testApp}}
	cfg.AuditStream = StreamConfig{Name: "AUDIT"}
	if err := cfg.Validate(); err == nil {
		t.Error("an audit stream on the embedded server without a store directory passed validation")
	}
}

func TestSubjectCovers(t *testing.T) {
	for _, tt := range []struct {
		pattern, want string
		ok            bool
	}{
		{"timbus.audit.>", "timbus.audit.>", true},
		{"timbus.>", "timbus.audit.>", true},
		{">", "timbus.audit.>", true},
		{"*.audit.>", "timbus.audit.>", true},
		{"timbus.audit.*", "timbus.audit.>", false},
		{"timbus.event.>", "timbus.audit.>", false},
		{"other.>", "timbus.audit.>", false},
	} {
		if got := subjectCovers(tt.pattern, tt.want); got != tt.ok {
			t.Errorf("subjectCovers(%s, %s) = %v", tt.pattern, tt.want, got)
		}
	}
}
