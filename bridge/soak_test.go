package bridge

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestSoak runs callbacks at a steady rate for TIMBUS_SOAK (a duration,
// e.g. 3m) while the deciders keep being restarted, and then requires that
// none was lost or late and that goroutines and heap are back near their
// baseline. It is skipped unless TIMBUS_SOAK is set; `make soak` sets it:
//
//	TIMBUS_SOAK=3m go test -race -count=1 -run '^TestSoak$' -timeout 15m -v ./bridge/
//
// TIMBUS_SOAK_RATE sets callbacks per second (default 300).
//
// The deciders are two copies of the example decider
// deciders/examples/go-officialaccount, built once and run as real
// processes; every few seconds one of them is restarted, alternately with
// SIGTERM (it finishes the callbacks in hand and drains) and SIGKILL (the
// callbacks in hand are lost and get the default at their deadline), so
// that there is always, apart from a few hundred milliseconds, a decider
// running, and the bridge meets both clean and abrupt departures.
func TestSoak(t *testing.T) {
	env := os.Getenv("TIMBUS_SOAK")
	if env == "" {
		t.Skip("set TIMBUS_SOAK to a duration, e.g. TIMBUS_SOAK=3m (make soak), to run the soak test")
	}
	duration, err := time.ParseDuration(env)
	if err != nil || duration <= 0 {
		t.Fatalf("TIMBUS_SOAK=%q: want a duration such as 3m", env)
	}
	rate := 300
	if r := os.Getenv("TIMBUS_SOAK_RATE"); r != "" {
		if rate, err = strconv.Atoi(r); err != nil || rate <= 0 {
			t.Fatalf("TIMBUS_SOAK_RATE=%q: want callbacks per second", r)
		}
	}
	const restartEvery = 3 * time.Second

	bin := filepath.Join(t.TempDir(), "officialaccount-decider")
	build := exec.Command("go", "build", "-o", bin, "../deciders/examples/go-officialaccount")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build the example decider: %v\n%s", err, out)
	}

	ns := runNATSOn(t, freePort(t))
	tb := runBridge(t, ns.ClientURL(), func(c *Config) { c.Timeout = time.Second })
	deciders := [2]*deciderProcess{}
	for i := range deciders {
		deciders[i] = startDeciderProcess(t, bin, ns.ClientURL())
	}
	t.Cleanup(func() {
		for _, d := range deciders {
			d.kill()
		}
	})

	c := newCaller(true)
	url, body := tb.callbackURL(oaCreate), oaBody("admin") // a reserved name: the decider denies it
	var verdict string
	waitFor(t, 30*time.Second, func() error {
		r := c.post(url, body)
		if r.err != nil || r.status != 200 || r.body == allowAnswer {
			return errNotYet
		}
		verdict = r.body
		return nil
	})
	t.Logf("decider verdict: %s", verdict)
	c.closeIdle()
	time.Sleep(200 * time.Millisecond)
	baseGoroutines := goroutineSnapshot()
	baseHeap := heapAfterGC()

	// Restarts: one decider every restartEvery, alternately gently and not.
	stopRestarts := make(chan struct{})
	restartsDone := make(chan struct{})
	var stopOnce sync.Once
	endRestarts := func() { stopOnce.Do(func() { close(stopRestarts); <-restartsDone }) }
	defer endRestarts()
	var graceful, killed atomic.Int32
	go func() {
		defer close(restartsDone)
		tick := time.NewTicker(restartEvery)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopRestarts:
				return
			case <-tick.C:
			}
			d := deciders[i%2]
			if i%2 == 0 {
				d.stop(5 * time.Second)
				graceful.Add(1)
			} else {
				d.kill()
				killed.Add(1)
			}
			deciders[i%2] = startDeciderProcess(t, bin, ns.ClientURL())
		}
	}()

	// The pacing loop: callback n is due at start + n/rate.
	ta := newTally(tb.cfg.Timeout+answerSlack, verdict, allowAnswer)
	interval := time.Second / time.Duration(rate)
	sem := make(chan struct{}, 1024)
	var wg sync.WaitGroup
	start := time.Now()
	sent := 0
	lastReport := start
	for time.Since(start) < duration {
		if d := time.Until(start.Add(time.Duration(sent) * interval)); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Add(1)
		sent++
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ta.add(c.post(url, body))
		}()
		if time.Since(lastReport) >= 10*time.Second {
			lastReport = time.Now()
			t.Logf("%v: %d sent; %v", time.Since(start).Round(time.Second), sent, ta)
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	endRestarts()

	outcomes := outcomeCounts(t, tb, oaCreate)
	t.Logf("soak: %d callbacks in %v (%.0f/s, target %d/s); %d graceful and %d abrupt decider restarts",
		sent, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds(), rate, graceful.Load(), killed.Load())
	t.Logf("answers: %v", ta)
	t.Logf("outcomes: %v", outcomes)
	ta.check(t) // zero lost (errors, non-200, other bodies) and zero late
	if got := ta.total(); got != sent {
		t.Errorf("%d answers for %d callbacks sent", got, sent)
	}
	if float64(sent) < 0.95*float64(rate)*elapsed.Seconds() {
		t.Errorf("the pacing loop fell behind: %d callbacks in %v", sent, elapsed)
	}
	if decided, _ := ta.counts(); decided < sent*9/10 {
		t.Errorf("only %d of %d callbacks decided", decided, sent)
	}

	c.closeIdle()
	settleGoroutines(t, baseGoroutines, 5, 15*time.Second)
	heap := heapAfterGC()
	t.Logf("heap %d KiB at the start, %d KiB at the end", baseHeap>>10, heap>>10)
	if heap > baseHeap+16<<20 {
		t.Errorf("heap grew from %d KiB to %d KiB", baseHeap>>10, heap>>10)
	}
}

// deciderProcess is a decider running as its own process.
type deciderProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
	out  *logRing
}

func startDeciderProcess(t *testing.T, bin, natsURL string) *deciderProcess {
	out := newLogRing(50)
	cmd := exec.Command(bin, "--nats-url", natsURL, "--reserved", "admin", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Errorf("start decider: %v", err)
		return &deciderProcess{done: closedChan()}
	}
	d := &deciderProcess{cmd: cmd, done: make(chan struct{}), out: out}
	go func() { _ = cmd.Wait(); close(d.done) }()
	return d
}

func closedChan() chan struct{} { c := make(chan struct{}); close(c); return c }

// stop asks the decider to finish (SIGTERM) and kills it after grace.
func (d *deciderProcess) stop(grace time.Duration) {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(grace):
		d.kill()
	}
}

// kill ends the decider at once, as a crash would.
func (d *deciderProcess) kill() {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Kill()
	<-d.done
}
