package bridge

// Helpers for the fault tests (faults_test.go, cluster_test.go, soak_test.go):
// a bridge on a NATS URL of the test's choosing, an HTTP caller that never
// calls t.Fatal from a goroutine, a tally of answers by kind and lateness,
// and checks that goroutines and heap come back to their baseline.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/timbus-dev/timbus/internal/natstest"
)

// answerSlack is what a loaded test machine (2 cores, -race) may add to a
// callback's deadline before the answer counts as late. Deadline plus slack
// stays under Tencent's two seconds in every fault test.
const answerSlack = 400 * time.Millisecond

// runBridge starts a bridge on 127.0.0.1 against natsURL, which the test
// controls (it may be down, restarted, or a cluster). Unlike startBridge it
// starts no server and opens no client connection. Logs go to a ring of the
// last lines, printed if the test fails.
func runBridge(t testing.TB, natsURL string, mutate func(*Config)) *testBridge {
	t.Helper()
	cfg, logs := faultConfig(natsURL, mutate)
	b, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return adopt(t, b, logs)
}

// faultConfig is runBridge's configuration, for tests that start bridges
// themselves.
func faultConfig(natsURL string, mutate func(*Config)) (Config, *logRing) {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSURL = natsURL
	cfg.Apps = []App{{ID: testApp}}
	logs := newLogRing(40)
	cfg.Logger = zerolog.New(logs).With().Timestamp().Logger()
	if mutate != nil {
		mutate(&cfg)
	}
	return cfg, logs
}

// adopt shuts a started bridge down when the test ends and prints its last
// log lines if the test failed.
func adopt(t testing.TB, b *Bridge, logs *logRing) *testBridge {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("last bridge log lines:\n%s", logs.String())
		}
	})
	return &testBridge{Bridge: b, base: "http://" + b.Addr()}
}

// logRing keeps the last lines written to it.
type logRing struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

func newLogRing(n int) *logRing { return &logRing{lines: make([]string, n)} }

func (r *logRing) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.lines[r.next] = string(bytes.TrimRight(p, "\n"))
	r.next = (r.next + 1) % len(r.lines)
	r.full = r.full || r.next == 0
	r.mu.Unlock()
	return len(p), nil
}

func (r *logRing) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	if r.full {
		out = append(out, r.lines[r.next:]...)
	}
	out = append(out, r.lines[:r.next]...)
	return strings.Join(out, "\n")
}

// freePort reserves a port on 127.0.0.1 that nothing listens on. Another
// process could take it before the test does; on a test machine that is
// rare enough.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// runNATSOn starts a NATS server on 127.0.0.1:port, stopped when the test
// ends (or earlier by the test).
func runNATSOn(t testing.TB, port int) *server.Server {
	t.Helper()
	opts := natstest.Options()
	opts.Port = port
	return natstest.RunWith(t, opts)
}

// auditSettled waits until the bridge has published every audit record it
// holds. A test that starts NATS after the bridge stops it first when it
// ends (cleanups run last in, first out): records still held then are
// given up at the bridge's shutdown, which reports them as an error, as it
// should.
func (tb *testBridge) auditSettled(t *testing.T) {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		if n := tb.audit.pending.Load(); n != 0 {
			return fmt.Errorf("%d audit records not yet published", n)
		}
		return nil
	})
}

// stopNATS shuts a server down and waits until its port is free.
func stopNATS(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}

