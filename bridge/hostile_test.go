package bridge

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/timbus-dev/timbus/deciders/catalog"
	"github.com/timbus-dev/timbus/deciders/protocol"
)

// This file holds the hostile-client cases about what a stranger who can
// reach the callback port makes the bridge keep: series, routes, readiness,
// breaker state. Each case ends with a normal callback that must still get
// its decider's verdict.

// expectDecided sends a normal callback and fails unless the decider's
// verdict comes back.
func expectDecided(t *testing.T, tb *testBridge) {
	t.Helper()
	if got := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate)); got.status != http.StatusOK || got.body != oaCreateDeny {
		t.Errorf("a normal callback after the attack got %d %s, want the decider's %s", got.status, got.body, oaCreateDeny)
	}
}

// TestHostile_InventedNames: invented command names, half of them "before"
// names that wait for a decider, share one label value and are remembered
// only up to a bound. (cmd/timbus's TestHostileInventedNamesMemory sends
// 10,000 to the real binary and measures its memory.)
func TestHostile_InventedNames(t *testing.T) {
	tb := startBridge(t, nil)
	decider(t, tb.nc, decideOA, replyWith(oaCreateDeny))
	// An auditor listens, so no probe is answered "no responders" and
	// forgotten: each stays outstanding until its route's next probe.
	subscribe(t, tb.nc, "timbus.audit.>")
	const names = 1000
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer client.CloseIdleConnections()
	for n := 1; n <= names; n++ {
		name := fmt.Sprintf("Fam%d.CmdN%d", n, n)
		if n%2 == 0 {
			name = fmt.Sprintf("Fam%d.CallbackBeforeCmd%d", n, n)
		}
		url := tb.base + "/?SdkAppid=" + testApp + "&CallbackCommand=" + name + "&contenttype=json"
		resp, err := client.Post(url, "application/json", strings.NewReader(`{"CallbackCommand":"`+name+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", name, resp.StatusCode)
		}
	}
	_, text := get(t, tb.base+PathMetrics)
	if strings.Contains(text, "Fam1.") || strings.Contains(text, "CallbackBeforeCmd") {
		t.Error("/metrics has a series named after an invented command")
	}
	total := 0
	for _, o := range []protocol.Outcome{protocol.OutcomePublished, protocol.OutcomeNoDeciders} {
		v, _ := strconv.Atoi(metricValue(t, text, `timbus_callbacks_total{command="`+OtherCommand+`",outcome="`+string(o)+`",sdkappid="`+testApp+`"}`))
		total += v
	}
	if total != names {
		t.Errorf("%d callbacks counted under command=%q, want %d", total, OtherCommand, names)
	}
	if n := tb.apps[testApp].unlistedCount.Load(); n > maxUnlisted {
		t.Errorf("%d unlisted names remembered, want at most %d", n, maxUnlisted)
	}
	// The audit probes (external NATS: hearing) keep state only for routes
	// that are remembered, not one per invented name.
	tb.auditSettled(t)
	tb.audit.hearing.mu.Lock()
	probes := len(tb.audit.hearing.probes)
	tb.audit.hearing.mu.Unlock()
	if limit := len(catalog.All()) + maxUnlisted; probes > limit {
		t.Errorf("%d audit probes outstanding after %d invented names, want at most %d", probes, names, limit)
	}
	expectDecided(t, tb)
}

// TestBridge_ConfiguredUnlistedCommandHasSeries: a command the catalogue
// lacks but the configuration names is the operator's, so it is counted
// under its own name.
func TestBridge_ConfiguredUnlistedCommandHasSeries(t *testing.T) {
	const name = "Future.CallbackBeforeSomething"
	tb := startBridge(t, func(c *Config) { c.Commands = map[string]CommandConfig{name: {}} })
	decider(t, tb.nc, "timbus.decide."+testApp+"."+name, replyWith(allowAnswer))
	if got := post(t, tb.callbackURL(name), []byte(`{"CallbackCommand":"`+name+`"}`)); got.body != allowAnswer {
		t.Fatalf("answer %d %s", got.status, got.body)
	}
	_, text := get(t, tb.base+PathMetrics)
	if got := metricValue(t, text, `timbus_callbacks_total{command="`+name+`",outcome="decided",sdkappid="`+testApp+`"}`); got != "1" {
		t.Errorf("decided callbacks of the configured command = %q, want 1", got)
	}
}

// TestHostile_ForgedCallbackKeepsReadiness: with required deciders all live,
// callbacks for before commands nobody serves — catalogued or invented,
// signed or not — leave the bridge ready.
func TestHostile_ForgedCallbackKeepsReadiness(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"commands section", func(c *Config) {
			c.RequireDeciders = true
			c.Commands = map[string]CommandConfig{oaCreate: {}}
		}},
		{"named commands", func(c *Config) { c.RequiredCommands = []string{oaCreate} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := startBridge(t, func(c *Config) {
				tt.mutate(c)
				c.RegistryInterval = 50 * time.Millisecond
			})
			readiness := func() string { _, body := get(t, tb.base+PathReady); return body }
			waitFor(t, 3*time.Second, func() error {
				if !strings.Contains(readiness(), "no live decider for "+oaCreate) {
					return errNotYet
				}
				return nil
			})
			serveNames(t, tb.nc)
			waitFor(t, 3*time.Second, func() error {
				if readiness() != `{"ready":true}` {
					return errNotYet
				}
				return nil
			})
			for _, forged := range []string{"Group.CallbackBeforeSendMsg", "Sns.CallbackPrevFriendAdd", "Fam.CallbackBeforeForged"} {
				if got := post(t, tb.callbackURL(forged), []byte(`{"CallbackCommand":"`+forged+`"}`)); got.status != http.StatusOK {
					t.Errorf("%s: %d %s", forged, got.status, got.body)
				}
			}
			// Two refreshes of the registry, so that a change would show.
			time.Sleep(150 * time.Millisecond)
			if got := readiness(); got != `{"ready":true}` {
				t.Errorf("forged callbacks took readiness away: %s", got)
			}
			expectDecided(t, tb)
		})
	}
}

