package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/natstest"
)

// TestBridge_Audit: every callback, whatever became of it, gives one record
// with what an auditor needs.
func TestBridge_Audit(t *testing.T) {
	tb := startBridge(t, nil)
	records := subscribe(t, tb.nc, "timbus.audit.>")
	seen := make(chan string, 1)
	decider(t, tb.nc, decideOA, func(m *nats.Msg) *nats.Msg {
		seen <- protocol.ParseRequest(m.Subject, m.Reply, m.Header).RequestID
		r := nats.NewMsg("")
		r.Header.Set(protocol.HeaderDecider, "names/1.2.0/x7")
		r.Data = []byte(oaCreateDeny)
		return r
	})
	oa := sample(t, oaCreate)
	group := sample(t, "Group.CallbackBeforeCreateGroup")
	after := sample(t, "Group.CallbackAfterNewMemberJoin")
	before := time.Now()
	answers := []answer{
		post(t, tb.callbackURL(oaCreate), oa),
		post(t, tb.callbackURL("Group.CallbackBeforeCreateGroup"), group),
		post(t, tb.callbackURL("Group.CallbackAfterNewMemberJoin"), after),
		post(t, tb.base+"/?SdkAppid=42&CallbackCommand="+oaCreate, oa),
	}
	decidedID := <-seen

	var got []protocol.AuditRecord
	waitFor(t, 3*time.Second, func() error {
		got = got[:0]
		for _, m := range records.all() {
			var r protocol.AuditRecord
			if err := json.Unmarshal(m.Data, &r); err != nil {
				t.Fatalf("record on %s is not JSON: %v\n%s", m.Subject, err, m.Data)
			}
			got = append(got, r)
		}
		if len(got) != len(answers) {
			return fmt.Errorf("%d records, want %d", len(got), len(answers))
		}
		return nil
	})
	want := []struct {
		subject, command, kind, outcome, decider string
		code                                     int
		body                                     []byte
	}{
		{decideOA, oaCreate, "before", "decided", "names/1.2.0/x7", 120005, oa},
		{"", "Group.CallbackBeforeCreateGroup", "before", "no_deciders", "", 0, group},
		{"", "Group.CallbackAfterNewMemberJoin", "after", "published", "", 0, after},
		{"", oaCreate, "", "rejected", "", 1, nil},
	}
	ids := map[string]bool{}
	for i, w := range want {
		r := got[i]
		if r.Version != protocol.AuditVersion || r.Command != w.command || r.Kind != w.kind || r.Outcome != w.outcome ||
			r.Code != w.code || r.Decider != w.decider {
			t.Errorf("record %d = %+v\nwant %+v", i, r, w)
		}
		if string(r.Answer) != answers[i].body || r.HTTPStatus != answers[i].status {
			t.Errorf("record %d: answer %d %s, Tencent got %d %s", i, r.HTTPStatus, r.Answer, answers[i].status, answers[i].body)
		}
		if !bytes.Equal(r.Body, bytes.TrimSpace(w.body)) {
			t.Errorf("record %d: body %s, want %s", i, r.Body, w.body)
		}
		if r.ReceivedAt.Before(before.Add(-time.Second)) || r.ReceivedAt.After(time.Now()) || r.LatencyMS <= 0 {
			t.Errorf("record %d: received %v, latency %v", i, r.ReceivedAt, r.LatencyMS)
		}
		if r.RequestID == "" || ids[r.RequestID] {
			t.Errorf("record %d: request id %q missing or repeated", i, r.RequestID)
		}
		ids[r.RequestID] = true
	}
	if got[0].RequestID != decidedID {
		t.Errorf("record request id %s, decider saw %s", got[0].RequestID, decidedID)
	}
	if got[0].SdkAppID != testApp || got[0].ClientIP != "10.0.0.7" || got[0].OptPlatform != "RESTAPI" {
		t.Errorf("record 0 query values: %+v", got[0])
	}
	if r := got[3]; r.SdkAppID != "42" || r.Reason == "" || !strings.Contains(r.Query, "SdkAppid=42") || r.Remote == "" {
		t.Errorf("refusal record: %+v", r)
	}
	if got[1].Reason == "" {
		t.Error("a default verdict without a reason")
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `quo"te`, `back\slash`, "new\nline\t\x00\x1f", "中文 🌏", "bad\xffutf8", "\u2028"} {
		out := appendJSONString(nil, []byte(s))
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%q → %s: %v", s, out, err)
		}
		if want := strings.ToValidUTF8(s, "\uFFFD"); back != want {
			t.Errorf("%q → %s → %q", s, out, back)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	f.Add([]byte("a\"\\\x00\xff中"))
	f.Fuzz(func(t *testing.T, s []byte) {
		out := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%q → %s: %v", s, out, err)
		}
		if !utf8.ValidString(back) {
			t.Fatalf("invalid UTF-8 out of %q", s)
		}
	})
}

