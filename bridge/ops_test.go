package bridge

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/timbus-dev/timbus/deciders/protocol"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue finds one sample's value in Prometheus text output.
func metricValue(t *testing.T, text, series string) string {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, series+" ") {
			return strings.TrimPrefix(line, series+" ")
		}
	}
	return ""
}

func TestBridge_Metrics(t *testing.T) {
	tb := startBridge(t, nil)
	decider(t, tb.nc, decideOA, replyWith(oaCreateDeny))
	for i := 0; i < 3; i++ {
		post(t, tb.callbackURL(oaCreate), sample(t, oaCreate))
	}
	post(t, tb.callbackURL("Group.CallbackBeforeCreateGroup"), sample(t, "Group.CallbackBeforeCreateGroup"))
	post(t, tb.callbackURL("Group.CallbackAfterNewMemberJoin"), sample(t, "Group.CallbackAfterNewMemberJoin"))
	post(t, tb.base+"/?SdkAppid=7&CallbackCommand="+oaCreate, sample(t, oaCreate))

	status, text := get(t, tb.base+PathMetrics)
	if status != 200 {
		t.Fatalf("/metrics: %d", status)
	}
	for series, want := range map[string]string{
		`timbus_callbacks_total{command="` + oaCreate + `",outcome="decided",sdkappid="` + testApp + `"}`:                    "3",
		`timbus_callbacks_total{command="Group.CallbackBeforeCreateGroup",outcome="no_deciders",sdkappid="` + testApp + `"}`: "1",
		`timbus_callbacks_total{command="Group.CallbackAfterNewMemberJoin",outcome="published",sdkappid="` + testApp + `"}`:  "1",
		`timbus_rejected_total{reason="unknown_sdkappid"}`:                                                                   "1",
		`timbus_decision_seconds_count{command="` + oaCreate + `",sdkappid="` + testApp + `"}`:                               "3",
		`timbus_nats_connected`: "1",
		`timbus_inflight`:       "0",
		`timbus_ready`:          "1",
	} {
		if got := metricValue(t, text, series); got != want {
			t.Errorf("%s = %q, want %s", series, got, want)
		}
	}
}

func TestBridge_HealthAndReadiness(t *testing.T) {
	tb := startBridge(t, nil)
	if status, body := get(t, tb.base+PathHealth); status != 200 || !strings.Contains(body, "ok") {
		t.Errorf("/healthz: %d %s", status, body)
	}
	if status, body := get(t, tb.base+PathReady); status != 200 || body != `{"ready":true}` {
		t.Errorf("/readyz: %d %s", status, body)
	}
	tb.ns.Shutdown()
	waitFor(t, 5*time.Second, func() error {
		if status, _ := get(t, tb.base+PathReady); status != 503 {
			return errNotYet
		}
		return nil
	})
	_, body := get(t, tb.base+PathReady)
	var ready struct {
		Ready   bool
		Reasons []string
	}
	if err := json.Unmarshal([]byte(body), &ready); err != nil || ready.Ready || len(ready.Reasons) == 0 || !strings.Contains(ready.Reasons[0], "NATS not connected") {
		t.Errorf("/readyz with NATS down: %s", body)
	}
	if status, _ := get(t, tb.base+PathHealth); status != 200 {
		t.Errorf("/healthz with NATS down: %d; the process is alive", status)
	}
}

// TestBridge_RequireDeciders: with --require-deciders, the bridge is ready
// only while every configured before command has a live, discoverable
// decider.
func TestBridge_RequireDeciders(t *testing.T) {
	tb := startBridge(t, func(c *Config) {
		c.RequireDeciders = true
		c.RegistryInterval = 100 * time.Millisecond
		c.Commands = map[string]CommandConfig{oaCreate: {}}
	})
	readiness := func() string { _, body := get(t, tb.base+PathReady); return body }
	waitFor(t, 3*time.Second, func() error {
		if !strings.Contains(readiness(), "no live decider for "+oaCreate) {
			return errNotYet
		}
		return nil
	})
	svc, err := micro.AddService(tb.nc, micro.Config{Name: "names", Version: "1.0.0", QueueGroup: "names"})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	if err := svc.AddEndpoint("create", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond([]byte(oaCreateDeny)) }),
		micro.WithEndpointSubject("timbus.decide.*.OfficialAccount.>")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, func() error {
		if readiness() != `{"ready":true}` {
			return errNotYet
		}
		return nil
	})
	_, text := get(t, tb.base+PathMetrics)
	if got := metricValue(t, text, `timbus_deciders{command="`+oaCreate+`",sdkappid="`+testApp+`"}`); got != "1" {
		t.Errorf("timbus_deciders for %s = %q", oaCreate, got)
	}
}

