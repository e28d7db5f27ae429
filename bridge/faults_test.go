package bridge

// Fault tests (issue "survive faults"): the bridge keeps answering Tencent
// in time, with a decider's verdict or its default, whatever NATS, the
// deciders or the load do. Real NATS servers run in-process on 127.0.0.1;
// callbacks go over real HTTP. Cluster faults are in cluster_test.go, the
// long run in soak_test.go.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders/protocol"
)

// TestFault_NATSDownAtStart: with nothing listening at its NATS URL the
// bridge still starts, says it is not ready (and why), and answers the
// default at once; when NATS comes up on that address it connects, becomes
// ready, and deciders decide again.
func TestFault_NATSDownAtStart(t *testing.T) {
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	start := time.Now()
	tb := runBridge(t, url, func(c *Config) { c.Timeout = 500 * time.Millisecond })
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Start took %v with NATS down; it should not wait for NATS", took)
	}

	status, body := readiness(t, tb)
	var ready struct {
		Ready   bool     `json:"ready"`
		Reasons []string `json:"reasons"`
	}
	if err := json.Unmarshal([]byte(body), &ready); err != nil || status != http.StatusServiceUnavailable || ready.Ready ||
		len(ready.Reasons) == 0 || !strings.Contains(ready.Reasons[0], "NATS not connected") {
		t.Errorf("/readyz with NATS down: %d %s (%v)", status, body, err)
	}

	c := newCaller(true)
	defer c.closeIdle()
	ta := newTally(tb.cfg.Timeout+answerSlack, oaCreateDeny, allowAnswer)
	for i := 0; i < 5; i++ {
		r := c.post(tb.callbackURL(oaCreate), sample(t, oaCreate))
		if ta.add(r) != "default" {
			t.Fatalf("callback with NATS down: %d %q %v", r.status, r.body, r.err)
		}
		if r.elapsed > tb.cfg.Timeout {
			t.Errorf("with NATS down the default took %v; it should come at once", r.elapsed)
		}
	}
	ta.check(t)
	if got := outcomeCounts(t, tb, oaCreate)[string(protocol.OutcomeNATSError)]; got != 5 {
		t.Errorf("nats_error outcomes = %d, want 5", got)
	}

	// NATS comes up where the bridge has been looking.
	ns := runNATSOn(t, port)
	natsUp := time.Now()
	waitFor(t, 5*time.Second, func() error {
		if status, _ := readiness(t, tb); status != http.StatusOK {
			return errNotYet
		}
		return nil
	})
	t.Logf("ready %v after NATS started", time.Since(natsUp).Round(time.Millisecond))
	nc := deciderConn(t, ns.ClientURL())
	decider(t, nc, decideOA, replyWith(oaCreateDeny))
	took := untilDecided(t, c, tb.callbackURL(oaCreate), sample(t, oaCreate), oaCreateDeny, 3*time.Second)
	t.Logf("decided again %v after the decider subscribed", took.Round(time.Millisecond))
	for i := 0; i < 20; i++ {
		if r := c.post(tb.callbackURL(oaCreate), sample(t, oaCreate)); ta.add(r) != "decided" {
			t.Fatalf("callback %d after NATS came up: %d %q %v", i, r.status, r.body, r.err)
		}
	}
	ta.check(t)
	tb.auditSettled(t)
}