// TestBridge_AuditInterest: with the embedded server, records nobody
// subscribes to are not sent, and a subscriber that arrives gets them.
func TestBridge_AuditInterest(t *testing.T) {
	b := startEmbedded(t, "", nil)
	defer b.Shutdown(context.Background())
	url := "http://" + b.Addr() + "/?SdkAppid=" + testApp + "&CallbackCommand=Group.CallbackAfterNewMemberJoin"
	post(t, url, sample(t, "Group.CallbackAfterNewMemberJoin"))
	waitFor(t, 2*time.Second, func() error {
		if b.audit.unheard.Load() != 1 {
			return errNotYet
		}
		return nil
	})
	nc := natsConnect(t, b.NATSURL())
	records := subscribe(t, nc, "timbus.audit.>")
	post(t, url, sample(t, "Group.CallbackAfterNewMemberJoin"))
	waitFor(t, 2*time.Second, func() error {
		if len(records.all()) != 1 {
			return errNotYet
		}
		return nil
	})
	if b.audit.unheard.Load() != 1 {
		t.Errorf("unheard = %d after a subscriber came", b.audit.unheard.Load())
	}
	// The subscriber gone, the next record is unheard again at once.
	nc.Close()
	post(t, url, sample(t, "Group.CallbackAfterNewMemberJoin"))
	waitFor(t, 2*time.Second, func() error {
		if b.audit.unheard.Load() != 2 {
			return errNotYet
		}
		return nil
	})
}

// TestAuditor_HeardLocallyCache: a route's answer from the embedded server is
// asked again when the account's subscriptions change, and at the latest
// after localHearingTTL when they seem not to (one came as another went).
func TestAuditor_HeardLocallyCache(t *testing.T) {
	var asked, subs int
	heard := false
	a := &auditor{
		interest:      func(string) bool { asked++; return heard },
		subscriptions: func() int { return subs },
	}
	rt := &route{}
	e := &auditEntry{subject: "timbus.audit.1.C", route: rt}
	check := func(what string, want bool, wantAsked int) {
		t.Helper()
		if got := a.heardLocally(e); got != want || asked != wantAsked {
			t.Errorf("%s: heard %v after %d question(s), want %v after %d", what, got, asked, want, wantAsked)
		}
	}
	check("first record", false, 1)
	check("same subscriptions", false, 1)
	subs, heard = 1, true
	check("a subscription came", true, 2)
	check("unchanged again", true, 2)
	// Another subject on the same route (never the case today) is asked.
	e.subject = "timbus.audit.1.D"
	check("other subject", true, 3)
	// One went as one came: the count is the same, the TTL ends the answer.
	heard = false
	h := *rt.local.Load()
	h.until = time.Now().Add(-time.Nanosecond).UnixNano()
	rt.local.Store(&h)
	check("past the TTL", false, 4)
	// Transient routes and route-less records keep nothing.
	rt.transient = true
	check("transient route", false, 5)
	check("transient route again", false, 6)
	e.route = nil
	check("no route", false, 7)
}

// TestBridge_AuditHearing: with a server timbus does not embed, records
// nobody subscribes to stop going out once a probe comes back unheard, and a
// subscriber that arrives gets records again within a probe interval.
func TestBridge_AuditHearing(t *testing.T) {
	tb := startBridge(t, nil)
	url := tb.callbackURL("Group.CallbackAfterNewMemberJoin")
	body := sample(t, "Group.CallbackAfterNewMemberJoin")
	post(t, url, body) // the first record is a probe, and nobody hears it
	waitFor(t, 2*time.Second, func() error {
		post(t, url, body)
		if tb.audit.unheard.Load() == 0 {
			return errNotYet
		}
		return nil
	})
	sentBefore, start := tb.audit.published.Load(), time.Now()
	for range 5 {
		post(t, url, body)
	}
	// At most the probes of the time taken go out.
	if sent, probes := tb.audit.published.Load()-sentBefore, 1+uint64(time.Since(start)/auditProbeEvery); sent > probes {
		t.Errorf("%d records sent to nobody after the probe came back unheard (%d probes)", sent, probes)
	}

	records := subscribe(t, tb.nc, "timbus.audit."+testApp+".Group.>")
	waitFor(t, 3*auditProbeEvery, func() error {
		post(t, url, body)
		if len(records.all()) == 0 {
			return errNotYet
		}
		return nil
	})
	// Heard again: every record goes out, probes with a reply subject that
	// nobody answers.
	n := len(records.all())
	for range 5 {
		post(t, url, body)
	}
	waitFor(t, 2*time.Second, func() error {
		if len(records.all()) < n+5 {
			return errNotYet
		}
		return nil
	})
	var rec map[string]any
	if err := json.Unmarshal(records.all()[0].Data, &rec); err != nil || rec["command"] != "Group.CallbackAfterNewMemberJoin" {
		t.Errorf("record %s: %v", records.all()[0].Data, err)
	}
}