// deciderConn connects a decider to url; it reconnects quickly and forever,
// as a real decider should, unless opts say otherwise.
func deciderConn(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{
		nats.Name("test-decider"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
	}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("decider connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// queueDecider answers every request on subject in queue group with
// handle's answer; unlike decider it lets the test choose the group.
func queueDecider(t testing.TB, nc *nats.Conn, subject, queue string, handle func(*nats.Msg) []byte) *nats.Subscription {
	t.Helper()
	sub, err := nc.QueueSubscribe(subject, queue, func(m *nats.Msg) {
		if reply := handle(m); reply != nil {
			_ = m.Respond(reply)
		}
	})
	if err != nil {
		t.Fatalf("subscribe %s: %v", subject, err)
	}
	if nc.IsConnected() {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	return sub
}

// caller posts callbacks as Tencent would: its own connections, a hard
// timeout, and errors returned rather than fatal, so that it can run in
// many goroutines.
type caller struct {
	client *http.Client
	tr     *http.Transport
}

func newCaller(keepAlive bool) *caller {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     30 * time.Second,
		DisableKeepAlives:   !keepAlive,
		DisableCompression:  true,
	}
	return &caller{tr: tr, client: &http.Client{Timeout: 5 * time.Second, Transport: tr}}
}

// closeIdle drops the caller's kept-alive connections, so that the
// bridge's connection goroutines can end.
func (c *caller) closeIdle() { c.tr.CloseIdleConnections() }

// reply is one HTTP answer, or why there was none.
type reply struct {
	status  int
	body    string
	elapsed time.Duration
	err     error
}

func (c *caller) post(url string, body []byte) reply {
	start := time.Now()
	resp, err := c.client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return reply{err: err, elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: string(b), elapsed: time.Since(start), err: err}
}

// tally counts answers by kind: the decider's verdict, the default, anything
// else (bad), transport errors, and answers later than limit.
type tally struct {
	limit    time.Duration
	verdict  string // what the deciders answer
	fallback string // the bridge's default

	mu       sync.Mutex
	decided  int
	dflt     int
	bad      int
	errs     int
	late     int
	max      time.Duration
	elapsed  []time.Duration
	failures []string
}

func newTally(limit time.Duration, verdict, fallback string) *tally {
	return &tally{limit: limit, verdict: verdict, fallback: fallback}
}

// add records r and returns its kind: "decided", "default", "bad" or "error".
func (ta *tally) add(r reply) string {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	kind := "bad"
	switch {
	case r.err != nil:
		kind = "error"
		ta.errs++
	case r.status == http.StatusOK && r.body == ta.verdict:
		kind = "decided"
		ta.decided++
	case r.status == http.StatusOK && r.body == ta.fallback:
		kind = "default"
		ta.dflt++
	default:
		ta.bad++
	}
	ta.elapsed = append(ta.elapsed, r.elapsed)
	ta.max = max(ta.max, r.elapsed)
	late := r.elapsed > ta.limit
	if late {
		ta.late++
	}
	if (kind == "bad" || kind == "error" || late) && len(ta.failures) < 10 {
		ta.failures = append(ta.failures, fmt.Sprintf("%s after %v: %d %q %v", kind, r.elapsed.Round(time.Millisecond), r.status, r.body, r.err))
	}
	return kind
}

func (ta *tally) total() int {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return ta.decided + ta.dflt + ta.bad + ta.errs
}

func (ta *tally) counts() (decided, dflt int) {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return ta.decided, ta.dflt
}

func (ta *tally) String() string {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	el := append([]time.Duration(nil), ta.elapsed...)
	sort.Slice(el, func(i, j int) bool { return el[i] < el[j] })
	pct := func(p float64) time.Duration {
		if len(el) == 0 {
			return 0
		}
		return el[min(len(el)-1, int(p*float64(len(el))))].Round(time.Microsecond)
	}
	return fmt.Sprintf("%d decided, %d default, %d bad, %d errors; %d later than %v; latency p50 %v p99 %v max %v",
		ta.decided, ta.dflt, ta.bad, ta.errs, ta.late, ta.limit, pct(.5), pct(.99), ta.max.Round(time.Microsecond))
}

// check fails the test unless every answer was a 200 with the verdict or
// the default, in time.
func (ta *tally) check(t testing.TB) {
	t.Helper()
	ta.mu.Lock()
	bad, errs, late, failures := ta.bad, ta.errs, ta.late, ta.failures
	ta.mu.Unlock()
	if bad+errs+late > 0 {
		t.Errorf("%v\nfirst failures:\n  %s", ta, strings.Join(failures, "\n  "))
	}
}

// load runs workers that send callbacks until max were sent, stop is
// closed, or the time is up, whichever comes first. send is called with
// the callback's sequence number, from 1.
func load(workers, max int, total time.Duration, stop <-chan struct{}, send func(n int)) {
	var next atomic.Int64
	until := time.Now().Add(total)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := int(next.Add(1))
				if n > max || time.Now().After(until) {
					return
				}
				send(n)
			}
		}()
	}
	wg.Wait()
}

