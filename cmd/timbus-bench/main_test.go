package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/timbus-dev/timbus/internal/needs"
)

// TestQuickEndToEnd builds timbus, nats-server and timbus-bench and runs the
// benchmark's quick mode through every setup: wrk → raw-http, timbus with
// embedded and external NATS, the naive bridge, raw NATS, and the open-loop
// half load. It checks that every run completed without errors (other than
// those a stalling machine causes, see stalled) and that the result JSON
// holds every number the README needs, each plausible; it does not judge the
// numbers, which a short run on a busy machine cannot settle.
//
// make test runs it beside the other packages' tests, on a machine that is
// anything but quiet: nothing here may assume that the benchmark has the
// machine to itself (see checkCPU and stalled).
func TestQuickEndToEnd(t *testing.T) {
	needs.Tools(t, "wrk — run `make deps` (Debian/Ubuntu) or install it", needs.Commands("wrk"))
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build timbus and nats-server: %v", err)
	}
	// The time the test has (make test gives each package 8m) goes to the
	// benchmark's own --max-time, and what is left before it to the build:
	// from a cold cache, on 2 CPUs busy with other packages' tests, building
	// timbus and nats-server takes minutes, not a fixed share of them.
	const benchMax = 150 * time.Second // --quick plans ~30s
	deadline, ok := t.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Minute)
	}
	buildBy := deadline.Add(-benchMax - 45*time.Second)
	bin := t.TempDir()
	buildCtx, cancelBuild := context.WithDeadline(context.Background(), buildBy)
	defer cancelBuild()
	build := exec.CommandContext(buildCtx, goTool, "build", "-o", bin+string(filepath.Separator),
		"./cmd/timbus", "./cmd/timbus-bench", "github.com/nats-io/nats-server/v2")
	build.Dir = moduleRoot(t)
	buildStart := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		if buildCtx.Err() != nil {
			t.Fatalf("go build did not finish in the %v the test's deadline leaves it (%v for the benchmark after it): %v\n%s",
				time.Since(buildStart).Round(time.Second), benchMax, err, out)
		}
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("go build took %v", time.Since(buildStart).Round(time.Second))

	out := filepath.Join(t.TempDir(), "result.json")
	chart := filepath.Join(t.TempDir(), "bench.svg")
	ctx, cancel := context.WithTimeout(context.Background(), benchMax+15*time.Second)
	defer cancel()
	run := exec.CommandContext(ctx, filepath.Join(bin, "timbus-bench"), "--quick",
		"--timbus", filepath.Join(bin, "timbus"), "--nats-server", filepath.Join(bin, "nats-server"),
		"--json", out, "--svg", chart, "--max-time", benchMax.String())
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	run.Cancel = func() error { return syscall.Kill(-run.Process.Pid, syscall.SIGKILL) }
	run.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	run.Stdout, run.Stderr = &stdout, &stderr
	start := time.Now()
	err = run.Run()
	t.Logf("timbus-bench --quick took %s:\n%s", time.Since(start).Round(time.Second), stdout.String())
	if err != nil {
		// A run with errors makes timbus-bench exit 1 after it wrote its
		// results; they are judged run by run below, as a busy machine may
		// cause some. Any other failure is the test's.
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != exitFailure || !strings.Contains(stderr.String(), " had errors, their numbers are not to be trusted") {
			t.Fatalf("timbus-bench --quick: %v\n%s", err, stderr.String())
		}
		t.Logf("timbus-bench --quick: %v\n%s", err, stderr.String())
	}

	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res machineResult
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("result JSON: %v\n%s", err, raw)
	}
	if !strings.Contains(stdout.String(), "BENCH_JSON "+strings.TrimSpace(string(raw))) {
		t.Error("stdout lacks the BENCH_JSON line matching --json")
	}
	// The same figures as a chart, naming every setup.
	doc, err := os.ReadFile(chart)
	if err != nil {
		t.Fatalf("--svg: %v", err)
	}
	chartText := svgText(t, doc)
	for _, s := range append([]string{setupRawHTTP}, compared...) {
		if !strings.Contains(chartText, s+"\n") {
			t.Errorf("the chart does not name setup %s", s)
		}
	}
	want := append([]string{setupRawHTTP}, compared...)
	var got []string
	for _, s := range res.Setups {
		got = append(got, s.Setup)
		// wrk prints p99 with three digits (e.g. 1.06s), p99.9 comes exact
		// from its Lua script: p99.9 may be below p99 by that rounding.
		if !positive(s.RPS) || !positive(s.P50) || !positive(s.P99) || !positive(s.P999) ||
			s.P99 < s.P50 || s.P999 < s.P99*0.995 {
			t.Errorf("%s: implausible numbers %+v", s.Setup, s)
		}
		if s.Setup != setupRawHTTP && !positive(s.VsRaw) {
			t.Errorf("%s: no ratio to raw-http", s.Setup)
		}
		checkCPU(t, s.Setup+" (medians)", s.Setup, s.CPU, 0, 0)
	}
	if !slices.Equal(got, want) {
		t.Errorf("setups %v, want %v", got, want)
	}
	if n := len(res.Runs); n != 1+2*len(compared) {
		t.Errorf("%d runs, want %d", n, 1+2*len(compared))
	}
	for i, r := range res.Runs {
		what := fmt.Sprintf("run %d (%s)", i+1, r.Setup)
		if !positive(r.RPS) || r.Requests <= 0 || !positive(r.Seconds) {
			t.Errorf("%s: implausible numbers %+v", what, r.loadResult)
		}
		if r.Problem != "" || r.Errors > 0 {
			if why := stalled(r); why != "" {
				t.Logf("%s: %s (%d errors); not a failure: %s", what, r.Problem, r.Errors, why)
			} else {
				t.Errorf("%s: %s (%d errors)", what, r.Problem, r.Errors)
			}
		}
		if r.Setup != setupRawNATS {
			checkCPU(t, what, r.Setup, r.CPU, r.RPS, r.Requests)
		}
	}
	ratios := map[string]bool{}
	for _, r := range res.Ratios {
		ratios[r.Name] = r.Median > 0
	}
	for _, name := range []string{
		"timbus-embedded / raw-http", "timbus-external / raw-http",
		"timbus-embedded / raw-nats", "timbus-external / raw-nats",
		"timbus-embedded / naive", "timbus-external / naive",
	} {
		if !ratios[name] {
			t.Errorf("ratio %q missing or zero", name)
		}
	}
	if len(res.HalfLoad) != 1 || res.HalfLoad[0].Setup != setupEmbedded || res.HalfLoad[0].Rounds != 1 ||
		res.HalfLoad[0].P99 <= 0 || res.HalfLoad[0].RawHTTPP99 <= 0 {
		t.Errorf("half load: %+v", res.HalfLoad)
	}
	if len(res.Floors) != 5 {
		t.Errorf("%d floors, want 5: %+v", len(res.Floors), res.Floors)
	}
}

