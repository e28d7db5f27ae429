package bridge

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// afterCommand is the after callback the event tests send.
const afterCommand = "Group.CallbackAfterSendMsg"

// afterBody is afterCommand's documented sample with a marker field, so
// that a subscriber can tell the events apart.
func afterBody(t testing.TB, mark string) []byte {
	t.Helper()
	body := sample(t, afterCommand)
	i := strings.IndexByte(string(body), '{')
	if i < 0 {
		t.Fatalf("sample %s is not an object", body)
	}
	return []byte(string(body[:i+1]) + `"TestMark":"` + mark + `",` + string(body[i+1:]))
}

var testMark = regexp.MustCompile(`"TestMark":"([^"]*)"`)

// marksIn returns the TestMark of every event c captured.
func marksIn(c *capture) map[string]bool {
	marks := map[string]bool{}
	for _, m := range c.all() {
		if sub := testMark.FindSubmatch(m.Data); sub != nil {
			marks[string(sub[1])] = true
		}
	}
	return marks
}

// TestHostile_AfterCallbacksNATSDown: an after callback's 200
// promises that the event reached NATS. With the external NATS server
// stopped, callbacks sent before the bridge shuts down (as on SIGTERM) must
// each get a 503, so that Tencent retries, or be delivered once NATS is
// back: none may be acknowledged and then lost. The callbacks go out once
// the bridge has seen the outage, and at once, while it may still think
// itself connected. With NATS back, every 200 means the subscriber has the
// event.
func TestHostile_AfterCallbacksNATSDown(t *testing.T) {
	for _, tt := range []struct {
		name        string
		awaitOutage bool
	}{
		{"bridge saw the outage", true},
		{"right after the outage", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			port := freePort(t)
			ns := runNATSOn(t, port)
			url := ns.ClientURL()
			first := runBridge(t, url, func(c *Config) { c.Timeout = 500 * time.Millisecond })
			c := newCaller(true)
			defer c.closeIdle()
			callback := first.base + "/?SdkAppid=" + testApp + "&CallbackCommand=" + afterCommand
			if r := c.post(callback, afterBody(t, "before-outage")); r.err != nil || r.status != http.StatusOK {
				t.Fatalf("with NATS up: %d %q %v", r.status, r.body, r.err)
			}

			stopNATS(ns)
			if tt.awaitOutage {
				waitFor(t, 5*time.Second, func() error {
					if first.Bridge.nc.IsConnected() {
						return errNotYet
					}
					return nil
				})
			}
			acknowledged := map[string]bool{}
			for i := range 5 {
				mark := fmt.Sprintf("outage-%d", i)
				r := c.post(callback, afterBody(t, mark))
				switch {
				case r.err != nil:
					t.Fatalf("callback %s: %v", mark, r.err)
				case r.status == http.StatusOK:
					acknowledged[mark] = true
				case r.status != http.StatusServiceUnavailable:
					t.Errorf("callback %s: %d %q, want 200 or 503", mark, r.status, r.body)
				}
				if r.elapsed > first.cfg.Timeout+answerSlack {
					t.Errorf("callback %s answered after %v", mark, r.elapsed)
				}
			}
			// As on SIGTERM. With NATS away it gives up the held audit
			// records and says so; that is not the point here.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = first.Shutdown(ctx)

			ns = runNATSOn(t, port)
			events := subscribe(t, natsConnect(t, ns.ClientURL()), "timbus.event.>")
			second := runBridge(t, url, nil)
			waitFor(t, 5*time.Second, func() error {
				if !second.Bridge.nc.IsConnected() {
					return errNotYet
				}
				return nil
			})
			callback = second.base + "/?SdkAppid=" + testApp + "&CallbackCommand=" + afterCommand
			for i := range 5 {
				mark := fmt.Sprintf("after-outage-%d", i)
				r := c.post(callback, afterBody(t, mark))
				if r.err != nil || r.status != http.StatusOK {
					t.Fatalf("callback %s with NATS back: %d %q %v", mark, r.status, r.body, r.err)
				}
				// Answered 200: the server has it, so the subscriber gets it.
				waitFor(t, 2*time.Second, func() error {
					if !marksIn(events)[mark] {
						return fmt.Errorf("event %s acknowledged but not delivered", mark)
					}
					return nil
				})
			}
			// The first bridge is gone: whatever it was to deliver has arrived.
			got := marksIn(events)
			for mark := range acknowledged {
				if !got[mark] {
					t.Errorf("callback %s was answered 200 during the outage and then lost", mark)
				}
			}
			t.Logf("during the outage %d of 5 callbacks were answered 200, the others 503", len(acknowledged))
		})
	}
}

// TestFault_AuditHeldThroughOutageWithoutStream: without an audit stream,
// records of callbacks answered while NATS is away wait in the bridge (the
// NATS client keeps no reconnect buffer) and are published once it is back;
// none fails.
func TestFault_AuditHeldThroughOutageWithoutStream(t *testing.T) {
	port := freePort(t)
	ns := runNATSOn(t, port)
	tb := runBridge(t, ns.ClientURL(), func(c *Config) { c.Timeout = 300 * time.Millisecond })
	c := newCaller(true)
	defer c.closeIdle()
	stopNATS(ns)
	waitFor(t, 5*time.Second, func() error {
		if tb.Bridge.nc.IsConnected() {
			return errNotYet
		}
		return nil
	})
	const n = 5
	for range n {
		if r := c.post(tb.callbackURL(oaCreate), sample(t, oaCreate)); r.err != nil || r.status != http.StatusOK {
			t.Fatalf("before callback with NATS down: %d %q %v", r.status, r.body, r.err)
		}
	}
	ns = runNATSOn(t, port)
	// Once NATS is back every held record goes out, or, once a probe
	// learnt that nobody subscribes (hearing), is counted unheard: none is
	// lost to the outage.
	waitFor(t, 10*time.Second, func() error {
		if got, unheard := tb.audit.published.Load(), tb.audit.unheard.Load(); got+unheard != n || got == 0 {
			return fmt.Errorf("%d of %d audit records published, %d unheard", got, n, unheard)
		}
		return nil
	})
	if f := tb.audit.failed.Load(); f != 0 {
		t.Errorf("%d audit records failed", f)
	}
}