// TestFault_NATSRestartUnderLoad: callbacks keep coming from several
// clients while the NATS server stops and starts again on the same port.
// Every callback gets a 200 with the verdict or the default in time, none
// hangs, and after the reconnection deciders decide again.
func TestFault_NATSRestartUnderLoad(t *testing.T) {
	ns := runNATSOn(t, freePort(t))
	port := ns.Addr().(*net.TCPAddr).Port
	tb := runBridge(t, ns.ClientURL(), func(c *Config) { c.Timeout = 500 * time.Millisecond })
	nc := deciderConn(t, ns.ClientURL())
	var handled atomic.Int64
	decider(t, nc, decideOA, func(*nats.Msg) *nats.Msg {
		handled.Add(1)
		time.Sleep(2 * time.Millisecond) // some work, so that some calls are in flight at the crash
		return &nats.Msg{Data: []byte(oaCreateDeny)}
	})
	c := newCaller(true)
	defer c.closeIdle()
	ta := newTally(tb.cfg.Timeout+answerSlack, oaCreateDeny, allowAnswer)
	url, body := tb.callbackURL(oaCreate), sample(t, oaCreate)

	// Phases, each measured on its own tally share: before, down, after.
	var phase atomic.Int32 // 0 before, 1 down, 2 restarted
	var perPhase [3][2]atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// While NATS is down the defaults come at once, so the budget is
		// time, not a call count a fast machine would spend before the restart.
		load(6, 1_000_000, 15*time.Second, stop, func(int) {
			p := phase.Load()
			switch ta.add(c.post(url, body)) {
			case "decided":
				perPhase[p][0].Add(1)
			case "default":
				perPhase[p][1].Add(1)
			}
		})
	}()

	time.Sleep(700 * time.Millisecond)
	phase.Store(1)
	stopNATS(ns)
	waitFor(t, 5*time.Second, func() error {
		if tb.Bridge.nc.IsConnected() {
			return errNotYet
		}
		return nil
	})
	time.Sleep(time.Second) // down for a while, under load
	runNATSOn(t, port)
	restarted := time.Now()
	waitFor(t, 5*time.Second, func() error {
		if !tb.Bridge.nc.IsConnected() || !nc.IsConnected() {
			return errNotYet
		}
		return nil
	})
	phase.Store(2)
	t.Logf("bridge and decider reconnected %v after the restart", time.Since(restarted).Round(time.Millisecond))
	// Deciders decide again, under the same load.
	waitFor(t, 5*time.Second, func() error {
		if perPhase[2][0].Load() < 50 {
			return errNotYet
		}
		return nil
	})
	close(stop)
	<-done

	t.Logf("%v", ta)
	t.Logf("decided/default before %d/%d, down %d/%d, after %d/%d; outcomes %v", perPhase[0][0].Load(), perPhase[0][1].Load(),
		perPhase[1][0].Load(), perPhase[1][1].Load(), perPhase[2][0].Load(), perPhase[2][1].Load(), outcomeCounts(t, tb, oaCreate))
	ta.check(t)
	if perPhase[0][0].Load() == 0 || perPhase[1][1].Load() == 0 {
		t.Errorf("the load did not span the outage: decided before %d, defaults while down %d", perPhase[0][0].Load(), perPhase[1][1].Load())
	}
	if got := outcomeCounts(t, tb, oaCreate)[string(protocol.OutcomeNATSError)]; got == 0 {
		t.Error("no nats_error outcome while NATS was down")
	}
	tb.auditSettled(t)
}

// misbehaving deciders: every flavour below shares one bridge set-up.
const (
	junkReply = `{"ActionStatus":"OK","ErrorCode":"not a number"}`
	// forgedAllow is a valid verdict other than the deciders' own.
	forgedAllow = `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"forged"}`
)

// crashLoop is a decider that closes its connection as soon as a request
// reaches it, like a process crashing mid-request; a supervisor starts a new
// one each time, up to lives times.
func crashLoop(t *testing.T, url, queue string, lives int) (crashes *atomic.Int32, stop func()) {
	crashes = &atomic.Int32{}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range lives {
			nc, err := nats.Connect(url, nats.NoReconnect())
			if err != nil {
				return
			}
			crashed := make(chan struct{})
			var once sync.Once
			_, err = nc.QueueSubscribe(decideOA, queue, func(*nats.Msg) {
				once.Do(func() {
					crashes.Add(1)
					nc.Close() // mid-request: no reply, ever
					close(crashed)
				})
			})
			if err == nil {
				err = nc.Flush()
			}
			if err != nil {
				nc.Close()
				return
			}
			select {
			case <-crashed:
			case <-quit:
				nc.Close()
				return
			}
			time.Sleep(20 * time.Millisecond) // the restart
		}
	}()
	return crashes, func() { close(quit); <-done }
}

