package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/timbus-dev/timbus/bridge"
	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/natstest"
	"github.com/timbus-dev/timbus/internal/samples"
)

// The apps and commands of the recorded traffic.
const (
	appA         = "1400000001"
	appB         = "1400000002"
	sendGroupMsg = "Group.CallbackBeforeSendMsg"
	sendC2CMsg   = "C2C.CallbackBeforeSendMsg"
	createGroup  = "Group.CallbackBeforeCreateGroup"
	joinedGroup  = "Group.CallbackAfterNewMemberJoin"
)

// auditStream is the stream the recording bridge keeps its records in.
const auditStream = "AUDIT"

// v1Decider names the deciders that answered the recorded callbacks.
const v1Decider = "names/1.0.0/a"

// runJetStream starts a NATS server with JetStream, on 127.0.0.1.
func runJetStream(t *testing.T) *server.Server {
	t.Helper()
	opts := natstest.Options()
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	return natstest.RunWith(t, opts)
}

// stored is an audit record as its stream holds it.
type stored struct {
	data []byte
	rec  protocol.AuditRecord
}

// streamRecords returns every message of a stream, in order.
func streamRecords(t *testing.T, url, name string) []stored {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	var out []stored
	for seq := s.CachedInfo().State.FirstSeq; seq <= s.CachedInfo().State.LastSeq && seq > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		var r stored
		r.data = m.Data
		if err := json.Unmarshal(m.Data, &r.rec); err != nil {
			t.Fatalf("message %d is not an audit record: %v\n%s", seq, err, m.Data)
		}
		out = append(out, r)
	}
	return out
}

// oaBody is Tencent's sample body for creating an official account, for an
// account of this name.
func oaBody(t *testing.T, name string) []byte {
	t.Helper()
	sample, ok := samples.Request(createOA)
	if !ok || !bytes.Contains(sample, []byte("TestOfficialAccount")) {
		t.Fatalf("the %s sample changed; the test needs its Name", createOA)
	}
	return bytes.Replace(sample, []byte("TestOfficialAccount"), []byte(name), 1)
}

func sampleBody(t *testing.T, command string) []byte {
	t.Helper()
	b, ok := samples.Request(command)
	if !ok {
		t.Fatalf("no sample for %s", command)
	}
	return b
}

// accountName reads the Name of a create-official-account body.
func accountName(body []byte) string {
	var v struct{ Name string }
	_ = json.Unmarshal(body, &v)
	return v.Name
}

