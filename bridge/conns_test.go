package bridge

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestMaxConnsFor(t *testing.T) {
	for _, tc := range []struct {
		limit uint64
		want  int
	}{
		{256, 192},         // reserve 64
		{1024, 896},        // reserve 128 (limit/8)
		{4096, 3584},       // reserve 512
		{65536, 16384},     // 57344, held to the ceiling
		{1 << 20, 16384},   // common container limit
		{unlimited, 16384}, // RLIM_INFINITY
		{100, 50},          // the reserve never takes more than half
		{64, 32},           //
		{1, 1},             // always room for one
		{0, 1},             //
		{18723, 16383},     // just under the ceiling
		{18724, 16384},     // at it
		{1<<62 + 7, 16384}, // huge but finite
		{maxDefaultConns, 14336},
	} {
		if got := maxConnsFor(tc.limit); got != tc.want {
			t.Errorf("maxConnsFor(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
	if limit, ok := OpenFileLimit(); ok {
		if got := DefaultConfig().MaxConns; got != maxConnsFor(limit) {
			t.Errorf("DefaultConfig().MaxConns = %d, want %d for the open-file limit %d", got, maxConnsFor(limit), limit)
		}
	}
}

func TestConfig_ConnLimitsNotNegative(t *testing.T) {
	for _, tc := range []struct {
		field string
		set   func(*Config)
	}{
		{"max-conns", func(c *Config) { c.MaxConns = -1 }},
		{"max-conns-per-ip", func(c *Config) { c.MaxConnsPerIP = -5 }},
	} {
		cfg := DefaultConfig()
		cfg.Apps = []App{{ID: testApp}}
		tc.set(&cfg)
		err := cfg.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, ErrInvalidValue) || !strings.Contains(err.Error(), "0 (no cap) or more") {
			t.Errorf("%s negative: Validate() = %v, want a ConfigError for %s", tc.field, err, tc.field)
		}
	}
	cfg := DefaultConfig()
	cfg.Apps = []App{{ID: testApp}}
	cfg.MaxConns, cfg.MaxConnsPerIP = 0, 0
	if err := cfg.Validate(); err != nil {
		t.Errorf("no caps (0): %v", err)
	}
}

// TestHostile_ConnectionFlood: past MaxConns, a new connection gets 503 at once,
// counted, and is closed; once connections close, callbacks get through.
func TestHostile_ConnectionFlood(t *testing.T) {
	const maxConns, extra = 3, 2
	tb := startBridge(t, func(c *Config) { c.MaxConns = maxConns; c.MetricsListen = "127.0.0.1:0" })
	decider(t, tb.nc, decideOA, replyWith(oaCreateDeny))
	held := holdConns(t, &net.Dialer{}, tb.Addr(), maxConns)
	checkRefused(t, &net.Dialer{}, tb.Addr(), extra, 503, reasonTooManyConns)
	if n := tb.ln.deadlines.tracked(); n != maxConns {
		t.Errorf("the deadline sweeper tracks %d connections, want the %d admitted (refused ones cost it nothing)", n, maxConns)
	}
	checkMetrics(t, tb, map[string]string{
		`timbus_rejected_total{reason="too_many_conns"}`: fmt.Sprint(extra),
		`timbus_connections`:                             fmt.Sprint(maxConns),
	})
	// Readiness is about NATS and deciders: a full cap is load, not a fault.
	if status, body := get(t, "http://"+tb.OpsAddr()+PathReady); status != 200 {
		t.Errorf("/readyz with the cap reached: %d %s", status, body)
	}
	for _, c := range held {
		c.Close()
	}
	waitConnsClosed(t, tb)
	if a := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate)); a.status != 200 || a.body != oaCreateDeny {
		t.Errorf("callback after the connections closed: %d %s", a.status, a.body)
	}
}