// TestFault_MisbehavingDeciders: deciders that crash mid-request, hang, or
// flood replies (to their own reply subject and to other subjects under
// the bridge's reply inbox, which they learn from m.Reply) never make an
// answer late, never take the bridge down, and never leave goroutines
// behind; when a well-behaved decider answers, its verdict is what Tencent
// gets.
func TestFault_MisbehavingDeciders(t *testing.T) {
	const timeout = 400 * time.Millisecond
	type setup struct {
		name string
		// deciders starts the deciders; wantAll reports whether every
		// callback must get the good decider's verdict.
		deciders func(t *testing.T, url string) (stop func())
		wantAll  bool
	}
	good := func(t *testing.T, url, queue string, delay time.Duration) {
		nc := deciderConn(t, url)
		// deciderConn retries a failed first connect in the background, and
		// queueDecider flushes only a connected client: wait, so that the
		// good decider's subscription is at the server before the others
		// and the first callback, not some time later.
		waitFor(t, 10*time.Second, func() error {
			if !nc.IsConnected() {
				return fmt.Errorf("the good decider is not connected: %v", nc.Status())
			}
			return nil
		})
		queueDecider(t, nc, decideOA, queue, func(*nats.Msg) []byte {
			time.Sleep(delay)
			return []byte(oaCreateDeny)
		})
	}
	var hung, junkSent atomic.Int64
	hang := func(t *testing.T, url, queue string) {
		// Takes every request it gets and never answers.
		queueDecider(t, deciderConn(t, url), decideOA, queue, func(*nats.Msg) []byte { hung.Add(1); return nil })
	}
	var crashes *atomic.Int32
	for _, s := range []setup{
		{
			name: "crash and hang in the deciders' queue group",
			deciders: func(t *testing.T, url string) func() {
				good(t, url, "deciders", 0)
				hang(t, url, "deciders")
				var stop func()
				crashes, stop = crashLoop(t, url, "deciders", 50)
				return stop
			},
			// Requests NATS hands to the crashing or hanging member get the
			// default at the deadline.
			wantAll: false,
		},
		{
			name: "crash and hang beside a good decider's group",
			deciders: func(t *testing.T, url string) func() {
				good(t, url, "good", 0)
				hang(t, url, "hang")
				var stop func()
				crashes, stop = crashLoop(t, url, "crash", 50)
				return stop
			},
			wantAll: true,
		},
		{
			name: "flood of replies and junk on the reply inbox",
			deciders: func(t *testing.T, url string) func() {
				good(t, url, "deciders", 0)
				nc := deciderConn(t, url)
				queueDecider(t, nc, decideOA, "deciders", func(m *nats.Msg) []byte {
					// Its verdict, many times over, then junk: after the
					// reply, to its own reply subject, and to subjects under
					// the bridge's inbox that are not calls.
					for range 20 {
						_ = nc.Publish(m.Reply, []byte(oaCreateDeny))
					}
					inbox := m.Reply[:strings.LastIndexByte(m.Reply, '.')+1]
					for _, subject := range []string{m.Reply, inbox + "junk", inbox + "zzzzzzzzzzzzzzzzzzzz", inbox + "0", inbox + "-1", inbox + "~1"} {
						_ = nc.Publish(subject, []byte(junkReply))
						junkSent.Add(1)
					}
					return nil
				})
				return func() {}
			},
			wantAll: true,
		},
	} {
		t.Run(s.name, func(t *testing.T) {
			hung.Store(0)
			crashes = nil
			ns := runNATSOn(t, freePort(t))
			tb := runBridge(t, ns.ClientURL(), func(c *Config) { c.Timeout = timeout })
			// Stopped before the goroutine count below, and in any case
			// before the next subtest: a crash loop must not outlive its own.
			stopDeciders := sync.OnceFunc(s.deciders(t, ns.ClientURL()))
			t.Cleanup(stopDeciders)
			c := newCaller(true)
			url, body := tb.callbackURL(oaCreate), sample(t, oaCreate)
			t.Cleanup(func() {
				if t.Failed() && crashes != nil {
					t.Logf("misbehaving deciders: %d requests hung, %d crashes", hung.Load(), crashes.Load())
				}
			})
			// With a hanging and a crashing member in the good decider's
			// queue group, each try reaches it one time in three: 20s of
			// 400ms tries makes missing it for good a one-in-10⁸ event.
			untilDecided(t, c, url, body, oaCreateDeny, 20*time.Second)
			c.closeIdle()
			base := goroutineSnapshot()

			ta := newTally(timeout+answerSlack, oaCreateDeny, allowAnswer)
			load(12, 120, 20*time.Second, nil, func(int) { ta.add(c.post(url, body)) })
			outcomes := outcomeCounts(t, tb, oaCreate)
			t.Logf("%v; outcomes %v", ta, outcomes)
			if crashes != nil {
				t.Logf("%d requests hung, %d crashes", hung.Load(), crashes.Load())
				if hung.Load() == 0 || crashes.Load() == 0 {
					t.Error("the misbehaving deciders got no requests: the test tested nothing")
				}
			}
			ta.check(t)
			decided, dflt := ta.counts()
			if decided == 0 {
				t.Error("no callback was decided")
			}
			if s.wantAll && dflt > 0 {
				t.Errorf("%d callbacks got the default although a good decider answered each", dflt)
			}
			if n := outcomes[string(protocol.OutcomeInvalidReply)]; n > 0 {
				t.Errorf("%d invalid_reply outcomes: a misbehaving decider's junk was taken as the answer", n)
			}

			stopDeciders()
			c.closeIdle()
			settleGoroutines(t, base, 3, 5*time.Second)
		})
	}
	if junkSent.Load() == 0 {
		t.Error("the flooding decider sent no junk")
	}
}

