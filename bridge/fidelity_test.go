package bridge

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/samples"
)

// TestBridge_ReplySamples: each documented reply (message rewrite, partial
// refusals, per-user Sns results, chatbot data) reaches Tencent byte for byte.
func TestBridge_ReplySamples(t *testing.T) {
	tb := startBridge(t, nil)
	replies := samples.Replies()
	if len(replies) < 6 {
		t.Fatalf("%d reply samples", len(replies))
	}
	for _, s := range replies {
		command, reply := s.Command, s.Body
		t.Run(s.Name, func(t *testing.T) {
			sub := decider(t, tb.nc, "timbus.decide."+testApp+"."+command, replyWith(string(reply)))
			defer sub.Unsubscribe()
			got := post(t, tb.callbackURL(command), []byte(`{"CallbackCommand":"`+command+`"}`))
			if got.status != 200 || got.body != string(reply) {
				t.Errorf("answer = %d %s\nwant %s", got.status, got.body, reply)
			}
			if o := tb.lastCallbackLog(t)["outcome"]; o != string(protocol.OutcomeDecided) {
				t.Errorf("outcome %v", o)
			}
		})
	}
}

// TestBridge_Fidelity: what Tencent really sends is accepted and forwarded
// unchanged.
func TestBridge_Fidelity(t *testing.T) {
	tb := startBridge(t, nil)
	events := subscribe(t, tb.nc, "timbus.event.>")
	tests := []struct {
		name, query string
		body        []byte
		headers     map[string]string // "" means absent
	}{
		{"moderation result without CallbackCommand in the body",
			"SdkAppid=" + testApp + "&CallbackCommand=ContentCallback.ResultNotify&contenttype=json",
			[]byte(`{"EventType":"ResultNotify","Result":{"Label":"Normal"}}`),
			map[string]string{protocol.HeaderClientIP: "", protocol.HeaderOptPlatform: ""}},
		{"StateChange with upper-case IOS",
			"SdkAppid=" + testApp + "&CallbackCommand=State.StateChange&contenttype=json&ClientIP=1.2.3.4&OptPlatform=IOS",
			[]byte(`{"CallbackCommand":"State.StateChange","Info":{"Action":"Login","To_Account":"u1","Reason":"Register"},"EventTime":1670574414123}`),
			map[string]string{protocol.HeaderOptPlatform: "IOS"}},
		{"macOS platform and UTF-8 text",
			"SdkAppid=" + testApp + "&CallbackCommand=C2C.CallbackAfterSendMsg&contenttype=json&ClientIP=1.2.3.4&OptPlatform=macOS",
			[]byte(`{"CallbackCommand":"C2C.CallbackAfterSendMsg","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"你好，世界 🌏 émoji"}}],"EventTime":"1670574414123"}`),
			map[string]string{protocol.HeaderOptPlatform: "macOS"}},
		{"push callback with seconds and no platform",
			"SdkAppid=" + testApp + "&CallbackCommand=Push.OfflinePush&contenttype=json",
			[]byte(`{"CallbackCommand":"Push.OfflinePush","Events":[{"EventTime":1670574414}]}`),
			map[string]string{protocol.HeaderOptPlatform: ""}},
		{"newer SDKAppID spelling", "SDKAppID=" + testApp + "&CallbackCommand=Group.CallbackAfterNewMemberJoin&contenttype=json",
			sample(t, "Group.CallbackAfterNewMemberJoin"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(events.all())
			got := post(t, tb.base+"/?"+tt.query, tt.body)
			if got.status != 200 || got.body != allowAnswer {
				t.Fatalf("answer %d %s", got.status, got.body)
			}
			var m *nats.Msg
			waitFor(t, 2*time.Second, func() error {
				if all := events.all(); len(all) > n {
					m = all[n]
					return nil
				}
				return errNotYet
			})
			if !bytes.Equal(m.Data, tt.body) {
				t.Errorf("body changed: %s", m.Data)
			}
			for k, v := range tt.headers {
				if got, ok := m.Header[k]; v == "" && ok || v != "" && m.Header.Get(k) != v {
					t.Errorf("header %s = %v, want %q", k, got, v)
				}
			}
		})
	}
}

// TestBridge_PerUserDefault: with a deny default, an Sns command nobody
// decides refuses each requested user, as Tencent ignores a top-level code.
func TestBridge_PerUserDefault(t *testing.T) {
	tb := startBridge(t, func(c *Config) { c.Default = Deny })
	got := post(t, tb.callbackURL("Sns.CallbackPrevFriendResponse"), sample(t, "Sns.CallbackPrevFriendResponse"))
	want := `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"ResultItem":[{"To_Account":"id1","ResultCode":1,"ResultInfo":""},{"To_Account":"id2","ResultCode":1,"ResultInfo":""}]}`
	if got.body != want {
		t.Errorf("answer %s\nwant   %s", got.body, want)
	}
}

// TestBridge_FireAndForget: a before command switched to fire-and-forget is
// published as an event and answered with its default at once.
func TestBridge_FireAndForget(t *testing.T) {
	tb := startBridge(t, func(c *Config) {
		c.Commands = map[string]CommandConfig{"Group.CallbackBeforeSendMsg": {FireAndForget: true}}
	})
	events := subscribe(t, tb.nc, "timbus.event.>")
	decider(t, tb.nc, "timbus.decide.>", replyWith(denyAnswer))
	got := post(t, tb.callbackURL("Group.CallbackBeforeSendMsg"), sample(t, "Group.CallbackBeforeSendMsg"))
	if got.body != allowAnswer {
		t.Errorf("answer %s", got.body)
	}
	waitFor(t, 2*time.Second, func() error {
		if all := events.all(); len(all) != 1 || all[0].Subject != "timbus.event."+testApp+".Group.CallbackBeforeSendMsg" {
			return fmt.Errorf("events %d", len(all))
		}
		return nil
	})
}