// serveNames runs a NATS service deciding the OfficialAccount commands, so
// that the registry counts a live decider for them.
func serveNames(t *testing.T, nc *nats.Conn) {
	t.Helper()
	svc, err := micro.AddService(nc, micro.Config{Name: "names", Version: "1.0.0", QueueGroup: "names"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := svc.AddEndpoint("create", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond([]byte(oaCreateDeny)) }),
		micro.WithEndpointSubject("timbus.decide.*.OfficialAccount.>")); err != nil {
		t.Fatal(err)
	}
}

// TestHostile_BreakerNotOpenedByContent: bodies that make the decider
// report an error, or answer nonsense, about that one callback do not open
// the breaker; the next real callback still gets the decider's verdict.
func TestHostile_BreakerNotOpenedByContent(t *testing.T) {
	poison := []byte("poison")
	tests := []struct {
		name    string
		reply   func() *nats.Msg
		outcome protocol.Outcome
	}{
		{"decider error", func() *nats.Msg {
			m := nats.NewMsg("")
			m.Header.Set(protocol.HeaderServiceError, "cannot judge this body")
			m.Header.Set(protocol.HeaderServiceErrorCode, "400")
			return m
		}, protocol.OutcomeDeciderError},
		{"invalid reply", func() *nats.Msg { return &nats.Msg{Data: []byte(`{"ActionStatus":"OK","ErrorCode":5}`)} }, protocol.OutcomeInvalidReply},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := startBridge(t, func(c *Config) {
				c.Breaker = BreakerConfig{Enabled: true, Window: time.Minute, MinRequests: 5, FailureRatio: 0.5, Cooldown: time.Minute}
			})
			decider(t, tb.nc, decideOA, func(m *nats.Msg) *nats.Msg {
				if bytes.Contains(m.Data, poison) {
					return tt.reply()
				}
				return &nats.Msg{Data: []byte(oaCreateDeny)}
			})
			for i := 0; i < 25; i++ {
				if got := post(t, tb.callbackURL(oaCreate), oaBody("poison")); got.body != allowAnswer {
					t.Fatalf("poisoned callback %d: %s, want the default", i, got.body)
				}
			}
			if o := tb.lastCallbackLog(t)["outcome"]; o != string(tt.outcome) {
				t.Errorf("poisoned callbacks' outcome %v, want %s", o, tt.outcome)
			}
			expectDecided(t, tb)
			_, text := get(t, tb.base+PathMetrics)
			if got := metricValue(t, text, `timbus_circuit_open{command="`+oaCreate+`",sdkappid="`+testApp+`"}`); got != "0" {
				t.Errorf("timbus_circuit_open = %s", got)
			}
		})
	}
}