// checkCPU checks what CPU accounting can show on any machine, quiet or
// busy: each of the setup's processes was measured, every share is a finite
// number, none negative, and, for a run (rps and requests given), each
// process did some work and together they used no more CPU than the machine
// has.
//
// It does not check that the shares add up to the machine's CPUs over the
// throughput, idle time included: they do on a quiet machine only. In make
// test, other packages' tests run beside the benchmark and take CPU that is
// no share here, and the machine's idle time (from /proc/stat) may count
// CPUs the benchmark's processes cannot run on.
func checkCPU(t *testing.T, what, setup string, cpu map[string]float64, rps float64, requests int64) {
	t.Helper()
	roles := map[string][]string{
		setupRawHTTP:       {"wrk", "raw-http"},
		setupEmbedded:      {"wrk", "timbus", "decider"},
		setupExternal:      {"wrk", "timbus", "nats-server", "decider"},
		setupNaive:         {"wrk", "naive", "nats-server", "decider"},
		setupNaiveEmbedded: {"wrk", "naive", "decider"},
	}[setup]
	if roles == nil {
		return // raw-nats: no HTTP, no accounting
	}
	for _, role := range roles {
		if _, ok := cpu[role]; !ok {
			t.Errorf("%s: no CPU time for %s: %v", what, role, cpu)
		}
	}
	processes := 0.0
	for col, v := range cpu {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			t.Errorf("%s: CPU share %s is %v: %v", what, col, v, cpu)
		}
		if col != cpuIdle && col != cpuSoftirq {
			processes += v
		}
	}
	if rps <= 0 {
		return // medians of several runs: their sum is of no one run
	}
	// /proc counts CPU time in 10ms ticks: a process that spends a µs or
	// more per request shows some only over 20000 requests or so, which a
	// starved machine may not answer in a 2s run.
	if requests >= 20000 {
		for _, role := range roles {
			if cpu[role] == 0 {
				t.Errorf("%s: no CPU time for %s over %d requests: %v", what, role, requests, cpu)
			}
		}
	}
	// µs per request × requests per second: the CPUs the processes kept
	// busy. A little over the machine's count is measurement: the ticks,
	// and wrk's own time includes its start and exit.
	if busy, have := processes*rps/1e6, float64(runtime.NumCPU()); busy > have*1.35 {
		t.Errorf("%s: the processes used %.1f µs of CPU per request, %.2f CPUs at %.0f req/s, on a machine with %.0f: %v",
			what, processes, busy, rps, have, cpu)
	}
}

