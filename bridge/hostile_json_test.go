package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders"
	"github.com/timbus-dev/timbus/deciders/protocol"
)

// nested returns a body for oaCreate whose "Deep" member takes it to depth
// levels of nesting, the body itself being the first.
func nested(depth int) []byte {
	return []byte(`{"CallbackCommand":"` + oaCreate + `","Name":"nested","Deep":` +
		strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + `}`)
}

// TestHostile_Bodies: a body that decoders could read otherwise than
// timbus does, or that no decider should have to parse, is refused with 400
// before any decider sees it; the next callback still gets its decider's
// verdict.
func TestHostile_Bodies(t *testing.T) {
	tb := startBridge(t, nil)
	var asked atomic.Int64
	d, err := deciders.New(tb.nc, deciders.Config{Name: "names", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	err = d.Handle(oaCreate, func(_ context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
		asked.Add(1)
		f, err := cb.Fields()
		if err != nil {
			return deciders.Verdict{}, err
		}
		if f.CallbackCommand != oaCreate {
			return deciders.DenyWith(120001, "fooled: "+f.CallbackCommand), nil
		}
		if f.Name == "admin" {
			return deciders.DenyWith(120005, "name reserved"), nil
		}
		return deciders.Allow(), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	const other = "Group.CallbackBeforeSendMsg"
	tests := []struct {
		name   string
		body   string
		status int
		reason string // the rejection reason; "" for a decided callback
		info   string // in ErrorInfo, or the decided ErrorCode's text
	}{
		{"escaped CallbackCommand after the real one",
			`{"CallbackCommand":"` + oaCreate + `","Callback\u0043ommand":"` + other + `","Name":"x"}`,
			400, "invalid_body", `duplicate key "CallbackCommand" (written "Callback\u0043ommand")`},
		{"escaped CallbackCommand before the real one",
			`{"Callback\u0043ommand":"` + other + `","CallbackCommand":"` + oaCreate + `","Name":"x"}`,
			400, "invalid_body", `duplicate key "CallbackCommand"`},
		{"escaped CallbackCommand alone, naming another command",
			`{"Callback\u0043ommand":"` + other + `","Name":"x"}`, 400, "command_mismatch", other},
		{"CallbackCommand in another case", `{"CallbackCommand":"` + oaCreate + `","callbackcommand":"` + other + `"}`,
			400, "invalid_body", `only in case`},
		{"CallbackCommand with a NUL", `{"CallbackCommand\u0000":"` + other + `","CallbackCommand":"` + oaCreate + `"}`,
			400, "invalid_body", `NUL`},
		{"any key twice", `{"CallbackCommand":"` + oaCreate + `","Name":"admin","N\u0061me":"alice"}`,
			400, "invalid_body", `duplicate key "Name"`},
		{"invalid UTF-8 in a value", `{"CallbackCommand":"` + oaCreate + `","Name":"ad` + "\xff" + `min"}`,
			400, "invalid_body", "not valid UTF-8"},
		{"invalid UTF-8 in a key", `{"CallbackCommand":"` + oaCreate + `","Na` + "\xc0\xae" + `me":"x"}`,
			400, "invalid_body", "not valid UTF-8"},
		{"an unpaired surrogate escape", `{"CallbackCommand":"` + oaCreate + `","Name":"\udc00admin"}`,
			400, "invalid_body", "surrogate"},
		{"65 levels", string(nested(65)), 400, "invalid_body", "nested deeper than the limit of 64 levels"},
		{"64 levels", string(nested(64)), 200, "", ""},
		{"10 levels", string(nested(10)), 200, "", ""},
		{"a surrogate pair", `{"CallbackCommand":"` + oaCreate + `","Name":"\ud83d\ude00"}`, 200, "", ""},
	}
	normal := []byte(`{"CallbackCommand":"` + oaCreate + `","Name":"admin"}`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := asked.Load()
			got := post(t, tb.callbackURL(oaCreate), []byte(tt.body))
			var answer struct {
				ErrorCode int
				ErrorInfo string
				Reason    string
			}
			if err := json.Unmarshal([]byte(got.body), &answer); err != nil {
				t.Fatalf("answer %q: %v", got.body, err)
			}
			if got.status != tt.status || answer.Reason != tt.reason || !strings.Contains(answer.ErrorInfo, tt.info) {
				t.Fatalf("answer = %d %s; want %d, reason %q, ErrorInfo with %q", got.status, got.body, tt.status, tt.reason, tt.info)
			}
			if tt.status == 200 && answer.ErrorCode != 0 {
				t.Fatalf("decided %s, want the decider's allow", got.body)
			}
			// A refused body was never published: the decider, which takes
			// requests in order, sees the next callback and nothing before it.
			got = post(t, tb.callbackURL(oaCreate), normal)
			if err := json.Unmarshal([]byte(got.body), &answer); err != nil || got.status != 200 || answer.ErrorCode != 120005 {
				t.Fatalf("the next callback got %d %s, want the decider's 120005", got.status, got.body)
			}
			want := before + 1
			if tt.status == 200 {
				want++
			}
			if n := asked.Load(); n != want {
				t.Fatalf("the decider was asked %d times, want %d", n-before, want-before)
			}
		})
	}
}

// TestHostile_Replies: a decider's reply that Tencent's decoder could
// read otherwise than timbus does is invalid: Tencent gets the default
// verdict, and the audit record says invalid_reply and why. The next
// callback still gets its decider's verdict.
func TestHostile_Replies(t *testing.T) {
	tb := startBridge(t, nil)
	records := subscribe(t, tb.nc, "timbus.audit."+testApp+".>")
	tests := []struct {
		name   string
		reply  string
		reason string
	}{
		{"escaped ErrorCode after the real one", `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","Error\u0043ode":999999}`,
			`duplicate key "ErrorCode" (written "Error\u0043ode")`},
		{"escaped ErrorCode before the real one", `{"Error\u0043ode":999999,"ActionStatus":"OK","ErrorCode":0}`, `duplicate key "ErrorCode"`},
		{"escaped ActionStatus", `{"ActionStatus":"OK","ErrorCode":0,"Action\u0053tatus":"FAIL"}`, `duplicate key "ActionStatus"`},
		{"escaped MsgBody on a command that may not modify",
			`{"ActionStatus":"OK","ErrorCode":0,"Msg\u0042ody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"x"}}]}`,
			`"MsgBody" is not a reply field of this command`},
		{"ErrorCode in another case", `{"ActionStatus":"OK","ErrorCode":0,"errorcode":120005}`, `"errorcode" differs from "ErrorCode" only in case`},
		{"any key twice", `{"ActionStatus":"OK","ErrorCode":0,"Note":1,"Note":2}`, `duplicate key "Note"`},
		{"invalid UTF-8", `{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":"` + "\xff" + `"}`, "not valid UTF-8"},
		{"an unpaired surrogate escape", `{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":"\ud800"}`, "surrogate"},
		{"65 levels", `{"ActionStatus":"OK","ErrorCode":1,"Deep":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `}`,
			"nested deeper than the limit of 64 levels"},
	}
	decider(t, tb.nc, decideOA, func(m *nats.Msg) *nats.Msg {
		var body struct{ Name string }
		_ = json.Unmarshal(m.Data, &body)
		for i, tt := range tests {
			if body.Name == fmt.Sprint("case-", i) {
				return &nats.Msg{Data: []byte(tt.reply)}
			}
		}
		return &nats.Msg{Data: []byte(oaCreateDeny)}
	})
	// record waits for the audit record of the callback whose body names name.
	record := func(t *testing.T, name string) protocol.AuditRecord {
		t.Helper()
		var found protocol.AuditRecord
		waitFor(t, 5*time.Second, func() error {
			for _, r := range auditRecords(t, records) {
				if strings.Contains(string(r.Body), `"Name":"`+name+`"`) {
					found = r
					return nil
				}
			}
			return fmt.Errorf("no audit record for %s", name)
		})
		return found
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprint("case-", i)
			got := post(t, tb.callbackURL(oaCreate), []byte(`{"CallbackCommand":"`+oaCreate+`","Name":"`+name+`"}`))
			if got.status != http.StatusOK || got.body != allowAnswer {
				t.Errorf("answer = %d %s, want the default %s", got.status, got.body, allowAnswer)
			}
			if r := record(t, name); r.Outcome != string(protocol.OutcomeInvalidReply) || !strings.Contains(r.Reason, tt.reason) {
				t.Errorf("audit record: outcome %s, reason %q; want invalid_reply with %q", r.Outcome, r.Reason, tt.reason)
			}
			next := fmt.Sprint("next-", i)
			got = post(t, tb.callbackURL(oaCreate), []byte(`{"CallbackCommand":"`+oaCreate+`","Name":"`+next+`"}`))
			if got.status != http.StatusOK || got.body != oaCreateDeny {
				t.Errorf("the next callback got %d %s, want the decider's %s", got.status, got.body, oaCreateDeny)
			}
			if r := record(t, next); r.Outcome != string(protocol.OutcomeDecided) {
				t.Errorf("the next callback's outcome = %s, want decided", r.Outcome)
			}
		})
	}
	counts := outcomeCounts(t, tb, oaCreate)
	if counts[string(protocol.OutcomeInvalidReply)] != len(tests) || counts[string(protocol.OutcomeDecided)] != len(tests) {
		t.Errorf("/metrics outcomes = %v, want %d invalid_reply and %d decided", counts, len(tests), len(tests))
	}
}
