package bridge

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestBridge_LogCallbacks sends a decided, a defaulted, a published and a
// refused callback, and a reply that comes late, under each policy, and
// reads which of them got a log line.
func TestBridge_LogCallbacks(t *testing.T) {
	const groupCreate = "Group.CallbackBeforeCreateGroup"
	tests := []struct {
		policy CallbackLog
		want   []string // outcomes with a line, sorted
	}{
		{LogCallbacksFailures, []string{"late", "no_deciders", "rejected", "timeout"}},
		{"", []string{"late", "no_deciders", "rejected", "timeout"}}, // the zero value is failures
		{LogCallbacksAll, []string{"decided", "late", "no_deciders", "published", "rejected", "timeout"}},
		{LogCallbacksNone, nil},
	}
	for _, tt := range tests {
		t.Run(string(tt.policy)+"_", func(t *testing.T) {
			tb := startBridge(t, func(c *Config) {
				c.LogCallbacks = tt.policy
				c.Commands = map[string]CommandConfig{"C2C.CallbackBeforeSendMsg": {Timeout: 100 * time.Millisecond}}
			})
			decider(t, tb.nc, decideOA, replyWith(oaCreateDeny))
			late := make(chan struct{})
			decider(t, tb.nc, "timbus.decide."+testApp+".C2C.CallbackBeforeSendMsg", func(m *nats.Msg) *nats.Msg {
				<-late // answers only once the bridge has sent the default
				return &nats.Msg{Data: []byte(allowAnswer)}
			})

			audit := subscribe(t, tb.nc, "timbus.audit.>")

			post(t, tb.callbackURL(oaCreate), sample(t, oaCreate))                                       // decided
			post(t, tb.callbackURL(groupCreate), sample(t, groupCreate))                                 // no_deciders
			post(t, tb.callbackURL("Alert.RequestOverLimit"), sample(t, "Alert.RequestOverLimit"))       // published
			post(t, tb.base+"/?SdkAppid=1400009999&CallbackCommand="+oaCreate, sample(t, oaCreate))      // rejected
			post(t, tb.callbackURL("C2C.CallbackBeforeSendMsg"), sample(t, "C2C.CallbackBeforeSendMsg")) // timeout
			close(late)
			// The late reply's line, if any, is written before its audit
			// record is published, which every policy does.
			waitFor(t, 5*time.Second, func() error {
				for _, m := range audit.all() {
					var r struct{ Outcome string }
					if json.Unmarshal(m.Data, &r) == nil && r.Outcome == "late" {
						return nil
					}
				}
				return errNotYet
			})
			if got := loggedOutcomes(tb); !slices.Equal(got, tt.want) {
				t.Errorf("logged outcomes %v, want %v", got, tt.want)
			}
		})
	}
}

// loggedOutcomes returns the outcomes of the per-callback log lines so far,
// sorted.
func loggedOutcomes(tb *testBridge) []string {
	var out []string
	for _, l := range tb.logs.lines() {
		var m struct{ Outcome string }
		if json.Unmarshal([]byte(l), &m) == nil && m.Outcome != "" {
			out = append(out, m.Outcome)
		}
	}
	slices.Sort(out)
	return out
}