// stalled tells why a run's problems are a busy machine's doing, or returns
// "" if any is not. make test runs other packages' tests beside the
// benchmark, and a machine that stalls for the decider timeout (1.5s) makes
// the bench report answers at that timeout, default verdicts, time-outs and
// open-loop requests never sent: each is allowed when the run shows such a
// stall, and nothing else is. A run that answered nothing, or whose typical
// answer took that long, has a problem of its own.
func stalled(r runRecord) string {
	limit := float64(deciderTimeout / time.Microsecond)
	if r.Requests <= 0 || r.P50 >= limit/2 {
		return ""
	}
	h := r.Half
	if h != nil && (h.Requests <= 0 || h.P50 >= limit/2) {
		return ""
	}
	closedStall := r.Max >= limit
	halfStall := h != nil && (h.Errors > 0 || h.Unsent > 0 || h.Max >= limit)
	for _, p := range strings.Split(r.Problem, "; ") {
		switch {
		case p == "":
		case strings.HasPrefix(p, "slowest answer took "):
		case strings.HasSuffix(p, " answers did not come from the decider") && (closedStall || halfStall):
			// Default verdicts, at the decider timeout.
		case h != nil && strings.HasPrefix(p, "half load: ") && strings.HasSuffix(p, " requests never sent: the load generator or the server fell behind"):
		case h != nil && strings.HasPrefix(p, "half load: ") && h.Errors <= h.Requests/10 &&
			(strings.HasSuffix(p, "e.g. timeout") || strings.Contains(p, "e.g. "+errBadAnswer.Error()+": HTTP 200 ")):
			// A few answers later than the client's timeout (the decider
			// timeout) or default verdicts, a few percent at most.
		case wrkStallErrors(r, p, closedStall):
		case r.Setup == setupRawNATS && strings.HasSuffix(p, "e.g. nats: timeout") && r.Errors <= r.Requests/10:
			// Replies later than nats-load's timeout (the decider timeout).
		default:
			return ""
		}
	}
	why := fmt.Sprintf("slowest answer %s, median %s", ms(r.Max), ms(r.P50))
	if h != nil {
		why += fmt.Sprintf("; half load: slowest answer %s, median %s, %d errors, %d requests unsent", ms(h.Max), ms(h.P50), h.Errors, h.Unsent)
	}
	return "what a machine that stalls for the decider timeout causes (" + why + ")"
}

// wrkStallErrors reports whether problem p is wrk's errors of a run that
// stalled, a few percent of its requests at most: answers later than wrk's 2s
// timeout, and in the naive setups, whose bridge answers 503 when the
// decider does not answer within the decider timeout, non-2xx answers.
func wrkStallErrors(r runRecord, p string, stall bool) bool {
	_, text, ok := strings.Cut(p, " errors, e.g. ")
	if !ok || r.Errors > r.Requests/10 {
		return false
	}
	var connect, read, write, timeout, status int64
	if n, err := fmt.Sscanf(text, "wrk: connect %d, read %d, write %d, timeout %d errors, %d non-2xx answers",
		&connect, &read, &write, &timeout, &status); n != 5 || err != nil {
		return false
	}
	naive := r.Setup == setupNaive || r.Setup == setupNaiveEmbedded
	return connect == 0 && read == 0 && write == 0 && (status == 0 || naive && stall)
}