// postToBridge sends a callback to the bridge as Tencent would.
func postToBridge(t *testing.T, b *bridge.Bridge, app, command string, body []byte) {
	t.Helper()
	url := "http://" + b.Addr() + "/?SdkAppid=" + app + "&CallbackCommand=" + command +
		"&contenttype=json&ClientIP=10.0.0.7&OptPlatform=RESTAPI"
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// respondMsg answers a request, with headers.
func respondMsg(t *testing.T, m *nats.Msg, body string, header nats.Header) {
	if err := m.RespondMsg(&nats.Msg{Subject: m.Reply, Data: []byte(body), Header: header}); err != nil {
		t.Error(err)
	}
}

// recordTraffic runs a real bridge with an audit stream on ns, answers its
// requests with the deciders of "version 1", posts the recorded traffic and
// returns the stream's records once the bridge has stopped (which waits for
// the stream to acknowledge every record). The traffic, in order:
//
//	0  createOA   appA "alice"  decided 0
//	1  createOA   appA "admin"  decided 120005
//	2  group msg  appA          no_deciders 0 (nobody listens)
//	3  joined     appA          published (an after callback)
//	4  createOA   SdkAppid 999  rejected
//	5  C2C msg    appA          invalid_reply 0 (ErrorCode 7 is not valid)
//	6  new group  appA          decided 0
//	7  createOA   appB "bob"    decided 0
func recordTraffic(t *testing.T, ns *server.Server) []stored {
	t.Helper()
	nc := natstest.Connect(t, ns)
	named := nats.Header{protocol.HeaderDecider: {v1Decider}}
	subscribe := func(subject string, handle nats.MsgHandler) {
		if _, err := nc.QueueSubscribe(subject, "v1", handle); err != nil {
			t.Fatal(err)
		}
	}
	subscribe("timbus.decide.*."+createOA, func(m *nats.Msg) {
		if accountName(m.Data) == "admin" {
			respondMsg(t, m, `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"name reserved"}`, named)
			return
		}
		respondMsg(t, m, allowReply, named)
	})
	subscribe("timbus.decide.*."+sendC2CMsg, func(m *nats.Msg) {
		respondMsg(t, m, `{"ActionStatus":"OK","ErrorCode":7}`, nil)
	})
	subscribe("timbus.decide.*."+createGroup, func(m *nats.Msg) { respondMsg(t, m, allowReply, named) })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	cfg := bridge.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSURL = ns.ClientURL()
	cfg.Apps = []bridge.App{{ID: appA}, {ID: appB}}
	cfg.AuditStream = bridge.StreamConfig{Name: auditStream}
	b, err := bridge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	postToBridge(t, b, appA, createOA, oaBody(t, "alice"))
	postToBridge(t, b, appA, createOA, oaBody(t, "admin"))
	postToBridge(t, b, appA, sendGroupMsg, sampleBody(t, sendGroupMsg))
	postToBridge(t, b, appA, joinedGroup, sampleBody(t, joinedGroup))
	postToBridge(t, b, "999", createOA, oaBody(t, "mallory"))
	postToBridge(t, b, appA, sendC2CMsg, sampleBody(t, sendC2CMsg))
	postToBridge(t, b, appA, createGroup, sampleBody(t, createGroup))
	postToBridge(t, b, appB, createOA, oaBody(t, "bob"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	nc.Close() // version 1 is gone

	recs := streamRecords(t, ns.ClientURL(), auditStream)
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%s %s %s %d", r.rec.SdkAppID, r.rec.Command, r.rec.Outcome, r.rec.Code))
	}
	want := []string{
		appA + " " + createOA + " decided 0",
		appA + " " + createOA + " decided 120005",
		appA + " " + sendGroupMsg + " no_deciders 0",
		appA + " " + joinedGroup + " published 0",
		"999 " + createOA + " rejected 1",
		appA + " " + sendC2CMsg + " invalid_reply 0",
		appA + " " + createGroup + " decided 0",
		appB + " " + createOA + " decided 0",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("the bridge recorded\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	return recs
}

// parseTable splits a table into its rows of cells, checking the header, and
// returns the lines after the table's blank line.
func parseTable(t *testing.T, out string, header ...string) (rows [][]string, tail []string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if got := cellSep.Split(strings.TrimSpace(lines[0]), -1); !slices.Equal(got, header) {
		t.Fatalf("header = %q, want %q\n%s", got, header, out)
	}
	for i, line := range lines[1:] {
		if line == "" {
			return rows, lines[i+2:]
		}
		cells := cellSep.Split(strings.TrimSpace(line), len(header))
		if len(cells) != len(header) {
			t.Fatalf("row %q has %d cells, want %d", line, len(cells), len(header))
		}
		rows = append(rows, cells)
	}
	return rows, nil
}

var auditHeader = []string{"TIME", "SDKAPPID", "COMMAND", "OUTCOME", "CODE", "LATENCY", "DECIDER", "REQUEST ID", "REASON"}

// auditRow is the table row timbus audit should print for r.
func auditRow(r protocol.AuditRecord) []string {
	return []string{
		r.ReceivedAt.Local().Format("2006-01-02T15:04:05.000Z07:00"),
		orDash(r.SdkAppID), orDash(r.Command), r.Outcome, fmt.Sprint(r.Code),
		fmt.Sprintf("%.2fms", r.LatencyMS), orDash(r.Decider), r.RequestID, orDash(shorten(r.Reason, 60)),
	}
}

// requestIDs lists the REQUEST ID cells of an audit table.
func requestIDs(rows [][]string) []string {
	var ids []string
	for _, r := range rows {
		ids = append(ids, r[7])
	}
	return ids
}

// idsOf lists the request ids of the records at these positions.
func idsOf(recs []stored, at ...int) []string {
	var ids []string
	for _, i := range at {
		ids = append(ids, recs[i].rec.RequestID)
	}
	return ids
}

func TestAuditTable(t *testing.T) {
	clearEnv(t)
	ns := runJetStream(t)
	recs := recordTraffic(t, ns)

	code, stdout, stderr := runTimbus(t, context.Background(), "audit", "--nats-url", ns.ClientURL(), "--stream", auditStream)
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr %q\n%s", code, stderr, stdout)
	}
	rows, tail := parseTable(t, stdout, auditHeader...)
	if len(rows) != len(recs) || tail != nil {
		t.Fatalf("%d rows and %q after them, want %d rows:\n%s", len(rows), tail, len(recs), stdout)
	}
	for i, r := range recs {
		if want := auditRow(r.rec); !slices.Equal(rows[i], want) {
			t.Errorf("row %d = %q\nwant      %q", i, rows[i], want)
		}
	}
	// What the cells mean, spelled out for three of them.
	if r := rows[1]; r[1] != appA || r[2] != createOA || r[3] != "decided" || r[4] != "120005" || r[6] != v1Decider || r[8] != "-" {
		t.Errorf("decided row = %q", r)
	}
	if r := rows[2]; r[3] != "no_deciders" || r[4] != "0" || r[6] != "-" || r[8] == "-" {
		t.Errorf("no_deciders row = %q, want a reason", r)
	}
	if r := rows[4]; r[1] != "999" || r[3] != "rejected" || r[4] != "1" || !strings.Contains(r[8], `SdkAppid "999" is not served`) {
		t.Errorf("refusal row = %q", r)
	}
	if _, err := time.Parse(time.RFC3339, rows[0][0]); err != nil || !strings.Contains(rows[0][0], ".") {
		t.Errorf("TIME %q is not RFC 3339 with milliseconds: %v", rows[0][0], err)
	}
	// The reading consumer is gone with the command.
	nc := natstest.Connect(t, ns)
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), auditStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Consumers; n != 0 {
		t.Errorf("%d consumers left on the stream", n)
	}
}

func TestAuditFilters(t *testing.T) {
	clearEnv(t)
	ns := runJetStream(t)
	recs := recordTraffic(t, ns)
	tests := []struct {
		args []string
		want []int // positions in the recorded traffic
	}{
		{[]string{"--outcome", "decided"}, []int{0, 1, 6, 7}},
		{[]string{"--outcome", "no_deciders, rejected"}, []int{2, 4}},
		{[]string{"--outcome", "invalid_reply", "--outcome", "published"}, []int{3, 5}},
		// The refusal named the command: selected too.
		{[]string{"--command", createOA}, []int{0, 1, 4, 7}},
		{[]string{"--command", createOA, "--outcome", "decided"}, []int{0, 1, 7}},
		{[]string{"--command", createOA + "," + createGroup, "--sdkappid", appA}, []int{0, 1, 6}},
		{[]string{"--sdkappid", appB}, []int{7}},
		{[]string{"--sdkappid", "999"}, []int{4}},
		{[]string{"--sdkappid", appA, "--outcome", "decided"}, []int{0, 1, 6}},
		{[]string{"--limit", "2"}, []int{0, 1}},
		{[]string{"--outcome", "decided", "--limit", "3"}, []int{0, 1, 6}},
		{[]string{"--since", "1h"}, []int{0, 1, 2, 3, 4, 5, 6, 7}},
		{[]string{"--outcome", "timeout"}, nil},
		// The stream's own prefix, given explicitly.
		{[]string{"--subject-prefix", "timbus", "--command", sendGroupMsg}, []int{2}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			args := append([]string{"audit", "--nats-url", ns.ClientURL(), "--stream", auditStream}, tt.args...)
			code, stdout, stderr := runTimbus(t, context.Background(), args...)
			if code != exitOK {
				t.Fatalf("exit code %d, stderr %q", code, stderr)
			}
			rows, _ := parseTable(t, stdout, auditHeader...)
			if got, want := requestIDs(rows), idsOf(recs, tt.want...); !slices.Equal(got, want) {
				t.Errorf("rows %q, want %q\n%s", got, want, stdout)
			}
			if (len(tt.want) == 0) != strings.Contains(stderr, "no records matched") {
				t.Errorf("stderr %q", stderr)
			}
		})
	}
}

func TestAuditJSON(t *testing.T) {
	clearEnv(t)
	ns := runJetStream(t)
	recs := recordTraffic(t, ns)

	code, stdout, stderr := runTimbus(t, context.Background(), "audit", "--nats-url", ns.ClientURL(), "--stream", auditStream, "--json")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != len(recs) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(recs), stdout)
	}
	multiline := 0
	for i, r := range recs {
		line := []byte(lines[i])
		if !bytes.ContainsAny(r.data, "\r\n") {
			if !bytes.Equal(line, r.data) {
				t.Errorf("line %d = %s\nwant the stored bytes %s", i, line, r.data)
			}
			continue
		}
		// Tencent's sample bodies are pretty-printed, and stored so: only
		// their line breaks and indentation go.
		multiline++
		var want bytes.Buffer
		if err := json.Compact(&want, r.data); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(line, want.Bytes()) {
			t.Errorf("line %d = %s\nwant the stored record, compacted: %s", i, line, want.Bytes())
		}
		var got protocol.AuditRecord
		if err := json.Unmarshal(line, &got); err != nil || got.RequestID != r.rec.RequestID {
			t.Errorf("line %d: %v, request id %q", i, err, got.RequestID)
		}
	}
	if multiline == 0 || multiline == len(recs) {
		t.Errorf("%d of %d records span lines; the test wants both kinds", multiline, len(recs))
	}

	// Filtered, the lines are still the stored records.
	code, stdout, _ = runTimbus(t, context.Background(), "audit", "--nats-url", ns.ClientURL(), "--stream", auditStream, "--json", "--outcome", "rejected")
	if code != exitOK || stdout != string(recs[4].data)+"\n" {
		t.Errorf("exit code %d, stdout %q, want the refusal's record %s", code, stdout, recs[4].data)
	}
}