// TestFault_ForgedRepliesToOtherCalls: a decider for one command learns the
// bridge's reply inbox from a request of its own (m.Reply) and publishes a
// valid verdict to the reply subjects of other callbacks in flight — here
// those of another command, which another decider is asked. The bridge
// must still give Tencent the verdict of the decider that was asked.
//
// Regression guard. Before the fix, a call's reply subject is the
// bridge's one inbox plus a sequential base-36 counter
// (replyMux.register), so every other call's subject is guessed from any
// one of them, and replyMux.route takes the first message on it as the
// reply. Any decider, for any command or app, can decide callbacks it was
// never sent.
func TestFault_ForgedRepliesToOtherCalls(t *testing.T) {
	const groupSend = "Group.CallbackBeforeSendMsg"
	ns := runNATSOn(t, freePort(t))
	tb := runBridge(t, ns.ClientURL(), func(c *Config) { c.Timeout = 500 * time.Millisecond })
	// The official account decider takes a little while, as deciders with a
	// database do.
	if _, err := deciderConn(t, ns.ClientURL()).QueueSubscribe(decideOA, "officialaccount", func(m *nats.Msg) {
		go func() {
			time.Sleep(30 * time.Millisecond)
			_ = m.Respond([]byte(oaCreateDeny))
		}()
	}); err != nil {
		t.Fatal(err)
	}
	// The group decider answers its own requests properly, and forges an
	// answer on the reply subjects just below its own.
	var forged atomic.Int64
	spy := deciderConn(t, ns.ClientURL())
	queueDecider(t, spy, "timbus.decide."+testApp+"."+groupSend, "groups", func(m *nats.Msg) []byte {
		// Its own reply subject's last token: a counter, perhaps followed
		// by more; it tries the counters below its own, bare and with the
		// rest of its own token.
		dot := strings.LastIndexByte(m.Reply, '.')
		inbox, token := m.Reply[:dot+1], m.Reply[dot+1:]
		digits := strings.IndexFunc(token, func(r rune) bool { return !('0' <= r && r <= '9' || 'a' <= r && r <= 'z') })
		if digits < 0 {
			digits = len(token)
		}
		if id, err := strconv.ParseUint(token[:digits], 36, 64); err == nil {
			for k := uint64(1); k <= 16 && k < id; k++ {
				guess := inbox + strconv.FormatUint(id-k, 36)
				_ = spy.Publish(guess, []byte(forgedAllow))
				if rest := token[digits:]; rest != "" {
					_ = spy.Publish(guess+rest, []byte(forgedAllow))
				}
				forged.Add(1)
			}
		}
		return []byte(allowAnswer)
	})
	c := newCaller(true)
	defer c.closeIdle()
	oaURL, oaBody := tb.callbackURL(oaCreate), sample(t, oaCreate)
	groupURL, groupBody := tb.callbackURL(groupSend), sample(t, groupSend)
	ta := newTally(tb.cfg.Timeout+answerSlack, oaCreateDeny, allowAnswer)
	var hijacked, groupBad atomic.Int64
	load(8, 320, 15*time.Second, nil, func(n int) {
		if n%2 == 1 {
			if r := c.post(groupURL, groupBody); r.err != nil || r.status != 200 {
				groupBad.Add(1)
			}
			return
		}
		r := c.post(oaURL, oaBody)
		if r.err == nil && r.body == forgedAllow {
			hijacked.Add(1)
			r.body = allowAnswer // counted apart; the tally checks timing
		}
		ta.add(r)
	})
	t.Logf("official account callbacks: %v; %d forged replies sent, %d callbacks answered with the forgery", ta, forged.Load(), hijacked.Load())
	ta.check(t)
	if groupBad.Load() > 0 {
		t.Errorf("%d group callbacks failed", groupBad.Load())
	}
	if n := hijacked.Load(); n > 0 {
		t.Errorf("%d of %d official account callbacks got a verdict forged by the group decider on a guessed reply subject "+
			"instead of the official account decider's (reply subjects are <inbox>.<sequential id>)", n, ta.total())
	}
}