func positive(x float64) bool { return x > 0 && !math.IsInf(x, 0) }

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("cannot find the module root: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// A real wrk 4.1 report, with the done() line of wrkScript and errors.
const wrkSample = `Running 2s test @ http://127.0.0.1:38601/?SdkAppid=1400000001
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   817.24us    1.45ms  20.83ms   87.07%
    Req/Sec   108.29k    22.02k  184.90k    90.00%
  Latency Distribution
     50%  179.00us
     75%  790.00us
     90%    2.74ms
     99%    1.06s
  431325 requests in 2.01s, 72.40MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec: 214817.41
Transfer/sec:     36.06MB
timbus-bench-wrk: requests=431325 duration_us=2007868 connect=0 read=3 write=0 timeout=2 status=7 p50=179 p75=790 p90=2745 p99=6759 p999=11349 max=20834
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk([]byte(wrkSample))
	if err != nil {
		t.Fatal(err)
	}
	if r.RPS != 214817.41 || r.P50 != 179 || r.P75 != 790 || r.P90 != 2740 || r.P99 != 1.06e6 || r.P999 != 11349 || r.Max != 20834 {
		t.Errorf("latencies or rate: %+v", r)
	}
	if r.Completed != 431325 || r.Requests != 431318 || r.Errors != 12 || r.Seconds != 2.007868 || r.FirstError == "" {
		t.Errorf("counts: %+v", r)
	}

	for name, text := range map[string]string{
		"no rate":         strings.Replace(wrkSample, "Requests/sec", "Requests", 1),
		"no distribution": strings.Replace(wrkSample, "     90%    2.74ms\n", "", 1),
		"no done line":    strings.Replace(wrkSample, wrkDonePrefix, "x", 1),
		"done lacks p999": strings.Replace(wrkSample, " p999=11349", "", 1),
		"bad unit":        strings.Replace(wrkSample, "2.74ms", "2.74h", 1),
	} {
		if _, err := parseWrk([]byte(text)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestWrkScript(t *testing.T) {
	s, err := wrkScript([]byte(`{"a":"]]","b":"]=]"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s, `wrk.body = [==[{"a":"]]","b":"]=]"}]==]`) {
		t.Errorf("body not quoted with an unused level:\n%s", s)
	}
	if _, err := wrkScript([]byte("{\n}")); err == nil {
		t.Error("a multi-line body was accepted")
	}
}

func TestCallbackBody(t *testing.T) {
	body, err := callbackBody()
	if err != nil {
		t.Fatal(err)
	}
	// The body the README's curl example sends.
	const want = `{"CallbackCommand":"OfficialAccount.CallbackBeforeCreateOfficialAccount","Operator_Account":"107867","Owner_Account":"107867","Name":"TestOfficialAccount","EventTime":1670574414123}`
	if string(body) != want {
		t.Errorf("body %s\nwant %s", body, want)
	}
}

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1000; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Microsecond)
	}
	var r loadResult
	r.fill(lat)
	if r.P50 != 500 || r.P90 != 900 || r.P99 != 990 || r.P999 != 999 || r.Max != 1000 {
		t.Errorf("%+v", r)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("empty: %v", got)
	}
	if got := percentile([]time.Duration{7}, 99.9); got != 7 {
		t.Errorf("one sample: %v", got)
	}
}

func TestSchedule(t *testing.T) {
	var got []string
	for _, r := range schedule(2, []string{setupEmbedded, setupNaive}) {
		got = append(got, r.setup)
	}
	want := []string{setupRawHTTP, setupEmbedded, setupRawHTTP, setupNaive, setupRawHTTP, setupEmbedded, setupRawHTTP, setupNaive, setupRawHTTP}
	if !slices.Equal(got, want) {
		t.Errorf("%v\nwant %v", got, want)
	}
}