// publishRecord stores a crafted record as the bridge would.
func publishRecord(t *testing.T, js jetstream.JetStream, rec protocol.AuditRecord) {
	t.Helper()
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), protocol.Subject("timbus", protocol.KindAudit, rec.SdkAppID, rec.Command), data); err != nil {
		t.Fatal(err)
	}
}

func createAuditStream(t *testing.T, nc *nats.Conn, name, prefix string) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: name, Subjects: []string{prefix + ".audit.>"}}); err != nil {
		t.Fatal(err)
	}
	return js
}

func craftedRecord(id string, received time.Time) protocol.AuditRecord {
	return protocol.AuditRecord{
		Version: protocol.AuditVersion, RequestID: id, ReceivedAt: received, SdkAppID: appA, Command: createOA,
		Kind: "before", Outcome: "decided", HTTPStatus: 200, Answer: json.RawMessage(allowReply), Body: json.RawMessage(`{"Name":"x"}`),
	}
}

// TestAuditSince: --since selects by the time the callback was received,
// and leaves records stored earlier to the server.
func TestAuditSince(t *testing.T) {
	clearEnv(t)
	ns := runJetStream(t)
	nc := natstest.Connect(t, ns)
	js := createAuditStream(t, nc, "CRAFTED", "timbus")
	now := time.Now()
	publishRecord(t, js, craftedRecord("old", now.Add(-time.Hour)))
	// Received in the future by this clock: only the stream's own time
	// can leave it out.
	publishRecord(t, js, craftedRecord("skewed", now.Add(time.Hour)))
	time.Sleep(20 * time.Millisecond)
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	publishRecord(t, js, craftedRecord("new", time.Now()))

	for _, tt := range []struct {
		since string
		want  []string
	}{
		{"10m", []string{"skewed", "new"}},
		{"2h", []string{"old", "skewed", "new"}},
		{mid.Format(time.RFC3339Nano), []string{"new"}},
		{now.Add(30 * time.Minute).Format(time.RFC3339), nil},
	} {
		t.Run(tt.since, func(t *testing.T) {
			code, stdout, stderr := runTimbus(t, context.Background(), "audit", "--nats-url", ns.ClientURL(), "--stream", "CRAFTED", "--since", tt.since)
			if code != exitOK {
				t.Fatalf("exit code %d, stderr %q", code, stderr)
			}
			rows, _ := parseTable(t, stdout, auditHeader...)
			if got := requestIDs(rows); !slices.Equal(got, tt.want) {
				t.Errorf("rows %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAuditEmptyStream(t *testing.T) {
	clearEnv(t)
	ns := runJetStream(t)
	createAuditStream(t, natstest.Connect(t, ns), "EMPTY", "acme.im")

	// The prefix comes from the stream: no --subject-prefix needed.
	code, stdout, stderr := runTimbus(t, context.Background(), "audit", "--nats-url", ns.ClientURL(), "--stream", "EMPTY")
	if code != exitOK || strings.Join(cellSep.Split(strings.TrimSpace(stdout), -1), "|") != strings.Join(auditHeader, "|") {
		t.Errorf("exit code %d, stdout %q; want 0 and the header alone", code, stdout)
	}
	if stderr != "timbus audit: no records matched\n" {
		t.Errorf("stderr %q", stderr)
	}
	code, stdout, stderr = runTimbus(t, context.Background(), "audit", "--nats-url", ns.ClientURL(), "--stream", "EMPTY", "--json", "--sdkappid", appA)
	if code != exitOK || stdout != "" || stderr != "" {
		t.Errorf("--json: exit code %d, stdout %q, stderr %q; want 0 and nothing", code, stdout, stderr)
	}
}

func TestAuditStreamErrors(t *testing.T) {
	clearEnv(t)
	js := runJetStream(t)
	plain := natstest.Run(t)
	gone := natstest.Run(t)
	goneURL := gone.ClientURL()
	gone.Shutdown()
	gone.WaitForShutdown()
	for _, tt := range []struct {
		name, url, stream, want string
	}{
		{"missing stream", js.ClientURL(), "NOPE", `stream "NOPE" not found on nats://127.0.0.1:`},
		{"no JetStream", plain.ClientURL(), "AUDIT", "JetStream is not enabled on"},
		{"NATS unreachable", goneURL, "AUDIT", "cannot connect to NATS at " + goneURL},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, cmd := range []string{"audit", "replay"} {
				code, stdout, stderr := runTimbus(t, context.Background(), cmd, "--nats-url", tt.url, "--stream", tt.stream)
				if code != exitFailure || stdout != "" || !strings.HasPrefix(stderr, "timbus "+cmd+": ") || !strings.Contains(stderr, tt.want) {
					t.Errorf("%s: exit code %d, stdout %q, stderr %q; want %d and %q", cmd, code, stdout, stderr, exitFailure, tt.want)
				}
			}
		})
	}
}

// background runs timbus until it returns, letting the test read its
// output meanwhile.
type background struct {
	stdout, stderr syncBuffer
	done           chan int
}

func startTimbus(ctx context.Context, args ...string) *background {
	b := &background{done: make(chan int, 1)}
	go func() { b.done <- run(ctx, args, &b.stdout, &b.stderr) }()
	return b
}

func (b *background) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-b.done:
		return code
	case <-time.After(15 * time.Second):
		t.Fatalf("timbus did not return within 15s; stderr:\n%s", b.stderr.String())
		return 0
	}
}

// waitUntil polls cond for up to 10 seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lineCount(s string) int { return strings.Count(s, "\n") }

func TestAuditFollowStream(t *testing.T) {
	clearEnv(t)
	ns := runJetStream(t)
	js := createAuditStream(t, natstest.Connect(t, ns), "CRAFTED", "timbus")
	publishRecord(t, js, craftedRecord("first", time.Now()))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bg := startTimbus(ctx, "audit", "--nats-url", ns.ClientURL(), "--stream", "CRAFTED", "--follow", "--json")
	waitUntil(t, "the stored record", func() bool { return lineCount(bg.stdout.String()) == 1 })
	publishRecord(t, js, craftedRecord("second", time.Now()))
	waitUntil(t, "the new record", func() bool { return lineCount(bg.stdout.String()) == 2 })
	select {
	case code := <-bg.done:
		t.Fatalf("returned %d while following", code)
	case <-time.After(100 * time.Millisecond):
	}
	cancel() // Ctrl-C
	if code := bg.wait(t); code != exitOK {
		t.Errorf("exit code %d after the context ended; stderr %q", code, bg.stderr.String())
	}
	if out := bg.stdout.String(); !strings.Contains(out, `"request_id":"first"`) || !strings.Contains(strings.Split(out, "\n")[1], `"request_id":"second"`) {
		t.Errorf("stdout:\n%s", out)
	}
}

// auditSubscriptions counts the subscriptions of timbus audit on ns.
func auditSubscriptions(t *testing.T, ns *server.Server) int {
	connz, err := ns.Connz(&server.ConnzOptions{Subscriptions: true})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range connz.Conns {
		if c.Name == "timbus audit" {
			n += len(c.Subs)
		}
	}
	return n
}

// TestAuditLive: without a stream, records are printed as the bridge
// publishes them, filtered, until the limit or the end of the context.
func TestAuditLive(t *testing.T) {
	clearEnv(t)
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	if _, err := nc.QueueSubscribe("timbus.decide.*."+createOA, "v1", func(m *nats.Msg) { respondMsg(t, m, allowReply, nil) }); err != nil {
		t.Fatal(err)
	}
	cfg := bridge.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSURL = ns.ClientURL()
	cfg.Apps = []bridge.App{{ID: appA}}
	b, err := bridge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Shutdown(context.Background()) })

	t.Setenv(envName("nats-url"), ns.ClientURL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bg := startTimbus(ctx, "audit", "--outcome", "decided", "--limit", "2")
	waitUntil(t, "timbus audit to subscribe", func() bool { return auditSubscriptions(t, ns) == 1 })
	// Records are published in order: once the second decided one is
	// printed, the no_deciders one before it was read and left out.
	postToBridge(t, b, appA, createOA, oaBody(t, "alice"))
	postToBridge(t, b, appA, sendGroupMsg, sampleBody(t, sendGroupMsg))
	postToBridge(t, b, appA, createOA, oaBody(t, "bob"))
	if code := bg.wait(t); code != exitOK { // the limit ends it
		t.Fatalf("exit code %d, stderr %q", code, bg.stderr.String())
	}
	rows, _ := parseTable(t, bg.stdout.String(), auditHeader...)
	if len(rows) != 2 || rows[0][3] != "decided" || rows[1][3] != "decided" || rows[0][2] != createOA || rows[0][1] != appA {
		t.Errorf("rows %q", rows)
	}

	// Without a limit, it runs until the context ends.
	waitUntil(t, "the first run's connection to go", func() bool { return auditSubscriptions(t, ns) == 0 })
	ctx2, cancel2 := context.WithCancel(context.Background())
	bg = startTimbus(ctx2, "audit", "--json")
	waitUntil(t, "timbus audit to subscribe", func() bool { return auditSubscriptions(t, ns) == 1 })
	postToBridge(t, b, appA, sendGroupMsg, sampleBody(t, sendGroupMsg))
	waitUntil(t, "the record", func() bool { return lineCount(bg.stdout.String()) == 1 })
	cancel2()
	if code := bg.wait(t); code != exitOK || !strings.Contains(bg.stdout.String(), `"outcome":"no_deciders"`) {
		t.Errorf("exit code %d, stdout %q", code, bg.stdout.String())
	}
}