// outcomeCounts reads timbus_callbacks_total for command from /metrics.
func outcomeCounts(t testing.TB, tb *testBridge, command string) map[string]int {
	t.Helper()
	resp, err := httpClient.Get(tb.base + PathMetrics)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	return parseOutcomes(string(text), command)
}

var outcomeLine = regexp.MustCompile(`^timbus_callbacks_total\{command="([^"]+)",outcome="([^"]+)",sdkappid="[^"]+"\} (\S+)$`)

func parseOutcomes(text, command string) map[string]int {
	out := map[string]int{}
	for _, line := range strings.Split(text, "\n") {
		m := outcomeLine.FindStringSubmatch(line)
		if m == nil || m[1] != command {
			continue
		}
		if v, err := strconv.ParseFloat(m[3], 64); err == nil && v > 0 {
			out[m[2]] = int(v)
		}
	}
	return out
}

// readiness returns /readyz's status and body.
func readiness(t testing.TB, tb *testBridge) (int, string) {
	t.Helper()
	resp, err := httpClient.Get(tb.base + PathReady)
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// untilDecided posts callbacks until one gets the verdict, and returns how
// long that took.
func untilDecided(t *testing.T, c *caller, url string, body []byte, verdict string, total time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last reply
	for time.Since(start) < total {
		if last = c.post(url, body); last.err == nil && last.body == verdict {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no decider verdict within %v; last answer %d %q %v", total, last.status, last.body, last.err)
	return 0
}

// Goroutine accounting. A snapshot groups the process's goroutines by the
// functions on their stacks. Idle workers of fasthttp's pool (kept up to
// 10s after a burst) and the test client's own connections are left out:
// they are pools, not leaks.

type goroutineSet map[string]int

var frameArgs = regexp.MustCompile(`\([^()]*\)$`)

func goroutineSnapshot() goroutineSet {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	set := goroutineSet{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		lines := strings.Split(strings.TrimSpace(g), "\n")
		if len(lines) < 2 {
			continue
		}
		var funcs []string
		for i := 1; i < len(lines); i += 2 {
			f := strings.TrimSpace(lines[i])
			if strings.HasPrefix(f, "created by ") {
				f = "created by " + strings.Fields(f)[2]
			}
			funcs = append(funcs, frameArgs.ReplaceAllString(f, ""))
		}
		sig := strings.Join(funcs, " < ")
		switch {
		case strings.Contains(sig, "fasthttp.(*workerPool).workerFunc") && !strings.Contains(sig, "serveConn"):
			continue // an idle worker
		case strings.Contains(sig, "net/http.(*persistConn)"):
			continue // the test client's connection
		case strings.Contains(sig, "runtime.Stack"), strings.Contains(sig, "goroutineSnapshot"):
			continue
		}
		set[sig]++
	}
	return set
}

func (s goroutineSet) total() int {
	n := 0
	for _, c := range s {
		n += c
	}
	return n
}

// extra lists the goroutines in s beyond those in base.
func (s goroutineSet) extra(base goroutineSet) (int, string) {
	var sb strings.Builder
	n := 0
	for sig, c := range s {
		if d := c - base[sig]; d > 0 {
			n += d
			fmt.Fprintf(&sb, "  %d× %s\n", d, sig)
		}
	}
	return n, sb.String()
}

// settleGoroutines waits until at most tolerance goroutines more than in
// base are running, and fails the test with the newcomers' stacks if they
// do not go away within total.
func settleGoroutines(t testing.TB, base goroutineSet, tolerance int, total time.Duration) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		now := goroutineSnapshot()
		n, list := now.extra(base)
		if n <= tolerance {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d goroutines more than the baseline of %d after %v (tolerance %d):\n%s", n, base.total(), total, tolerance, list)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// heapAfterGC is the live heap after two collections.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// oaBody is the documented sample of oaCreate with Name set, so that a
// decider (or a test) can tell callbacks apart.
func oaBody(name string) []byte {
	return []byte(`{"CallbackCommand":"` + oaCreate + `","Operator_Account":"107867","Owner_Account":"107867","Name":"` + name + `","EventTime":1670574414123}`)
}

// nameIn extracts the Name oaBody put in a callback body.
var nameField = regexp.MustCompile(`"Name":"([^"]*)"`)

func nameIn(body []byte) string {
	if m := nameField.FindSubmatch(body); m != nil {
		return string(m[1])
	}
	return ""
}