func TestBridge_MetricsListener(t *testing.T) {
	tb := startBridge(t, func(c *Config) { c.MetricsListen = "127.0.0.1:0" })
	if status, _ := get(t, "http://"+tb.OpsAddr()+PathMetrics); status != 200 {
		t.Errorf("metrics listener: %d", status)
	}
	if status, _ := get(t, tb.base+PathMetrics); status == 200 {
		t.Error("/metrics still served to Tencent's listener")
	}
}

// TestBridge_Shed: past max-inflight, callbacks get the default at once.
func TestBridge_Shed(t *testing.T) {
	tb := startBridge(t, func(c *Config) { c.MaxInflight = 2 })
	release := make(chan struct{})
	decider(t, tb.nc, decideOA, func(*nats.Msg) *nats.Msg {
		<-release
		return &nats.Msg{Data: []byte(oaCreateDeny)}
	})
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); post(t, tb.callbackURL(oaCreate), sample(t, oaCreate)) }()
	}
	waitFor(t, 2*time.Second, func() error {
		if tb.inflight.Load() != 2 {
			return errNotYet
		}
		return nil
	})
	got := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate))
	if got.body != allowAnswer || got.elapsed > 200*time.Millisecond {
		t.Errorf("over the cap: %s after %v, want the default at once", got.body, got.elapsed)
	}
	if o := tb.lastCallbackLog(t)["outcome"]; o != string(protocol.OutcomeShed) {
		t.Errorf("outcome %v", o)
	}
	close(release)
	wg.Wait()
}

// TestBridge_CircuitBreaker: deciders that keep timing out trip the breaker;
// callbacks then get the default at once until a probe succeeds.
func TestBridge_CircuitBreaker(t *testing.T) {
	tb := startBridge(t, func(c *Config) {
		c.Timeout = 100 * time.Millisecond
		c.Breaker = BreakerConfig{Enabled: true, Window: time.Minute, MinRequests: 3, FailureRatio: 0.5, Cooldown: 300 * time.Millisecond}
	})
	var mu sync.Mutex
	slow := true
	decider(t, tb.nc, decideOA, func(*nats.Msg) *nats.Msg {
		mu.Lock()
		s := slow
		mu.Unlock()
		if s {
			time.Sleep(200 * time.Millisecond)
		}
		return &nats.Msg{Data: []byte(oaCreateDeny)}
	})
	for i := 0; i < 3; i++ {
		post(t, tb.callbackURL(oaCreate), sample(t, oaCreate))
	}
	got := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate))
	if o := tb.lastCallbackLog(t)["outcome"]; o != string(protocol.OutcomeCircuitOpen) || got.elapsed > 50*time.Millisecond {
		t.Fatalf("after 3 timeouts: outcome %v after %v, want circuit_open at once", o, got.elapsed)
	}
	_, text := get(t, tb.base+PathMetrics)
	if v := metricValue(t, text, `timbus_circuit_open{command="`+oaCreate+`",sdkappid="`+testApp+`"}`); v != "1" {
		t.Errorf("timbus_circuit_open = %q", v)
	}
	mu.Lock()
	slow = false
	mu.Unlock()
	time.Sleep(350 * time.Millisecond) // the cool-down
	if got := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate)); got.body != oaCreateDeny {
		t.Errorf("probe after the cool-down: %s", got.body)
	}
	if got := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate)); got.body != oaCreateDeny {
		t.Errorf("after a good probe: %s; the breaker should be closed", got.body)
	}
}