// TestHostile_ConnectionFloodPerIP: past MaxConnsPerIP from one address, 429; other
// addresses still get in.
func TestHostile_ConnectionFloodPerIP(t *testing.T) {
	const perIP = 2
	tb := startBridge(t, func(c *Config) { c.MaxConnsPerIP = perIP; c.MetricsListen = "127.0.0.1:0" })
	decider(t, tb.nc, decideOA, replyWith(oaCreateDeny))
	held := holdConns(t, &net.Dialer{}, tb.Addr(), perIP)
	checkRefused(t, &net.Dialer{}, tb.Addr(), 1, 429, reasonTooManyConnsPerIP)
	// Linux routes all of 127.0.0.0/8 to the loopback: another address.
	other := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	refused := 1
	if c, err := other.Dial("tcp", tb.Addr()); err != nil {
		t.Logf("no second loopback address here (%v); not checking that other addresses get in", err)
	} else {
		first := &rawConn{Conn: c, r: bufio.NewReader(c)}
		t.Cleanup(func() { c.Close() })
		if resp := first.roundTrip(t, afterCallback(t)); resp.StatusCode != 200 {
			t.Fatalf("another address refused while the first is at its cap: %d %s", resp.StatusCode, bodyOf(resp))
		}
		held = append(held, first)
		held = append(held, holdConns(t, other, tb.Addr(), perIP-1)...)
		checkRefused(t, other, tb.Addr(), 1, 429, reasonTooManyConnsPerIP)
		refused++
	}
	checkMetrics(t, tb, map[string]string{
		`timbus_rejected_total{reason="too_many_conns_per_ip"}`: fmt.Sprint(refused),
		`timbus_rejected_total{reason="too_many_conns"}`:        "0",
	})
	for _, c := range held {
		c.Close()
	}
	waitConnsClosed(t, tb)
	if a := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate)); a.status != 200 || a.body != oaCreateDeny {
		t.Errorf("callback after the connections closed: %d %s", a.status, a.body)
	}
}

// holdConns opens n keep-alive connections, each having served a callback,
// so that the bridge counts them.
func holdConns(t *testing.T, d *net.Dialer, addr string, n int) []*rawConn {
	t.Helper()
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = dialRaw(t, d, addr)
		if resp := conns[i].roundTrip(t, afterCallback(t)); resp.StatusCode != 200 || resp.Close {
			t.Fatalf("connection %d: %d %s, close %v", i, resp.StatusCode, bodyOf(resp), resp.Close)
		}
	}
	return conns
}

// afterCallback is a request for an after callback, answered 200 once
// published.
func afterCallback(t *testing.T) string {
	const command = "Group.CallbackAfterNewMemberJoin"
	return postRequest("/?SdkAppid="+testApp+"&CallbackCommand="+command, string(sample(t, command)))
}

// checkRefused opens n connections that must each get status with reason at
// once, without sending anything, and be closed.
func checkRefused(t *testing.T, d *net.Dialer, addr string, n, status int, reason string) {
	t.Helper()
	for i := 0; i < n; i++ {
		c := dialRaw(t, d, addr)
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		resp := c.response(t)
		if resp.StatusCode != status || !strings.Contains(bodyOf(resp), `"Reason":"`+reason+`"`) || !resp.Close {
			t.Errorf("connection over the cap: %d, close %v, want %d with reason %s", resp.StatusCode, resp.Close, status, reason)
		}
		if !c.closedByServer() {
			t.Error("a refused connection was left open")
		}
	}
}

func checkMetrics(t *testing.T, tb *testBridge, want map[string]string) {
	t.Helper()
	_, text := get(t, "http://"+tb.OpsAddr()+PathMetrics)
	for series, value := range want {
		if got := metricValue(t, text, series); got != value {
			t.Errorf("%s = %q, want %s", series, got, value)
		}
	}
}

func waitConnsClosed(t *testing.T, tb *testBridge) {
	t.Helper()
	waitFor(t, 5*time.Second, func() error {
		if n := tb.ln.limits.open.Load(); n != 0 {
			return fmt.Errorf("%d connections still counted open", n)
		}
		// The deadline sweeper keeps nothing of a closed connection.
		if n := tb.ln.deadlines.tracked(); n != 0 {
			return fmt.Errorf("%d closed connections still swept", n)
		}
		return nil
	})
}