func TestAuditRefusesBadInput(t *testing.T) {
	url := "nats://127.0.0.1:1" // never dialled: the arguments are checked first
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--outcome", "denied"}, `--outcome "denied": want one of decided, timeout`},
		{[]string{"--since", "10m"}, "--since needs --stream"},
		{[]string{"--stream", "AUDIT", "--since", "yesterday"}, `--since "yesterday"`},
		{[]string{"--stream", "AUDIT", "--since", "-5m"}, "want a positive duration"},
		{[]string{"--subject-prefix", "a b"}, "--subject-prefix"},
		{[]string{"--sdkappid", "abc"}, `--sdkappid "abc"`},
		{[]string{"--command", "CallbackBeforeSendMsg"}, `--command "CallbackBeforeSendMsg"`},
		{[]string{"--limit", "-1"}, "--limit -1"},
		{[]string{"--bogus"}, "bogus"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			clearEnv(t)
			args := append([]string{"audit", "--nats-url", url}, tt.args...)
			code, stdout, stderr := runTimbus(t, context.Background(), args...)
			if code != exitUsage || stdout != "" || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "timbus audit --help") {
				t.Errorf("exit code %d, stdout %q, stderr %q; want %d and an error mentioning %q", code, stdout, stderr, exitUsage, tt.want)
			}
		})
	}
}