// TestRatios checks that setups are compared round by round through their
// ratio to the raw-http runs around them.
func TestRatios(t *testing.T) {
	rep := &report{cfg: benchConfig{setups: []string{setupEmbedded, setupNaive}}}
	run := func(setup string, round int, rps, index float64) runRecord {
		return runRecord{Setup: setup, Round: round, loadResult: loadResult{RPS: rps}, Index: index}
	}
	rep.runs = []runRecord{
		run(setupRawHTTP, 1, 100, 0), run(setupEmbedded, 1, 45, 0.5), run(setupRawHTTP, 1, 80, 0),
		run(setupNaive, 1, 20, 0.25), run(setupRawHTTP, 1, 80, 0),
		run(setupEmbedded, 2, 20, 0.4), run(setupRawHTTP, 2, 50, 0),
		run(setupNaive, 2, 10, 0.2), run(setupRawHTTP, 2, 50, 0),
	}
	got := map[string]ratio{}
	for _, r := range rep.ratios() {
		got[r.Name] = r
	}
	if r := got["timbus-embedded / raw-http"]; math.Abs(r.Median-0.45) > 1e-9 || r.Min != 0.4 || r.Max != 0.5 || r.N != 2 {
		t.Errorf("embedded / raw-http: %+v", r)
	}
	if r := got["timbus-embedded / naive"]; math.Abs(r.Median-2) > 1e-9 || r.N != 2 {
		t.Errorf("embedded / naive: %+v", r)
	}
	if _, ok := got["timbus-embedded / raw-nats"]; ok {
		t.Error("ratio to a setup that did not run")
	}
	floors := map[string]bool{}
	for _, f := range rep.floors() {
		floors[f.Name] = f.Met
	}
	if !floors["timbus-embedded / raw-http"] || !floors["timbus-embedded / naive"] || len(floors) != 2 {
		t.Errorf("floors: %v", floors)
	}
}

func TestHeadTail(t *testing.T) {
	var h headTail
	big := bytes.Repeat([]byte("0123456789"), logKeep/5) // two logKeeps
	h.Write([]byte("start\n"))
	h.Write(big)
	h.Write([]byte("end\n"))
	var out bytes.Buffer
	h.writeTo(&out)
	s := out.String()
	if !strings.HasPrefix(s, "start\n") || !strings.HasSuffix(s, "end\n") || !strings.Contains(s, "bytes left out") {
		t.Errorf("head or tail lost: %q … %q", s[:20], s[len(s)-20:])
	}
	if len(s) > 2*logKeep+100 {
		t.Errorf("kept %d bytes", len(s))
	}
	if got := string(h.last(4)); got != "end\n" {
		t.Errorf("last: %q", got)
	}
}