// TestBridge_ServingStops: should the callback listener stop while the bridge
// is not shutting down, the bridge says so: Done, Err, /readyz, /healthz and
// timbus_ready, instead of living on deaf.
func TestBridge_ServingStops(t *testing.T) {
	tb := startBridge(t, func(c *Config) { c.MetricsListen = "127.0.0.1:0" })
	if err := tb.Err(); err != nil {
		t.Fatalf("Err() while serving = %v", err)
	}
	select {
	case <-tb.Done():
		t.Fatal("Done closed while serving")
	default:
	}
	// As if the socket failed under the bridge.
	if err := tb.ln.Listener.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tb.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed within 5s of the listener failing")
	}
	if err := tb.Err(); !errors.Is(err, ErrServe) || !strings.Contains(err.Error(), tb.Addr()) {
		t.Errorf("Err() = %v, want ErrServe naming %s", err, tb.Addr())
	}
	ops := "http://" + tb.OpsAddr()
	if status, body := get(t, ops+PathReady); status != 503 || !strings.Contains(body, "stopped serving callbacks") {
		t.Errorf("/readyz: %d %s", status, body)
	}
	if status, body := get(t, ops+PathHealth); status != 503 || !strings.Contains(body, "stopped serving callbacks") {
		t.Errorf("/healthz: %d %s", status, body)
	}
	_, text := get(t, ops+PathMetrics)
	if got := metricValue(t, text, "timbus_ready"); got != "0" {
		t.Errorf("timbus_ready = %q, want 0", got)
	}
	// startBridge's cleanup checks that Shutdown still succeeds.
}

// fakeListener returns the errors it is given, then blocks until closed.
type fakeListener struct {
	errs   chan error
	closed chan struct{}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	select {
	case err := <-f.errs:
		return nil, err
	case <-f.closed:
		return nil, net.ErrClosed
	}
}
func (f *fakeListener) Close() error   { close(f.closed); return nil }
func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// acceptErr is an accept error as the net package reports it.
func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

// TestListener_AcceptRetries: errors that pass (out of descriptors, of
// memory) are waited out, with a growing delay, counted and logged at most
// every few seconds; others end Accept; Close ends a wait at once.
func TestListener_AcceptRetries(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		retry bool
	}{
		{"EMFILE", acceptErr(syscall.EMFILE), true},
		{"ENFILE", acceptErr(syscall.ENFILE), true},
		{"ENOBUFS", acceptErr(syscall.ENOBUFS), true},
		{"ENOMEM", acceptErr(syscall.ENOMEM), true},
		{"EINTR (temporary)", acceptErr(syscall.EINTR), true},
		{"EINVAL", acceptErr(syscall.EINVAL), false},
		{"closed", &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &syncBuffer{}
			f := &fakeListener{errs: make(chan error, 4), closed: make(chan struct{})}
			const failures = 3
			for i := 0; i < failures; i++ {
				f.errs <- tc.err
			}
			l := newListener(f, "callback", zerolog.New(logs), nil)
			accepted := make(chan error, 1)
			start := time.Now()
			go func() { _, err := l.Accept(); accepted <- err }()
			if !tc.retry {
				select {
				case err := <-accepted:
					if !errors.Is(err, tc.err) && err != tc.err {
						t.Errorf("Accept() = %v, want %v", err, tc.err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("Accept kept waiting on an error that does not pass")
				}
				if n := l.errors.Load(); n != 0 {
					t.Errorf("%d errors counted as retried", n)
				}
				return
			}
			waitFor(t, 5*time.Second, func() error {
				if n := l.errors.Load(); n != failures {
					return fmt.Errorf("%d errors retried, want %d", n, failures)
				}
				return nil
			})
			// The third error comes after two waits: 5 + 10 ms at least.
			if elapsed := time.Since(start); elapsed < 15*time.Millisecond {
				t.Errorf("three retries within %v: no backoff", elapsed)
			}
			if n := strings.Count(strings.Join(logs.lines(), "\n"), "cannot accept connections"); n != 1 {
				t.Errorf("%d warnings for %d errors in a burst, want 1:\n%s", n, failures, logs.lines())
			}
			l.Close()
			select {
			case err := <-accepted:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Accept() after Close = %v, want net.ErrClosed", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Accept did not return within 2s of Close")
			}
		})
	}
}