// TestFault_ShutdownRightAfterStart: a bridge told to stop as soon as it
// has started (a deployment rolled back at once, a SIGTERM during start-up)
// stops promptly, closes its listeners, and drains NATS.
//
// Regression guard. Before the fix, Start runs srv.Serve(ln) in a
// goroutine and returns; fasthttp registers ln only once Serve runs, and
// ShutdownWithContext returns at once when no listener is registered yet.
// Serve then starts after Shutdown's call and serves forever: Shutdown waits
// for serveDone until its context expires, reports "drain NATS: context
// deadline exceeded", and the callback listener stays open. The metrics
// listener (serveOps) has the same race.
func TestFault_ShutdownRightAfterStart(t *testing.T) {
	ns := runNATSOn(t, freePort(t))
	for i := range 3 {
		cfg, _ := faultConfig(ns.ClientURL(), func(c *Config) { c.MetricsListen = "127.0.0.1:0" })
		b, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		start := time.Now()
		err = b.Shutdown(ctx)
		took := time.Since(start)
		cancel()
		if err != nil || took > 500*time.Millisecond {
			t.Errorf("attempt %d: Shutdown right after Start took %v: %v", i, took.Round(time.Millisecond), err)
		}
		for name, addr := range map[string]string{"callback": b.Addr(), "metrics": b.OpsAddr()} {
			if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				conn.Close()
				t.Errorf("attempt %d: the %s listener still accepts connections after Shutdown", i, name)
				// Stop it for good, so that the test leaves nothing behind.
				if name == "callback" {
					b.ln.Close()
				} else {
					b.opsLn.Close()
				}
			}
		}
	}
}

