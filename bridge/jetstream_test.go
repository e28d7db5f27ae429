package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/natstest"
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

// streamMsgs returns how many messages the stream holds, asking through url
// until JetStream answers (see retryJS).
func streamMsgs(t *testing.T, url, stream string) uint64 {
	t.Helper()
	return streamInfo(t, url, stream).State.Msgs
}

// streamInfo returns the stream's info, asking through url until JetStream
// answers (see retryJS).
func streamInfo(t *testing.T, url, stream string) *jetstream.StreamInfo {
	t.Helper()
	var info *jetstream.StreamInfo
	retryJS(t, 20*time.Second, "stream "+stream, func() error {
		nc, err := nats.Connect(url)
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), jsAttempt)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		info, err = s.Info(ctx)
		return err
	})
	return info
}

// jsAttempt bounds one attempt to read a stream: a request a JetStream
// cluster drops (a stream leader being elected) is asked again rather than
// waited for.
const jsAttempt = 5 * time.Second

// retryJS runs attempt until it returns nil, every 100ms, and fails the test
// with the last error if that takes longer than total. It is for reading
// streams: JetStream answers a read with an error for a while after it
// starts, after a stream is created and after a stream's leader moves
// (nats: no responders, a 503, a request that is never answered, a
// consumer whose interest has not reached the server asked yet), and a test
// that reads a stream must wait for it to answer, not assume it does. Each
// new error is logged, so that a slow wait shows what it waited for.
func retryJS(t *testing.T, total time.Duration, what string, attempt func() error) {
	t.Helper()
	start := time.Now()
	var last string
	logged := 0
	for {
		err := attempt()
		if err == nil {
			return
		}
		if err.Error() != last && logged < 10 {
			last = err.Error()
			logged++
			t.Logf("%s: not yet after %v: %v", what, time.Since(start).Round(time.Millisecond), err)
		}
		if time.Since(start) > total {
			t.Fatalf("%s: still failing after %v: %v", what, total, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
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

// streamRecords reads every audit record of a stream, in stream order, in
// one attempt of at most jsAttempt per request. A stream that is missing or
// does not answer (yet) is an error, not a failure: tests wait for the
// records with readStream.
func streamRecords(t *testing.T, url, stream string) ([]protocol.AuditRecord, error) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), jsAttempt)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", stream, err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("stream %s consumer: %w", stream, err)
	}
	var recs []protocol.AuditRecord
	for uint64(len(recs)) < info.State.Msgs {
		// Each Fetch of an ordered consumer creates a consumer: ask for all
		// that is left at once.
		batch, err := cons.Fetch(int(min(info.State.Msgs-uint64(len(recs)), 1000)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("stream %s fetch: %w", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var r protocol.AuditRecord
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				t.Fatalf("record: %v\n%s", err, m.Data())
			}
			recs = append(recs, r)
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("stream %s fetch after %d of %d records: %w", stream, len(recs), info.State.Msgs, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("stream %s: read %d of %d records, then nothing more", stream, len(recs), info.State.Msgs)
		}
	}
	return recs, nil
}

// readStream reads the audit records of a stream through url once it holds
// at least want of them, retrying while it does not answer (see retryJS) or
// holds fewer, and fails the test if that takes longer than total. Whether
// the records are the right ones is the caller's to check.
func readStream(t *testing.T, url, stream string, want int, total time.Duration) []protocol.AuditRecord {
	t.Helper()
	var recs []protocol.AuditRecord
	retryJS(t, total, "read stream "+stream, func() (err error) {
		if recs, err = streamRecords(t, url, stream); err != nil {
			return err
		}
		if len(recs) < want {
			return fmt.Errorf("%d of %d records stored", len(recs), want)
		}
		return nil
	})
	return recs
}

// runJetStreamOn runs a NATS server with JetStream on port, storing in dir.
func runJetStreamOn(t *testing.T, port int, dir string) *server.Server {
	t.Helper()
	opts := natstest.Options()
	opts.Port = port
	opts.JetStream = true
	opts.StoreDir = dir
	return natstest.RunWith(t, opts)
}

// TestFault_AuditStreamThroughOutages: audit records of callbacks answered
// while NATS is down (before the bridge ever reached it, and during a
// restart) are held and stored once NATS and the stream are back, each once.
func TestFault_AuditStreamThroughOutages(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	tb := runBridge(t, fmt.Sprintf("nats://127.0.0.1:%d", port), func(c *Config) {
		c.Timeout = 500 * time.Millisecond
		c.AuditStream = StreamConfig{Name: "AUDIT", MaxAge: time.Hour}
	})
	c := newCaller(true)
	defer c.closeIdle()
	want := map[string]int{} // outcome → records
	callbacks := func(n int, answer string, outcome protocol.Outcome) {
		t.Helper()
		for range n {
			r := c.post(tb.callbackURL(oaCreate), sample(t, oaCreate))
			if r.err != nil || r.status != http.StatusOK || r.body != answer {
				t.Fatalf("callback: %d %q %v, want %s", r.status, r.body, r.err, answer)
			}
		}
		want[string(outcome)] += n
	}
	storedAll := func(ns *server.Server) {
		t.Helper()
		total := 0
		for _, n := range want {
			total += n
		}
		recs := readStream(t, ns.ClientURL(), "AUDIT", total, 15*time.Second)
		got, ids := map[string]int{}, map[string]bool{}
		for _, r := range recs {
			got[r.Outcome]++
			ids[r.RequestID] = true
		}
		if !maps.Equal(got, want) || len(ids) != len(recs) {
			t.Fatalf("stored %d records with %d request ids, by outcome %v; want %v, each once", len(recs), len(ids), got, want)
		}
		_, text := get(t, tb.base+PathMetrics)
		if pending, failed := metricValue(t, text, "timbus_audit_pending"), metricValue(t, text, "timbus_audit_failed_total"); pending != "0" || failed != "0" {
			t.Errorf("timbus_audit_pending %s, timbus_audit_failed_total %s; want 0 and 0", pending, failed)
		}
	}

	callbacks(5, allowAnswer, protocol.OutcomeNATSError) // NATS not reached yet: the default, at once
	// A NATS server without JetStream: nobody answers the records; then
	// one with JetStream takes its place.
	plain := runNATSOn(t, port)
	waitFor(t, 5*time.Second, func() error {
		if !tb.Bridge.nc.IsConnected() {
			return errNotYet
		}
		return nil
	})
	callbacks(300, allowAnswer, protocol.OutcomeNoDeciders)
	waitFor(t, 10*time.Second, func() error {
		if n := tb.audit.pending.Load(); n != 305 {
			return fmt.Errorf("%d records pending: %w", n, errNotYet)
		}
		return nil
	})
	stopNATS(plain)
	ns := runJetStreamOn(t, port, dir)
	storedAll(ns)
	decider(t, deciderConn(t, ns.ClientURL()), decideOA, replyWith(oaCreateDeny))
	waitFor(t, 5*time.Second, func() error {
		if r := c.post(tb.callbackURL(oaCreate), sample(t, oaCreate)); r.body != oaCreateDeny {
			want[string(protocol.OutcomeNoDeciders)]++ // the bridge's view of the subscription lags
			return errNotYet
		}
		want[string(protocol.OutcomeDecided)]++
		return nil
	})
	callbacks(5, oaCreateDeny, protocol.OutcomeDecided)
	storedAll(ns)

	stopNATS(ns)
	waitFor(t, 5*time.Second, func() error {
		if tb.Bridge.nc.IsConnected() {
			return errNotYet
		}
		return nil
	})
	callbacks(5, allowAnswer, protocol.OutcomeNATSError)
	ns = runJetStreamOn(t, port, dir)
	storedAll(ns)
}

// TestFault_StreamsDeleted: with its streams deleted under it (or a NATS
// server restarted without its storage), the bridge creates them again. The
// audit records sent meanwhile are held and then all stored, each once and
// without waiting between them; after callbacks are refused (so that
// Tencent retries) until the events stream is back.
func TestFault_StreamsDeleted(t *testing.T) {
	ns := runJetStreamOn(t, freePort(t), t.TempDir())
	cfg, logs := faultConfig(ns.ClientURL(), func(c *Config) {
		c.AuditStream = StreamConfig{Name: "AUDIT", MaxAge: time.Hour}
		c.EventsStream = StreamConfig{Name: "EVENTS", MaxAge: time.Hour}
		c.Logger = c.Logger.Level(zerolog.WarnLevel) // no line per callback
	})
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	tb := adopt(t, b, logs)
	js, _ := jetstream.New(natsConnect(t, ns.ClientURL()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range []string{"AUDIT", "EVENTS"} {
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	deleted := time.Now()

	const n = 300
	c := newCaller(true)
	defer c.closeIdle()
	for range n {
		if r := c.post(tb.callbackURL(oaCreate), sample(t, oaCreate)); r.status != http.StatusOK {
			t.Fatalf("callback: %d %q %v", r.status, r.body, r.err)
		}
	}
	const joined = "Group.CallbackAfterNewMemberJoin"
	refused := 0
	waitFor(t, 15*time.Second, func() error {
		r := c.post(tb.callbackURL(joined), sample(t, joined))
		if r.status != http.StatusOK {
			refused++
			return fmt.Errorf("after callback: %d %q: %w", r.status, r.body, errNotYet)
		}
		return nil
	})
	if refused == 0 {
		t.Error("an after callback was accepted with no events stream to keep it")
	}
	recs := readStream(t, ns.ClientURL(), "AUDIT", n+refused+1, 15*time.Second)
	t.Logf("streams back and %d records stored %v after they were deleted; %d after callbacks refused meanwhile",
		len(recs), time.Since(deleted).Round(time.Millisecond), refused)
	ids := map[string]bool{}
	for _, r := range recs {
		ids[r.RequestID] = true
	}
	if len(recs) != n+refused+1 || len(ids) != len(recs) || tb.audit.failed.Load() != 0 {
		t.Errorf("%d records with %d request ids, %d failed; want %d, each once, none failed",
			len(recs), len(ids), tb.audit.failed.Load(), n+refused+1)
	}
	if got := streamMsgs(t, ns.ClientURL(), "EVENTS"); got != 1 {
		t.Errorf("%d events stored, want the one accepted", got)
	}
}

// TestAuditShutdownGivesUpHeldRecords: records held for a NATS that never
// comes back are counted as failed once Shutdown's deadline has passed, and
// Shutdown returns then.
func TestAuditShutdownGivesUpHeldRecords(t *testing.T) {
	tb := runBridge(t, fmt.Sprintf("nats://127.0.0.1:%d", freePort(t)), func(c *Config) {
		c.AuditStream = StreamConfig{Name: "AUDIT"}
	})
	for range 3 {
		post(t, tb.callbackURL(oaCreate), sample(t, oaCreate))
	}
	waitFor(t, 5*time.Second, func() error {
		if got := tb.audit.pending.Load(); got != 3 {
			return fmt.Errorf("%d records pending: %w", got, errNotYet)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := tb.Shutdown(ctx)
	if !errors.Is(err, ErrNATS) || !strings.Contains(err.Error(), "3 audit records not acknowledged") {
		t.Errorf("Shutdown: %v, want ErrNATS and the 3 records given up", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Shutdown took %v with a 500ms deadline", took)
	}
	waitFor(t, 5*time.Second, func() error {
		if got, pending := tb.audit.failed.Load(), tb.audit.pending.Load(); got != 3 || pending != 0 {
			return fmt.Errorf("%d records failed, %d pending: %w", got, pending, errNotYet)
		}
		return nil
	})
}

func TestOutageError(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{nats.ErrNoResponders, true},
		{jetstream.ErrNoStreamResponse, true},
		{jetstream.ErrAsyncPublishTimeout, true},
		{nats.ErrReconnectBufExceeded, true},
		{context.DeadlineExceeded, true},
		{fmt.Errorf("publish: %w", nats.ErrTimeout), true},
		{&jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{Code: 400, Description: "message size exceeds maximum allowed"}, false},
		{nats.ErrMaxPayload, false},
		{nats.ErrConnectionClosed, false},
		{jetstream.ErrJetStreamPublisherClosed, false},
	} {
		if got := outageError(tt.err); got != tt.want {
			t.Errorf("outageError(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