// TestAuditor_Batches: records queued together for one subject share a
// message, as an RFC 7464 sequence; a record alone is plain JSON; a message
// stays within auditBatchBytes unless one record is larger.
func TestAuditor_Batches(t *testing.T) {
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	raw, err := nc.SubscribeSync("timbus.audit.>") // batches as they come
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	a := &auditor{nc: nc}
	a.pool.New = func() any { return &auditEntry{buf: make([]byte, 0, 2048)} }
	entry := func(subject, id string, body []byte) *auditEntry {
		e := a.pool.Get().(*auditEntry)
		e.reset()
		e.subject, e.outcome, e.app, e.command = subject, "decided", "1", "A.B"
		e.id, e.body = e.keep([]byte(id)), e.keep(body)
		return e
	}
	const ab, cd = "timbus.audit.1.A.B", "timbus.audit.1.C.D"
	pretty := []byte("{\n  \"x\": 1\n}") // Tencent's bodies may hold line feeds
	big := []byte(`{"x":"` + strings.Repeat("y", 25<<10) + `"}`)
	batch := []*auditEntry{
		entry(ab, "r1", pretty), entry(ab, "r2", pretty), entry(ab, "r3", pretty),
		entry(cd, "r4", pretty), entry(ab, "r5", pretty),
		entry(ab, "r6", big), entry(ab, "r7", big), entry(ab, "r8", big),
	}
	a.pending.Add(int64(len(batch)))
	a.publish(batch, nil)
	type message struct {
		subject string
		ids     []string
		seq     bool
	}
	want := []message{
		{ab, []string{"r1", "r2", "r3"}, true}, {cd, []string{"r4"}, false},
		{ab, []string{"r5", "r6", "r7"}, true}, {ab, []string{"r8"}, false}, // 25 KiB bodies: r8 would pass 64 KiB
	}
	var msgs []*nats.Msg
	for range want {
		m, err := raw.NextMsg(2 * time.Second)
		if err != nil {
			t.Fatalf("after %d messages: %v", len(msgs), err)
		}
		msgs = append(msgs, m)
	}
	if m, err := raw.NextMsg(50 * time.Millisecond); err == nil {
		t.Errorf("one more message: %q", m.Data)
	}
	for i, m := range msgs {
		got := message{subject: m.Subject, seq: m.Data[0] == protocol.RecordSeparator}
		protocol.EachRecord(m.Data, func(record []byte) bool {
			var r protocol.AuditRecord
			if err := json.Unmarshal(record, &r); err != nil {
				t.Errorf("message %d: record %q: %v", i, record, err)
			}
			got.ids = append(got.ids, r.RequestID)
			return true
		})
		if i >= len(want) || fmt.Sprint(got) != fmt.Sprint(want[i]) {
			t.Errorf("message %d: %v (%d bytes)", i, got, len(m.Data))
		} else if len(got.ids) > 1 && len(m.Data) > auditBatchBytes {
			t.Errorf("message %d: %d bytes, over %d", i, len(m.Data), auditBatchBytes)
		}
	}
	if a.published.Load() != uint64(len(batch)) || a.pending.Load() != 0 {
		t.Errorf("published %d, pending %d; want %d, 0", a.published.Load(), a.pending.Load(), len(batch))
	}
}

// TestHearing_ForgedNoResponders: a "no responders" for a probe that is not
// outstanding, or with the wrong key, silences nothing.
func TestHearing_ForgedNoResponders(t *testing.T) {
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	h, err := newHearing(nc)
	if err != nil {
		t.Fatal(err)
	}
	defer h.sub.Unsubscribe()
	var r heard
	send, reply := h.check(&r, time.Now())
	if !send || reply == "" {
		t.Fatalf("first check: %v %q, want a probe", send, reply)
	}
	forge := func(subject string) {
		m := nats.NewMsg(subject)
		m.Header.Set("Status", "503")
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	id, _, _ := strings.Cut(reply[strings.LastIndexByte(reply, '.')+1:], "_")
	forge(h.inbox + "." + id + "_1") // the right probe, a guessed key
	forge(h.inbox + "." + id)        // no key
	forge(h.inbox + ".zz_" + "1")    // no such probe
	// A fourth message, handled after the three (one subscription handles
	// its messages in order): once it is delivered, they are done.
	if err := nc.Publish(h.inbox+".sentinel", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, func() error {
		if n, _ := h.sub.Delivered(); n < 4 {
			return errNotYet
		}
		return nil
	})
	if r.quiet.Load() {
		t.Fatal("a forged no-responders silenced the probe")
	}
	forge(reply) // as the server would answer
	waitFor(t, time.Second, func() error {
		if !r.quiet.Load() {
			return errNotYet
		}
		return nil
	})
	if send, _ := h.check(&r, time.Now()); send {
		t.Error("a record went out after the probe came back unheard")
	}
}