func TestFlags(t *testing.T) {
	c, err := parseBenchFlags([]string{"--quick", "--rounds", "2"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.rounds != 2 || c.duration != 2*time.Second || c.warmup != 0 || !slices.Equal(c.halfLoad, []string{setupEmbedded}) || c.requesters != 64 {
		t.Errorf("quick with explicit rounds: %+v", c)
	}
	for _, args := range [][]string{
		{"--duration", "1500ms"},
		{"--setups", "timbus-embedded,bogus"},
		{"--setups", "raw-nats", "--half-load", "raw-nats"},
		{"--setups", "naive", "--half-load", "timbus-embedded"}, // a setup that does not run
		{"extra"},
	} {
		if _, err := parseBenchFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// TestStalled: the problems a busy machine causes are told apart from the
// others, and only when the run shows the stall.
func TestStalled(t *testing.T) {
	const limit = float64(deciderTimeout / time.Microsecond)
	ok := loadResult{Requests: 40000, RPS: 20000, P50: 2000, Max: 60000}
	stall := ok
	stall.Max = limit + 3000
	half := &loadResult{Requests: 20000, RPS: 10000, P50: 500, Max: 50000, Errors: 12, FirstError: "timeout"}
	for _, tt := range []struct {
		name    string
		r       runRecord
		excused bool
	}{
		{"answers at the decider timeout", runRecord{Setup: setupEmbedded, loadResult: stall,
			Problem: "12 answers did not come from the decider; slowest answer took 1503.00ms: at the decider timeout, it may be a default verdict"}, true},
		{"defaults without a stall", runRecord{Setup: setupEmbedded, loadResult: ok,
			Problem: "12 answers did not come from the decider"}, false},
		{"half load time-outs", runRecord{Setup: setupEmbedded, loadResult: ok, Half: half,
			Problem: "12 answers did not come from the decider; half load: 12 errors, e.g. timeout"}, true},
		{"half load defaults", runRecord{Setup: setupEmbedded, loadResult: ok, Half: half,
			Problem: `half load: 12 errors, e.g. answer is not the decider's verdict: HTTP 200 "{}"`}, true},
		{"half load refused", runRecord{Setup: setupEmbedded, loadResult: ok, Half: half,
			Problem: "half load: 12 errors, e.g. dial tcp4 127.0.0.1:1: connect: connection refused"}, false},
		{"half load mostly failing", runRecord{Setup: setupEmbedded, loadResult: ok,
			Half:    &loadResult{Requests: 100, P50: 500, Errors: 5000, FirstError: "timeout"},
			Problem: "half load: 5000 errors, e.g. timeout"}, false},
		{"unsent", runRecord{Setup: setupEmbedded, loadResult: ok, Half: &loadResult{Requests: 20000, P50: 500, Unsent: 30},
			Problem: "half load: 30 requests never sent: the load generator or the server fell behind"}, true},
		{"wrk time-outs", runRecord{Setup: setupRawHTTP, loadResult: func() loadResult { r := stall; r.Errors = 3; return r }(),
			Problem: "3 errors, e.g. wrk: connect 0, read 0, write 0, timeout 3 errors, 0 non-2xx answers"}, true},
		{"naive 503s in a stall", runRecord{Setup: setupNaive, loadResult: func() loadResult { r := stall; r.Errors = 128; return r }(),
			Problem: "128 errors, e.g. wrk: connect 0, read 0, write 0, timeout 64 errors, 64 non-2xx answers"}, true},
		{"naive 503s without a stall", runRecord{Setup: setupNaive, loadResult: func() loadResult { r := ok; r.Errors = 64; return r }(),
			Problem: "64 errors, e.g. wrk: connect 0, read 0, write 0, timeout 0 errors, 64 non-2xx answers"}, false},
		{"wrk time-outs galore", runRecord{Setup: setupRawHTTP, loadResult: func() loadResult { r := stall; r.Errors = 9000; return r }(),
			Problem: "9000 errors, e.g. wrk: connect 0, read 0, write 0, timeout 9000 errors, 0 non-2xx answers"}, false},
		{"wrk read errors", runRecord{Setup: setupRawHTTP, loadResult: stall,
			Problem: "3 errors, e.g. wrk: connect 0, read 3, write 0, timeout 0 errors, 0 non-2xx answers"}, false},
		{"non-2xx", runRecord{Setup: setupEmbedded, loadResult: stall,
			Problem: "3 errors, e.g. wrk: connect 0, read 0, write 0, timeout 0 errors, 3 non-2xx answers"}, false},
		{"raw NATS time-outs", runRecord{Setup: setupRawNATS, loadResult: func() loadResult { r := ok; r.Errors = 5; return r }(),
			Problem: "5 errors, e.g. nats: timeout"}, true},
		{"typical answer at the timeout", runRecord{Setup: setupEmbedded, loadResult: loadResult{Requests: 100, P50: limit, Max: limit},
			Problem: "slowest answer took 1500.00ms: at the decider timeout, it may be a default verdict"}, false},
		{"nothing answered", runRecord{Setup: setupEmbedded, Problem: "no request completed"}, false},
		{"decider silent", runRecord{Setup: setupEmbedded, loadResult: stall,
			Problem: "the decider did not report how many requests it answered"}, false},
	} {
		if why := stalled(tt.r); (why != "") != tt.excused {
			t.Errorf("%s: stalled = %q, want excused %v", tt.name, why, tt.excused)
		}
	}
}