// TestFault_Overload: callbacks beyond MaxInflight get the default at once
// (outcome shed) instead of queueing past Tencent's deadline, and memory
// stays bounded.
func TestFault_Overload(t *testing.T) {
	const maxInflight = 8
	ns := runNATSOn(t, freePort(t))
	tb := runBridge(t, ns.ClientURL(), func(c *Config) {
		// Long enough that the callbacks holding the cap are still held when
		// the burst ends on a loaded machine: past their deadline, they
		// would free the cap and let burst callbacks in to wait.
		c.Timeout = 1500 * time.Millisecond
		c.MaxInflight = maxInflight
	})
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	nc := deciderConn(t, ns.ClientURL())
	// Each request in its own goroutine, so that the decider itself is not
	// a queue: only the bridge's cap is.
	var held atomic.Int32
	_, err := nc.QueueSubscribe(decideOA, "deciders", func(m *nats.Msg) {
		go func() {
			held.Add(1)
			<-release
			_ = m.Respond([]byte(oaCreateDeny))
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	c := newCaller(true)
	defer c.closeIdle()
	url, body := tb.callbackURL(oaCreate), sample(t, oaCreate)
	limit := tb.cfg.Timeout + answerSlack

	// Phase 1: the cap is full of callbacks the decider holds; a burst on
	// top of them is shed, each at once.
	holders := newTally(limit, oaCreateDeny, allowAnswer)
	var wg sync.WaitGroup
	for range maxInflight {
		wg.Add(1)
		go func() { defer wg.Done(); holders.add(c.post(url, body)) }()
	}
	waitFor(t, 3*time.Second, func() error {
		if tb.inflight.Load() != maxInflight || held.Load() != maxInflight {
			return errNotYet
		}
		return nil
	})
	heapBefore := heapAfterGC()
	const burst = 400
	shed := newTally(limit, oaCreateDeny, allowAnswer)
	burstStart := time.Now()
	load(32, burst, 10*time.Second, nil, func(int) { shed.add(c.post(url, body)) })
	burstTook := time.Since(burstStart)
	if inflight := tb.inflight.Load(); inflight != maxInflight {
		t.Errorf("after the burst %d callbacks in flight, want the %d held ones", inflight, maxInflight)
	}
	releaseOnce.Do(func() { close(release) })
	wg.Wait()
	heapAfter := heapAfterGC()
	t.Logf("burst of %d over a full cap in %v: %v", burst, burstTook.Round(time.Millisecond), shed)
	shed.check(t)
	holders.check(t)
	if decided, dflt := shed.counts(); dflt != burst || decided != 0 {
		t.Errorf("over the cap: %d default, %d decided of %d; want every one shed", dflt, decided, burst)
	}
	if shed.max > tb.cfg.Timeout/2 {
		t.Errorf("a shed callback waited %v: shedding must answer at once, not after the %v deadline", shed.max, tb.cfg.Timeout)
	}
	outcomes := outcomeCounts(t, tb, oaCreate)
	if outcomes[string(protocol.OutcomeShed)] != burst {
		t.Errorf(`timbus_callbacks_total{outcome="shed"} = %d, want %d (all outcomes %v)`, outcomes[string(protocol.OutcomeShed)], burst, outcomes)
	}
	if grew := int64(heapAfter) - int64(heapBefore); grew > 32<<20 {
		t.Errorf("heap grew by %d MiB over a burst of %d shed callbacks", grew>>20, burst)
	}
	t.Logf("heap %d KiB before the burst, %d KiB after", heapBefore>>10, heapAfter>>10)

	// Phase 2: sustained overload on a decider that takes 20ms: some are
	// decided, the rest shed, all in time, none queued past the deadline.
	if err := nc.Drain(); err != nil {
		t.Fatal(err)
	}
	nc2 := deciderConn(t, ns.ClientURL())
	if _, err := nc2.QueueSubscribe(decideOA, "deciders", func(m *nats.Msg) {
		go func() { time.Sleep(20 * time.Millisecond); _ = m.Respond([]byte(oaCreateDeny)) }()
	}); err != nil {
		t.Fatal(err)
	}
	nc2.Flush()
	heapBefore = heapAfterGC()
	mixed := newTally(limit, oaCreateDeny, allowAnswer)
	load(48, 1500, 20*time.Second, nil, func(int) { mixed.add(c.post(url, body)) })
	heapAfter = heapAfterGC()
	t.Logf("sustained overload: %v; outcomes %v", mixed, outcomeCounts(t, tb, oaCreate))
	mixed.check(t)
	if decided, dflt := mixed.counts(); decided == 0 || dflt == 0 {
		t.Errorf("sustained overload: %d decided, %d shed; want both", decided, dflt)
	}
	if grew := int64(heapAfter) - int64(heapBefore); grew > 32<<20 {
		t.Errorf("heap grew by %d MiB over sustained overload", grew>>20)
	}
}

// TestFault_ShutdownUnderLoad: Shutdown while callbacks are in flight with
// a slow decider: every callback the bridge accepted (its decider was asked)
// gets that decider's answer, no accepted request sees its connection
// reset, and new connections are refused afterwards.
func TestFault_ShutdownUnderLoad(t *testing.T) {
	ns := runNATSOn(t, freePort(t))
	tb := runBridge(t, ns.ClientURL(), nil) // the default 1.5s timeout
	var (
		mu   sync.Mutex
		seen = map[string]bool{} // names the decider was asked about
	)
	nc := deciderConn(t, ns.ClientURL())
	if _, err := nc.QueueSubscribe(decideOA, "deciders", func(m *nats.Msg) {
		name := nameIn(m.Data)
		mu.Lock()
		seen[name] = true
		mu.Unlock()
		go func() {
			time.Sleep(300 * time.Millisecond)
			_ = m.Respond([]byte(`{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"` + name + `"}`))
		}()
	}); err != nil {
		t.Fatal(err)
	}
	nc.Flush()

	// One connection per callback (as a load balancer might), so that a
	// refused dial and a reset of a sent request are told apart.
	c := newCaller(false)
	type result struct {
		name    string
		r       reply
		started time.Time
	}
	var (
		results  []result
		resMu    sync.Mutex
		shutdown atomic.Int64 // UnixNano when Shutdown returned
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		load(12, 5000, 10*time.Second, stop, func(n int) {
			name := "cb-" + strconv.Itoa(n)
			started := time.Now()
			r := c.post(tb.callbackURL(oaCreate), oaBody(name))
			resMu.Lock()
			results = append(results, result{name, r, started})
			resMu.Unlock()
			if r.err != nil {
				time.Sleep(5 * time.Millisecond) // refused: do not spin
			}
		})
	}()
	// Let the load fill the pipeline, then shut down with callbacks held by
	// the decider.
	waitFor(t, 5*time.Second, func() error {
		if tb.inflight.Load() < 8 {
			return errNotYet
		}
		return nil
	})
	inflight := tb.inflight.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shutdownStart := time.Now()
	if err := tb.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	shutdown.Store(time.Now().UnixNano())
	t.Logf("Shutdown with %d callbacks in flight took %v", inflight, time.Since(shutdownStart).Round(time.Millisecond))
	time.Sleep(200 * time.Millisecond) // callbacks sent after Shutdown
	close(stop)
	<-done

	if _, err := net.DialTimeout("tcp", tb.Addr(), time.Second); err == nil {
		t.Error("a new connection was accepted after Shutdown")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Logf("dial after Shutdown: %v", err)
	}

	var answered, refused, unaccepted, afterShutdown int
	mu.Lock()
	defer mu.Unlock()
	for _, res := range results {
		asked := seen[res.name]
		want := `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"` + res.name + `"}`
		switch {
		case res.r.err == nil && res.r.status == 200 && res.r.body == want:
			answered++
			if res.r.elapsed > tb.cfg.Timeout+answerSlack {
				t.Errorf("%s answered after %v", res.name, res.r.elapsed)
			}
		case asked:
			t.Errorf("%s was accepted (its decider was asked) but got %d %q %v", res.name, res.r.status, res.r.body, res.r.err)
		case res.r.err != nil && errors.Is(res.r.err, syscall.ECONNREFUSED):
			refused++
			if res.started.UnixNano() > shutdown.Load() {
				afterShutdown++
			}
		case res.r.err != nil:
			// Connected into the listen backlog just before the listener
			// closed, never read by the bridge: not accepted.
			unaccepted++
			t.Logf("%s: not accepted: %v", res.name, res.r.err)
		default:
			t.Errorf("%s got %d %q without its decider being asked", res.name, res.r.status, res.r.body)
		}
	}
	t.Logf("%d callbacks: %d answered by their decider, %d refused (%d sent after Shutdown returned), %d reset before being read",
		len(results), answered, refused, afterShutdown, unaccepted)
	if answered < int(inflight) {
		t.Errorf("only %d callbacks answered, fewer than the %d in flight at Shutdown", answered, inflight)
	}
	if afterShutdown == 0 {
		t.Error("no callback was tried after Shutdown returned")
	}
}
