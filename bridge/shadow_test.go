package bridge

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders/protocol"
)

// auditRecords decodes the records captured so far.
func auditRecords(t *testing.T, c *capture) []protocol.AuditRecord {
	t.Helper()
	var out []protocol.AuditRecord
	for _, m := range c.all() {
		var r protocol.AuditRecord
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("record on %s: %v\n%s", m.Subject, err, m.Data)
		}
		out = append(out, r)
	}
	return out
}

// TestBridge_Shadow: a shadow decider sees every decision request, Tencent
// only ever gets the primary's verdict, and the audit records show where the
// two disagree.
func TestBridge_Shadow(t *testing.T) {
	tb := startBridge(t, func(c *Config) { c.ShadowPrefix = "candidate" })
	records := subscribe(t, tb.nc, "timbus.audit.>")
	// The primary denies names starting with "admin"; the candidate denies
	// anything with "test" in it, with its own code.
	decider(t, tb.nc, decideOA, func(m *nats.Msg) *nats.Msg {
		if strings.Contains(string(m.Data), `"Name":"admin`) {
			return &nats.Msg{Data: []byte(oaCreateDeny)}
		}
		return &nats.Msg{Data: []byte(`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`)}
	})
	decider(t, tb.nc, "candidate.decide."+testApp+"."+oaCreate, func(m *nats.Msg) *nats.Msg {
		if strings.Contains(string(m.Data), "test") || strings.Contains(string(m.Data), "admin") {
			return &nats.Msg{Data: []byte(`{"ActionStatus":"OK","ErrorCode":120099,"ErrorInfo":"candidate says no"}`)}
		}
		return &nats.Msg{Data: []byte(`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`)}
	})
	names := []struct {
		name    string
		primary int
		shadow  int
	}{{"admin1", 120005, 120099}, {"mytest", 0, 120099}, {"alice", 0, 0}, {"bob", 0, 0}}
	for _, n := range names {
		body := fmt.Sprintf(`{"CallbackCommand":"%s","Name":"%s"}`, oaCreate, n.name)
		got := post(t, tb.callbackURL(oaCreate), []byte(body))
		var answer struct{ ErrorCode int }
		if err := json.Unmarshal([]byte(got.body), &answer); err != nil || answer.ErrorCode != n.primary {
			t.Errorf("%s: Tencent got %s, want the primary's code %d", n.name, got.body, n.primary)
		}
	}
	var recs []protocol.AuditRecord
	waitFor(t, 3*time.Second, func() error {
		if recs = auditRecords(t, records); len(recs) != len(names) {
			return fmt.Errorf("%d records", len(recs))
		}
		return nil
	})
	for i, n := range names {
		r := recs[i]
		agrees := n.primary == n.shadow
		if r.Code != n.primary || r.ShadowCode == nil || *r.ShadowCode != n.shadow || r.ShadowOutcome != "decided" ||
			r.Agrees == nil || *r.Agrees != agrees || len(r.ShadowVerdict) == 0 {
			t.Errorf("%s: record code %d shadow %v/%s agrees %v verdict %s", n.name, r.Code, r.ShadowCode, r.ShadowOutcome, r.Agrees, r.ShadowVerdict)
		}
	}
}

// TestBridge_ShadowAbsentOrSlow: a shadow that is missing or too slow never
// delays the answer to Tencent, and its record still comes.
func TestBridge_ShadowAbsentOrSlow(t *testing.T) {
	tb := startBridge(t, func(c *Config) {
		c.Timeout = 300 * time.Millisecond
		c.Commands = map[string]CommandConfig{oaCreate: {ShadowPrefix: "slow"}}
	})
	records := subscribe(t, tb.nc, "timbus.audit.>")
	decider(t, tb.nc, decideOA, replyWith(oaCreateDeny))
	decider(t, tb.nc, "slow.decide.>", func(*nats.Msg) *nats.Msg {
		time.Sleep(600 * time.Millisecond)
		return &nats.Msg{Data: []byte(oaCreateDeny)}
	})
	got := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate))
	if got.body != oaCreateDeny || got.elapsed > 150*time.Millisecond {
		t.Errorf("answer %s after %v: the shadow held it up", got.body, got.elapsed)
	}
	// The group command has no shadow configured.
	post(t, tb.callbackURL("Group.CallbackBeforeCreateGroup"), sample(t, "Group.CallbackBeforeCreateGroup"))
	var recs []protocol.AuditRecord
	waitFor(t, 3*time.Second, func() error {
		if recs = auditRecords(t, records); len(recs) != 2 {
			return fmt.Errorf("%d records", len(recs))
		}
		return nil
	})
	for _, r := range recs {
		switch r.Command {
		case oaCreate:
			if r.ShadowOutcome != "timeout" || r.Agrees == nil || *r.Agrees || *r.ShadowCode != 0 {
				t.Errorf("slow shadow record: %+v", r)
			}
		default:
			if r.ShadowOutcome != "" || r.Agrees != nil {
				t.Errorf("unshadowed command has shadow fields: %+v", r)
			}
		}
	}
}

// TestBridge_LateReply: a reply after the default was sent is recorded as
// late, with the verdict the decider would have given.
func TestBridge_LateReply(t *testing.T) {
	tb := startBridge(t, func(c *Config) { c.Timeout = 200 * time.Millisecond })
	records := subscribe(t, tb.nc, "timbus.audit.>")
	decider(t, tb.nc, decideOA, func(*nats.Msg) *nats.Msg {
		time.Sleep(400 * time.Millisecond)
		return &nats.Msg{Data: []byte(oaCreateDeny)}
	})
	if got := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate)); got.body != allowAnswer {
		t.Fatalf("answer %s", got.body)
	}
	var recs []protocol.AuditRecord
	waitFor(t, 3*time.Second, func() error {
		if recs = auditRecords(t, records); len(recs) != 2 {
			return fmt.Errorf("%d records", len(recs))
		}
		return nil
	})
	first, late := recs[0], recs[1]
	if first.Outcome != "timeout" || first.Code != 0 {
		t.Errorf("first record %+v", first)
	}
	if late.Outcome != "late" || late.Code != 120005 || string(late.Answer) != oaCreateDeny || late.RequestID != first.RequestID ||
		late.LatencyMS < 400 || !strings.Contains(late.Reason, "after the deadline") {
		t.Errorf("late record %+v", late)
	}
}
