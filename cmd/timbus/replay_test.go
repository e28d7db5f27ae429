package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/bridge"
	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/natstest"
)

var replayHeader = []string{"TIME", "COMMAND", "RECORDED", "NOW", "RESULT", "REQUEST ID", "DETAIL"}

// notReplayedNote is the summary's last line when the traffic of
// recordTraffic is replayed whole: the after callback and the refusal.
const notReplayedNote = "2 records not replayed: after callbacks, refusals, fire-and-forget, late replies or without a body"

// watchPublishes records every message on the event and audit subjects of
// these prefixes: a replay must publish none.
type publishWatch struct {
	nc       *nats.Conn
	subjects []string
	mu       sync.Mutex
	msgs     []*nats.Msg
}

func watchPublishes(t *testing.T, ns *server.Server, prefixes ...string) *publishWatch {
	t.Helper()
	w := &publishWatch{nc: natstest.Connect(t, ns)}
	for _, p := range prefixes {
		for _, kind := range []string{protocol.KindEvent, protocol.KindAudit} {
			subject := p + "." + kind + ".>"
			w.subjects = append(w.subjects, subject)
			if _, err := w.nc.Subscribe(subject, func(m *nats.Msg) {
				w.mu.Lock()
				w.msgs = append(w.msgs, m)
				w.mu.Unlock()
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

// none proves that nothing was published: a marker sent on each watched
// subject after the replay arrives, and is all that arrived.
func (w *publishWatch) none(t *testing.T) {
	t.Helper()
	for _, s := range w.subjects {
		if err := w.nc.Publish(strings.TrimSuffix(s, ">")+"marker", []byte("marker")); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "the markers", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.msgs) >= len(w.subjects)
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.msgs {
		if string(m.Data) != "marker" {
			t.Errorf("published during the replay on %s: %s", m.Subject, m.Data)
		}
	}
}

// replayRowWant is what a table row should say.
type replayRowWant struct {
	at                    int // position in the recorded traffic
	recorded, now, result string
	detail                string
}

func checkReplayTable(t *testing.T, stdout string, recs []stored, want []replayRowWant, summary ...string) {
	t.Helper()
	rows, tail := parseTable(t, stdout, replayHeader...)
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d:\n%s", len(rows), len(want), stdout)
	}
	for i, w := range want {
		rec := recs[w.at].rec
		wantRow := []string{rec.ReceivedAt.Local().Format("2006-01-02T15:04:05.000Z07:00"), rec.Command,
			w.recorded, w.now, w.result, rec.RequestID, orDash(w.detail)}
		if !slices.Equal(rows[i], wantRow) {
			t.Errorf("row %d = %q\nwant      %q", i, rows[i], wantRow)
		}
	}
	if !slices.Equal(tail, summary) {
		t.Errorf("summary:\n%s\nwant\n%s", strings.Join(tail, "\n"), strings.Join(summary, "\n"))
	}
}

// TestReplayNewDecider replays the recorded traffic to a new version of the
// deciders listening under another prefix: some verdicts agree, some change.
func TestReplayNewDecider(t *testing.T) {
	clearEnv(t)
	ns := runJetStream(t)
	recs := recordTraffic(t, ns)
	stream := len(streamRecords(t, ns.ClientURL(), auditStream))

	nc := natstest.Connect(t, ns)
	var mu sync.Mutex
	var asked []*nats.Msg
	subscribe := func(command string, handle nats.MsgHandler) {
		if _, err := nc.QueueSubscribe("v2.decide.*."+command, "v2", func(m *nats.Msg) {
			mu.Lock()
			asked = append(asked, m)
			mu.Unlock()
			handle(m)
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Version 2 reserves "alice" too.
	subscribe(createOA, func(m *nats.Msg) {
		if name := accountName(m.Data); name == "alice" || name == "admin" {
			respondMsg(t, m, `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"name reserved"}`, nil)
			return
		}
		respondMsg(t, m, allowReply, nats.Header{protocol.HeaderDecider: {"names/2.0.0/a"}})
	})
	subscribe(sendGroupMsg, func(m *nats.Msg) {
		respondMsg(t, m, "", nats.Header{protocol.HeaderServiceError: {"database unavailable"}, protocol.HeaderServiceErrorCode: {"503"}})
	})
	subscribe(sendC2CMsg, func(m *nats.Msg) { respondMsg(t, m, `{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":"spam"}`, nil) })
	subscribe(createGroup, func(m *nats.Msg) {
		time.Sleep(600 * time.Millisecond)
		_ = m.Respond([]byte(allowReply))
	})
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	watch := watchPublishes(t, ns, "timbus", "v2")

	before := time.Now()
	code, stdout, stderr := runTimbus(t, context.Background(), "replay", "--nats-url", ns.ClientURL(), "--stream", auditStream,
		"--subject-prefix", "v2", "--timeout", "300ms")
	after := time.Now()
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr %q\n%s", code, stderr, stdout)
	}
	checkReplayTable(t, stdout, recs, []replayRowWant{
		{0, "decided 0", "decided 120005", "CHANGED", ""},
		{1, "decided 120005", "decided 120005", "SAME", ""},
		{2, "no_deciders 0", "decider_error", "SAME", "decider reported an error: 503 database unavailable"},
		{5, "invalid_reply 0", "decided 1", "CHANGED", ""},
		{6, "decided 0", "timeout", "CHANGED", "no reply within 300ms"},
		{7, "decided 0", "decided 0", "SAME", ""},
	},
		"6 replayed, 3 agree, 3 changed",
		"  0→1: 1",
		"  0→120005: 1",
		"  0→timeout: 1",
		notReplayedNote,
	)

	// The deciders got what the bridge sent then, but for the request id
	// and the deadline.
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 6 {
		t.Fatalf("the deciders were asked %d times, want 6", len(asked))
	}
	for i, at := range []int{0, 1, 2, 5, 6, 7} {
		m, rec := asked[i], recs[at].rec
		if !bytes.Equal(m.Data, rec.Body) {
			t.Errorf("request %d: body %s\nwant the recorded %s", i, m.Data, rec.Body)
		}
		if m.Subject != protocol.Subject("v2", protocol.KindDecide, rec.SdkAppID, rec.Command) {
			t.Errorf("request %d on %s", i, m.Subject)
		}
		req := protocol.ParseRequest(m.Subject, m.Reply, m.Header)
		if req.Deadline.Before(before.Add(300*time.Millisecond).Truncate(time.Millisecond)) || req.Deadline.After(after.Add(300*time.Millisecond)) {
			t.Errorf("request %d: deadline %v not 300ms after it was sent", i, req.Deadline)
		}
		req.Deadline = time.Time{}
		want := protocol.Request{RequestID: "replay-" + rec.RequestID, SdkAppID: rec.SdkAppID, Command: rec.Command, ClientIP: "10.0.0.7", OptPlatform: "RESTAPI"}
		if req != want {
			t.Errorf("request %d: headers %+v, want %+v", i, m.Header, want)
		}
	}
	// The recorded body is Tencent's, byte for byte: pretty-printed.
	if !bytes.Contains(asked[0].Data, []byte("\n")) {
		t.Errorf("the replayed body lost its formatting: %s", asked[0].Data)
	}

	if n := len(streamRecords(t, ns.ClientURL(), auditStream)); n != stream {
		t.Errorf("%d records in the audit stream after the replay, want %d", n, stream)
	}
	watch.none(t)
}

// TestReplayNoDecider: with nobody listening, every callback decided then
// would get the default now.
func TestReplayNoDecider(t *testing.T) {
	clearEnv(t)
	ns := runJetStream(t)
	recs := recordTraffic(t, ns)
	watch := watchPublishes(t, ns, "timbus")

	t.Setenv(envName("nats-url"), ns.ClientURL())
	code, stdout, stderr := runTimbus(t, context.Background(), "replay", "--stream", auditStream)
	if code != exitOK {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	noDecider := "no decider listening"
	checkReplayTable(t, stdout, recs, []replayRowWant{
		{0, "decided 0", "no_deciders", "CHANGED", noDecider},
		{1, "decided 120005", "no_deciders", "CHANGED", noDecider},
		{2, "no_deciders 0", "no_deciders", "SAME", noDecider},
		{5, "invalid_reply 0", "no_deciders", "SAME", noDecider},
		{6, "decided 0", "no_deciders", "CHANGED", noDecider},
		{7, "decided 0", "no_deciders", "CHANGED", noDecider},
	},
		"6 replayed, 2 agree, 4 changed",
		"  0→no_deciders: 3",
		"  120005→no_deciders: 1",
		notReplayedNote,
	)
	if !strings.Contains(stderr, "No decider answered any callback") || !strings.Contains(stderr, "subjects under timbus.decide") {
		t.Errorf("stderr %q, want the no-decider hint", stderr)
	}
	watch.none(t)
}

func TestReplayJSON(t *testing.T) {
	clearEnv(t)
	ns := runJetStream(t)
	recs := recordTraffic(t, ns)
	nc := natstest.Connect(t, ns)
	deny := `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"name reserved"}`
	if _, err := nc.QueueSubscribe("timbus.decide.*."+createOA, "v2", func(m *nats.Msg) {
		respondMsg(t, m, deny, nats.Header{protocol.HeaderDecider: {"names/2.0.0/a"}})
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runTimbus(t, context.Background(), "replay", "--nats-url", ns.ClientURL(), "--stream", auditStream,
		"--json", "--command", createOA)
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 3 callbacks and the summary:\n%s", len(lines), stdout)
	}
	type verdict struct {
		Outcome   string
		Code      *int
		Answer    json.RawMessage
		Decider   string
		LatencyMS *float64 `json:"latency_ms"`
		Reason    string
		Subject   string
	}
	for i, at := range []int{0, 1, 7} {
		var row struct {
			RequestID  string    `json:"request_id"`
			ReceivedAt time.Time `json:"received_at"`
			SdkAppID   string
			Command    string
			Recorded   verdict
			Replayed   verdict
			Agrees     *bool
		}
		dec := json.NewDecoder(strings.NewReader(lines[i]))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&row); err != nil {
			t.Fatalf("line %d: %v\n%s", i, err, lines[i])
		}
		rec := recs[at].rec
		if row.RequestID != rec.RequestID || !row.ReceivedAt.Equal(rec.ReceivedAt) || row.SdkAppID != rec.SdkAppID || row.Command != createOA {
			t.Errorf("line %d: %+v", i, row)
		}
		var wantAnswer bytes.Buffer
		_ = json.Compact(&wantAnswer, rec.Answer)
		if r := row.Recorded; r.Outcome != "decided" || r.Code == nil || *r.Code != rec.Code || string(r.Answer) != wantAnswer.String() {
			t.Errorf("line %d: recorded %+v, want the record's outcome, code and answer %s", i, r, wantAnswer.String())
		}
		if r := row.Replayed; r.Outcome != "decided" || r.Code == nil || *r.Code != 120005 || string(r.Answer) != deny ||
			r.Decider != "names/2.0.0/a" || r.LatencyMS == nil || *r.LatencyMS <= 0 || r.Reason != "" ||
			r.Subject != "timbus.decide."+rec.SdkAppID+"."+createOA {
			t.Errorf("line %d: replayed %+v", i, r)
		}
		if row.Agrees == nil || *row.Agrees != (rec.Code == 120005) {
			t.Errorf("line %d: agrees %v, recorded code %d", i, row.Agrees, rec.Code)
		}
	}
	var sum struct {
		Summary struct {
			Replayed, Agree, Changed, Skipped int
			Changes                           []struct {
				From, To string
				Count    int
			}
		}
	}
	if err := json.Unmarshal([]byte(lines[3]), &sum); err != nil {
		t.Fatal(err)
	}
	s := sum.Summary
	// The refusal named the command but is not in its subjects: nothing skipped.
	if s.Replayed != 3 || s.Agree != 1 || s.Changed != 2 || s.Skipped != 0 || len(s.Changes) != 1 ||
		s.Changes[0].From != "0" || s.Changes[0].To != "120005" || s.Changes[0].Count != 2 {
		t.Errorf("summary %s", lines[3])
	}
}

func TestReplaySelection(t *testing.T) {
	clearEnv(t)
	ns := runJetStream(t)
	recs := recordTraffic(t, ns)
	for _, tt := range []struct {
		args []string
		want []int
	}{
		{[]string{"--sdkappid", appB}, []int{7}},
		{[]string{"--command", sendGroupMsg + "," + createGroup}, []int{2, 6}},
		{[]string{"--limit", "2"}, []int{0, 1}},
		{[]string{"--command", createOA, "--limit", "2", "--sdkappid", appA}, []int{0, 1}},
		{[]string{"--since", "1h", "--sdkappid", appA}, []int{0, 1, 2, 5, 6}},
		{[]string{"--since", time.Now().Add(time.Minute).Format(time.RFC3339)}, nil},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			args := append([]string{"replay", "--nats-url", ns.ClientURL(), "--stream", auditStream}, tt.args...)
			code, stdout, stderr := runTimbus(t, context.Background(), args...)
			if code != exitOK {
				t.Fatalf("exit code %d, stderr %q", code, stderr)
			}
			rows, _ := parseTable(t, stdout, replayHeader...)
			var got []string
			for _, r := range rows {
				got = append(got, r[5])
			}
			if want := idsOf(recs, tt.want...); !slices.Equal(got, want) {
				t.Errorf("replayed %q, want %q", got, want)
			}
		})
	}
}

func TestReplayRefusesBadInput(t *testing.T) {
	url := "nats://127.0.0.1:1" // never dialled: the arguments are checked first
	tests := []struct {
		args []string
		want string
	}{
		{nil, "--stream is required"},
		{[]string{"--stream", "AUDIT", "--timeout", "2s"}, "under Tencent's own 2s deadline"},
		{[]string{"--stream", "AUDIT", "--timeout", "0s"}, "must be positive"},
		{[]string{"--stream", "AUDIT", "--command", joinedGroup}, "nothing to replay"},
		{[]string{"--stream", "AUDIT", "--command", "nope"}, `--command "nope"`},
		{[]string{"--stream", "AUDIT", "--sdkappid", "abc"}, `--sdkappid "abc"`},
		{[]string{"--stream", "AUDIT", "--since", "yesterday"}, `--since "yesterday"`},
		{[]string{"--stream", "AUDIT", "--subject-prefix", "v2.>"}, "--subject-prefix"},
		{[]string{"--stream", "AUDIT", "--limit", "-3"}, "--limit -3"},
		{[]string{"--stream", "AUDIT", "--follow"}, "follow"},
		{[]string{"--stream", "AUDIT", "extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			clearEnv(t)
			args := append([]string{"replay", "--nats-url", url}, tt.args...)
			code, stdout, stderr := runTimbus(t, context.Background(), args...)
			if code != exitUsage || stdout != "" || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "timbus replay --help") {
				t.Errorf("exit code %d, stdout %q, stderr %q; want %d and an error mentioning %q", code, stdout, stderr, exitUsage, tt.want)
			}
		})
	}
}

func TestReplayHelp(t *testing.T) {
	code, stdout, stderr := runTimbus(t, context.Background(), "replay", "--help")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	for _, w := range []string{"--stream", "--nats-url", "TIMBUS_NATS_URL", "--since", "--command", "--sdkappid", "--subject-prefix",
		"--timeout", "1.5s", "--json", "--limit", "replay-<original id>", "Nothing is sent to Tencent", "Exit status"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("help does not mention %q", w)
		}
	}
	for _, line := range strings.Split(stdout, "\n") {
		if len(line) > 80 {
			t.Errorf("help line over 80 columns: %q", line)
		}
	}
}

func TestAgrees(t *testing.T) {
	code := func(n int) *int { return &n }
	for _, tt := range []struct {
		then recordedVerdict
		now  replayedVerdict
		want bool
	}{
		{recordedVerdict{Outcome: "decided", Code: 0}, replayedVerdict{Outcome: "decided", Code: code(0)}, true},
		{recordedVerdict{Outcome: "decided", Code: 0}, replayedVerdict{Outcome: "decided", Code: code(1)}, false},
		// The same code reaches Tencent: a default then, a verdict now.
		{recordedVerdict{Outcome: "timeout", Code: 0}, replayedVerdict{Outcome: "decided", Code: code(0)}, true},
		{recordedVerdict{Outcome: "timeout", Code: 0}, replayedVerdict{Outcome: "decided", Code: code(1)}, false},
		// No verdict now: the default, which agrees only with a default.
		{recordedVerdict{Outcome: "decided", Code: 0}, replayedVerdict{Outcome: "no_deciders"}, false},
		{recordedVerdict{Outcome: "invalid_reply", Code: 0}, replayedVerdict{Outcome: "timeout"}, true},
		{recordedVerdict{Outcome: "nats_error", Code: 1}, replayedVerdict{Outcome: "decider_error"}, true},
	} {
		if got := agrees(tt.then, tt.now); got != tt.want {
			t.Errorf("agrees(%+v, %+v) = %v", tt.then, tt.now, got)
		}
	}
}

// TestReplayDefaultsSentAtOnce replays callbacks the bridge answered with the
// default without asking anyone, shed over max-inflight or with the
// command's breaker open: what the deciders would have said is what their
// records lack.
func TestReplayDefaultsSentAtOnce(t *testing.T) {
	clearEnv(t)
	ns := runJetStream(t)
	nc := natstest.Connect(t, ns)
	started, release := make(chan struct{}, 1), make(chan struct{})
	v1 := func(command string, handle nats.MsgHandler) {
		if _, err := nc.QueueSubscribe("timbus.decide.*."+command, "v1", handle); err != nil {
			t.Fatal(err)
		}
	}
	v1(createOA, func(m *nats.Msg) {
		started <- struct{}{}
		<-release
		respondMsg(t, m, allowReply, nil)
	})
	// Nobody decides createGroup: no_deciders, a failure of the deciders'
	// side, opens its breaker.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	cfg := bridge.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSURL = ns.ClientURL()
	cfg.Apps = []bridge.App{{ID: appA}}
	cfg.AuditStream = bridge.StreamConfig{Name: auditStream}
	cfg.MaxInflight = 1
	cfg.Breaker = bridge.BreakerConfig{Enabled: true, Window: time.Minute, MinRequests: 2, FailureRatio: 0.5, Cooldown: time.Minute}
	b, err := bridge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	held := make(chan struct{})
	go func() {
		defer close(held)
		postToBridge(t, b, appA, createOA, oaBody(t, "alice"))
	}()
	<-started // the one callback allowed in flight is held by its decider
	postToBridge(t, b, appA, sendC2CMsg, sampleBody(t, sendC2CMsg))
	close(release)
	<-held
	for range 3 { // two failures open the breaker for the third
		postToBridge(t, b, appA, createGroup, sampleBody(t, createGroup))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	nc.Close()

	recs := streamRecords(t, ns.ClientURL(), auditStream)
	var got []string
	for _, r := range recs {
		got = append(got, r.rec.Command+" "+r.rec.Outcome)
	}
	want := []string{sendC2CMsg + " shed", createOA + " decided", createGroup + " no_deciders",
		createGroup + " no_deciders", createGroup + " circuit_open"}
	if !slices.Equal(got, want) {
		t.Fatalf("recorded %q\nwant %q", got, want)
	}
	code, stdout, stderr := runTimbus(t, context.Background(), "audit", "--nats-url", ns.ClientURL(), "--stream", auditStream,
		"--outcome", "shed,circuit_open")
	if code != exitOK {
		t.Fatalf("audit --outcome shed,circuit_open: exit code %d, stderr %q", code, stderr)
	}
	rows, _ := parseTable(t, stdout, auditHeader...)
	if got, want := requestIDs(rows), idsOf(recs, 0, 4); !slices.Equal(got, want) {
		t.Errorf("audit --outcome shed,circuit_open: rows %q, want %q\n%s", got, want, stdout)
	}

	v2 := natstest.Connect(t, ns)
	for command, reply := range map[string]string{
		sendC2CMsg:  `{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":"spam"}`,
		createOA:    allowReply,
		createGroup: allowReply,
	} {
		if _, err := v2.QueueSubscribe("v2.decide.*."+command, "v2", func(m *nats.Msg) { respondMsg(t, m, reply, nil) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := v2.Flush(); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runTimbus(t, context.Background(), "replay", "--nats-url", ns.ClientURL(), "--stream", auditStream,
		"--subject-prefix", "v2")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr %q\n%s", code, stderr, stdout)
	}
	checkReplayTable(t, stdout, recs, []replayRowWant{
		{0, "shed 0", "decided 1", "CHANGED", ""},
		{1, "decided 0", "decided 0", "SAME", ""},
		{2, "no_deciders 0", "decided 0", "SAME", ""},
		{3, "no_deciders 0", "decided 0", "SAME", ""},
		{4, "circuit_open 0", "decided 0", "SAME", ""},
	},
		"5 replayed, 4 agree, 1 changed",
		"  0→1: 1",
	)
}

// TestReplayID: a recorded request id comes from the audit stream; what it
// holds that cannot stand in a subject token becomes _.
func TestReplayID(t *testing.T) {
	for recorded, want := range map[string]string{
		"cb87a6f6d2cb-1f": "replay-cb87a6f6d2cb-1f",
		"a.b c*>\x00é":    "replay-a_b_c_____",
		"":                "replay-",
	} {
		got := replayID(recorded)
		if got != want || !protocol.ValidToken(got) {
			t.Errorf("replayID(%q) = %q, want %q, a valid token", recorded, got, want)
		}
	}
}