// TestBridge_Traceparent: with --decide-headers all, decide requests carry
// the client IP, the platform and a traceparent.
func TestBridge_Traceparent(t *testing.T) {
	tb := startBridge(t, func(c *Config) { c.DecideHeaders = DecideHeadersAll })
	seen := make(chan string, 2)
	decider(t, tb.nc, decideOA, func(m *nats.Msg) *nats.Msg {
		var names []string
		for k := range m.Header {
			names = append(names, k)
		}
		sort.Strings(names)
		if got, want := strings.Join(names, ","), "Timbus-Client-Ip,Timbus-Opt-Platform,traceparent"; got != want {
			t.Errorf("headers %s, want %s", got, want)
		}
		if m.Header.Get(protocol.HeaderClientIP) != "10.0.0.7" || m.Header.Get(protocol.HeaderOptPlatform) != "RESTAPI" {
			t.Errorf("headers %v", m.Header)
		}
		seen <- m.Header.Get(HeaderTraceparent)
		return &nats.Msg{Data: []byte(oaCreateDeny)}
	})
	const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	req, _ := http.NewRequest("POST", tb.callbackURL(oaCreate), strings.NewReader(string(sample(t, oaCreate))))
	req.Header.Set("traceparent", incoming)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	child := <-seen
	if !strings.HasPrefix(child, incoming[:36]) || !strings.HasSuffix(child, "-01") || child == incoming || !validTraceparent([]byte(child)) {
		t.Errorf("child of %s: %s", incoming, child)
	}
	post(t, tb.callbackURL(oaCreate), sample(t, oaCreate))
	if fresh := <-seen; !validTraceparent([]byte(fresh)) || strings.HasPrefix(fresh, incoming[:36]) {
		t.Errorf("new trace: %s", fresh)
	}
	for _, bad := range []string{"", "00-abc", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"} {
		if validTraceparent([]byte(bad)) {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestBridge_DrainDelay: Shutdown reports not ready first and keeps serving
// callbacks during the delay.
func TestBridge_DrainDelay(t *testing.T) {
	tb := startBridge(t, func(c *Config) { c.DrainDelay = 400 * time.Millisecond })
	decider(t, tb.nc, decideOA, replyWith(oaCreateDeny))
	done := make(chan error, 1)
	go func() { done <- tb.Shutdown(context.Background()) }()
	waitFor(t, 2*time.Second, func() error {
		if status, _ := get(t, tb.base+PathReady); status != 503 {
			return errNotYet
		}
		return nil
	})
	if got := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate)); got.body != oaCreateDeny {
		t.Errorf("during the drain delay: %d %s", got.status, got.body)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestBridge_LogLevels: one info line per callback, whatever its outcome,
// and none at warn level.
func TestBridge_LogLevels(t *testing.T) {
	tb := startBridge(t, nil)
	decider(t, tb.nc, decideOA, replyWith(`garbage`))
	post(t, tb.callbackURL(oaCreate), sample(t, oaCreate))                                                   // invalid_reply
	post(t, tb.callbackURL("Group.CallbackBeforeCreateGroup"), sample(t, "Group.CallbackBeforeCreateGroup")) // no_deciders
	post(t, tb.base+"/?SdkAppid=9&CallbackCommand="+oaCreate, sample(t, oaCreate))                           // rejected
	var perCallback int
	waitFor(t, 2*time.Second, func() error {
		perCallback = 0
		for _, l := range tb.logs.lines() {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil || m["outcome"] == nil {
				continue
			}
			perCallback++
			if m["level"] != "info" {
				t.Errorf("per-callback line at %v: %s", m["level"], l)
			}
		}
		if perCallback != 3 {
			return errNotYet
		}
		return nil
	})
}

// TestBridge_IdleConnection: a connection that sends nothing is closed after
// the read timeout and counted, without an audit record or a log line.
func TestBridge_IdleConnection(t *testing.T) {
	tb := startBridge(t, func(c *Config) { c.ReadTimeout = 200 * time.Millisecond })
	records := subscribe(t, tb.nc, "timbus.audit.>")
	conn, err := net.Dial("tcp", tb.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, _ = io.ReadAll(conn) // until the bridge closes it
	_, text := get(t, tb.base+PathMetrics)
	if v := metricValue(t, text, `timbus_rejected_total{reason="read_timeout"}`); v != "1" {
		t.Errorf("read_timeout = %q", v)
	}
	if err := tb.nc.Publish("timbus.audit.marker", []byte("marker")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() error {
		if all := records.all(); len(all) == 0 || string(all[len(all)-1].Data) != "marker" {
			return errNotYet
		}
		return nil
	})
	if n := len(records.all()); n != 1 {
		t.Errorf("%d audit records for an idle connection", n-1)
	}
}