func TestAuditHelp(t *testing.T) {
	code, stdout, stderr := runTimbus(t, context.Background(), "audit", "--help")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	want := []string{"--nats-url", "TIMBUS_NATS_URL", nats.DefaultURL, "--stream", "--subject-prefix", "--sdkappid", "--command",
		"--outcome", "--since", "--follow", "--json", "--limit", "until Ctrl-C", "Exit status"}
	want = append(want, auditOutcomes...)
	for _, w := range want {
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

func TestSelectionSubjects(t *testing.T) {
	for _, tt := range []struct {
		apps, commands []string
		refusals       bool
		want           []string
	}{
		{nil, nil, true, []string{"p.audit.>"}},
		{nil, nil, false, []string{"p.audit.>"}},
		{[]string{"1", "2"}, nil, false, []string{"p.audit.1.>", "p.audit.2.>"}},
		{nil, []string{"A.B"}, true, []string{"p.audit.*.A.B", "p.audit.rejected.*"}},
		{[]string{"1"}, []string{"A.B", "C.D"}, false, []string{"p.audit.1.A.B", "p.audit.1.C.D"}},
	} {
		s := recordSelection{apps: tt.apps, commands: tt.commands}
		if got := s.subjects("p", tt.refusals); !slices.Equal(got, tt.want) {
			t.Errorf("%v %v %v: %q, want %q", tt.apps, tt.commands, tt.refusals, got, tt.want)
		}
	}
}

func TestTableAlignsAndGrows(t *testing.T) {
	var b strings.Builder
	tb := newTable(&b, false, "A", "BB", "C")
	_ = tb.row("xxxx", "", "last  cell\twith\ttabs")
	_ = tb.row("y", "z", "")
	_ = tb.flush()
	want := "A     BB  C\nxxxx  -   last  cell with tabs\ny     z   -\n"
	if b.String() != want {
		t.Errorf("table:\n%q\nwant\n%q", b.String(), want)
	}
}

// TestAuditShadowAndLate runs a bridge with a shadow decider and a primary
// that is late once: --disagreements shows where the shadow differed, and
// replay leaves the late reply's record alone.
func TestAuditShadowAndLate(t *testing.T) {
	clearEnv(t)
	ns := runJetStream(t)
	nc := natstest.Connect(t, ns)
	if _, err := nc.QueueSubscribe("timbus.decide.*."+createOA, "v1", func(m *nats.Msg) {
		if accountName(m.Data) == "slow" {
			time.Sleep(400 * time.Millisecond)
		}
		respondMsg(t, m, allowReply, nil)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.QueueSubscribe("v2.decide.*."+createOA, "v2", func(m *nats.Msg) {
		if accountName(m.Data) == "alice" {
			respondMsg(t, m, `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"name reserved"}`, nil)
			return
		}
		respondMsg(t, m, allowReply, nil)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	cfg := bridge.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSURL = ns.ClientURL()
	cfg.Apps = []bridge.App{{ID: appA}}
	cfg.AuditStream = bridge.StreamConfig{Name: auditStream}
	cfg.ShadowPrefix = "v2"
	cfg.Timeout = 200 * time.Millisecond
	b, err := bridge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(context.Background())
	for _, name := range []string{"alice", "bob", "slow"} {
		postToBridge(t, b, appA, createOA, oaBody(t, name))
	}
	// Three callbacks, and the slow one's late reply.
	var recs []stored
	waitUntil(t, "four records", func() bool {
		recs = streamRecords(t, ns.ClientURL(), auditStream)
		return len(recs) == 4
	})
	var outcomes []string
	for _, r := range recs {
		outcomes = append(outcomes, r.rec.Outcome)
	}
	if !slices.Equal(outcomes, []string{"decided", "decided", "timeout", "late"}) {
		t.Fatalf("recorded %q", outcomes)
	}

	code, stdout, stderr := runTimbus(t, context.Background(), "audit", "--nats-url", ns.ClientURL(), "--stream", auditStream, "--disagreements")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	header := slices.Insert(slices.Clone(auditHeader), 5, "SHADOW")
	rows, _ := parseTable(t, stdout, header...)
	if len(rows) != 1 || rows[0][8] != recs[0].rec.RequestID || rows[0][4] != "0" || rows[0][5] != "decided 120005" {
		t.Errorf("rows %q, want alice's callback, where the shadow said 120005", rows)
	}

	code, stdout, stderr = runTimbus(t, context.Background(), "replay", "--nats-url", ns.ClientURL(), "--stream", auditStream, "--subject-prefix", "v2")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	checkReplayTable(t, stdout, recs, []replayRowWant{
		{0, "decided 0", "decided 120005", "CHANGED", ""},
		{1, "decided 0", "decided 0", "SAME", ""},
		{2, "timeout 0", "decided 0", "SAME", ""},
	},
		"3 replayed, 2 agree, 1 changed",
		"  0→120005: 1",
		"1 record not replayed: after callbacks, refusals, fire-and-forget, late replies or without a body",
	)
}
