package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/bridge"
	"github.com/timbus-dev/timbus/internal/needs"
)

// TestQuickEndToEnd builds timbus, nats-server and timbus-bench and runs the
// benchmark's quick mode through every setup: wrk → raw-http, timbus with
// embedded and external NATS, with an audit subscriber, with an SDK decider,
// the naive bridge, raw NATS, and the open-loop half load. It checks that
// every run completed without errors (other than those a stalling machine
// causes, see stalled), that every audit record reached the subscriber, and
// that the result JSON holds every number the README needs, each plausible;
// it does not judge the numbers, nor the floors, which a short run on a busy
// machine cannot settle.
//
// make test runs it beside the other packages' tests, on a machine that is
// anything but quiet: nothing here may assume that the benchmark has the
// machine to itself (see checkCPU and stalled).
func TestQuickEndToEnd(t *testing.T) {
	needs.Tools(t, "wrk — run `make deps` (Debian/Ubuntu) or install it", needs.Commands("wrk"))
	// Where the CPU goes is read from /proc: the benchmark runs on Linux.
	needs.Tools(t, "Linux, whose /proc the benchmark reads CPU time from", needs.File("/proc/stat", "/proc/stat"))
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build timbus and nats-server: %v", err)
	}
	// The time the test has (make test gives each package 8m) goes to the
	// benchmark's own --max-time, and what is left before it to the build:
	// from a cold cache, on 2 CPUs busy with other packages' tests, building
	// timbus and nats-server takes minutes, not a fixed share of them.
	const benchMax = 150 * time.Second // --quick plans ~45s
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
		// Both deciders of the SDK setup answered a share of its load, and
		// said what it cost them.
		if d := r.Deciders; (d != nil) != (r.Setup == setupEmbeddedSDK) ||
			d != nil && (d.Plain.Answered <= 0 || d.SDK.Answered <= 0 || d.Plain.Answered+d.SDK.Answered < r.Requests ||
				!positive(d.Plain.PerAnswer()) || !positive(d.SDK.PerAnswer())) {
			t.Errorf("%s: deciders %+v", what, d)
		}
		// Every record delivered (else the run has a problem, failed above).
		if a := r.Audit; (a != nil) != (r.Setup == setupEmbeddedAudit) ||
			a != nil && (a.Published < r.Requests || a.Received != a.Published || a.Dropped != 0 || a.Failed != 0 || a.Error != "") {
			t.Errorf("%s: audit records %+v", what, a)
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
		"timbus-embedded / naive-embedded", "timbus-embedded-audit / naive-embedded",
		"timbus-embedded-sdk / naive-embedded", "timbus-embedded-sdk / timbus-embedded",
	} {
		if !ratios[name] {
			t.Errorf("ratio %q missing or zero", name)
		}
	}
	if len(res.HalfLoad) != 1 || res.HalfLoad[0].Setup != setupEmbedded || res.HalfLoad[0].Rounds != 1 ||
		res.HalfLoad[0].P99 <= 0 || res.HalfLoad[0].RawHTTPP99 <= 0 {
		t.Errorf("half load: %+v", res.HalfLoad)
	}
	// The SDK decider's CPU per answer against the plain one's, the two
	// sharing one run's load.
	if len(res.CPU) != 1 || res.CPU[0].Name != nameSDKDeciderCPU || res.CPU[0].N != 1 || !positive(res.CPU[0].Median) {
		t.Errorf("CPU ratios: %+v", res.CPU)
	}
	// Every floor is there, with its numbers; whether it is met is no
	// question for a busy test machine.
	var floors []string
	for _, f := range res.Floors {
		floors = append(floors, f.Name)
		if f.Name != nameSDKDeciderCPU && (f.Rounds != 1 || !positive(f.Value)) || f.Unit == "ms" && !positive(f.P999) {
			t.Errorf("floor %+v", f)
		}
	}
	if want := []string{
		"timbus-embedded / naive-embedded", "timbus-embedded-audit / naive-embedded", "timbus-external / naive",
		"p99 of timbus-embedded at half its max", nameSDKDeciderCPU,
	}; !slices.Equal(floors, want) {
		t.Errorf("floors %v, want %v", floors, want)
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
		setupEmbeddedAudit: {"wrk", "timbus", "decider", "audit-sink"},
		setupEmbeddedSDK:   {"wrk", "timbus", "decider"},
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
		if col != cpuIdle && col != cpuSoftirq && col != cpuSteal {
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
	// No floor compares these two setups.
	if f := rep.floors(); len(f) != 0 {
		t.Errorf("floors: %+v", f)
	}
}

// synthRun is one synthetic run of a setup: its throughput over raw-http's,
// its decider's CPU per request (µs; 0: not measured; for timbus-embedded-sdk
// the SDK decider's, beside a plain one at 5 µs) and its open-loop p99
// and p99.9 at half load (µs; 0: no half load).
type synthRun struct {
	index, decider, p99, p999 float64
}

// synthReport builds a report as run would from rounds of synthetic runs,
// each between raw-http runs.
func synthReport(setups, halfLoad []string, rounds ...map[string]synthRun) *report {
	raw := func(round int) runRecord {
		return runRecord{Setup: setupRawHTTP, Round: round, loadResult: loadResult{RPS: 100000, Requests: 200000}}
	}
	rep := &report{cfg: benchConfig{setups: setups, halfLoad: halfLoad, rounds: len(rounds)}, runs: []runRecord{raw(1)}}
	for i, round := range rounds {
		for _, s := range setups {
			x, ok := round[s]
			if !ok {
				continue
			}
			r := runRecord{Setup: s, Round: i + 1, Index: x.index, loadResult: loadResult{RPS: x.index * 100000, Requests: 1000}}
			if x.decider > 0 {
				r.CPU = map[string]float64{"decider": x.decider}
				if s == setupEmbeddedSDK {
					r.Deciders = &deciderPair{Plain: served{Answered: 1000, CPU: 5000}, SDK: served{Answered: 1200, CPU: 1200 * x.decider}}
				}
			}
			if x.p99 > 0 {
				r.Half = &loadResult{TargetRate: r.RPS / 2, P99: x.p99, P999: x.p999}
			}
			rep.runs = append(rep.runs, r, raw(i+1))
		}
	}
	return rep
}

// Rounds for TestFloors and TestExitCode: naive-embedded at 0.30 of raw-http
// and naive at 0.20, timbus's setups around them. floorRoundBad misses every
// floor by far, so that only medians over the rounds can meet them.
var (
	floorRoundGood = map[string]synthRun{
		setupNaiveEmbedded: {index: 0.30}, setupNaive: {index: 0.20}, setupRawNATS: {index: 0.40},
		setupEmbedded:      {index: 0.285, decider: 5, p99: 2500, p999: 3000}, // 0.95
		setupEmbeddedAudit: {index: 0.264},                                    // 0.88
		setupEmbeddedSDK:   {index: 0.28, decider: 5.5},                       // CPU 1.1
		setupExternal:      {index: 0.19, p99: 3500, p999: 4500},              // 0.95
	}
	floorRoundJustMet = map[string]synthRun{
		setupNaiveEmbedded: {index: 0.30}, setupNaive: {index: 0.20}, setupRawNATS: {index: 0.40},
		setupEmbedded:      {index: 0.273, decider: 5, p99: 2900, p999: 3900}, // 0.91
		setupEmbeddedAudit: {index: 0.258},                                    // 0.86
		setupEmbeddedSDK:   {index: 0.27, decider: 5.9},                       // CPU 1.18
		setupExternal:      {index: 0.182, p99: 3900, p999: 5000},             // 0.91
	}
	floorRoundJustMissed = map[string]synthRun{
		setupNaiveEmbedded: {index: 0.30}, setupNaive: {index: 0.20}, setupRawNATS: {index: 0.40},
		setupEmbedded:      {index: 0.267, decider: 5, p99: 3100, p999: 4200}, // 0.89
		setupEmbeddedAudit: {index: 0.252},                                    // 0.84
		setupEmbeddedSDK:   {index: 0.26, decider: 6.1},                       // CPU 1.22
		setupExternal:      {index: 0.178, p99: 4100, p999: 5500},             // 0.89
	}
	floorRoundBad = map[string]synthRun{
		setupNaiveEmbedded: {index: 0.30}, setupNaive: {index: 0.20}, setupRawNATS: {index: 0.40},
		setupEmbedded:      {index: 0.18, decider: 5, p99: 9000, p999: 12000}, // 0.6
		setupEmbeddedAudit: {index: 0.15},                                     // 0.5
		setupEmbeddedSDK:   {index: 0.2, decider: 9},                          // CPU 1.8
		setupExternal:      {index: 0.10, p99: 9000, p999: 12000},             // 0.5
	}
	halfBoth = []string{setupEmbedded, setupExternal}
	halfAll  = []string{setupEmbedded, setupExternal, setupNaiveEmbedded, setupNaive}
)

// withNaiveTails is round with the naive bridges measured at half load too,
// their p99 (and p99.9) in µs.
func withNaiveTails(round map[string]synthRun, embedded, external float64) map[string]synthRun {
	out := maps.Clone(round)
	out[setupNaiveEmbedded] = synthRun{index: round[setupNaiveEmbedded].index, p99: embedded, p999: embedded * 1.5}
	out[setupNaive] = synthRun{index: round[setupNaive].index, p99: external, p999: external * 1.5}
	return out
}

// TestFloors checks issue 16's floors: each from the medians over the rounds
// of ratios measured in the same run, judged only when its setups ran.
func TestFloors(t *testing.T) {
	type want struct {
		value, p999 float64
		met         bool
		naive       float64 // the naive counterpart's half-load p99, ms
	}
	const (
		embedded = "timbus-embedded / naive-embedded"
		audit    = "timbus-embedded-audit / naive-embedded"
		external = "timbus-external / naive"
		halfEmb  = "p99 of timbus-embedded at half its max"
		halfExt  = "p99 of timbus-external at half its max"
		sdkCPU   = "decider CPU per request, SDK / plain"
	)
	for _, tt := range []struct {
		name string
		rep  *report
		want map[string]want
	}{
		{"met on the medians", synthReport(compared, halfBoth, floorRoundGood, floorRoundJustMet, floorRoundBad), map[string]want{
			embedded: {value: 0.91, met: true}, audit: {value: 0.86, met: true}, external: {value: 0.91, met: true},
			halfEmb: {value: 2.9, p999: 3.9, met: true}, halfExt: {value: 3.9, p999: 5, met: true},
			sdkCPU: {value: 1.18, met: true},
		}},
		{"missed on the medians", synthReport(compared, halfBoth, floorRoundGood, floorRoundJustMissed, floorRoundBad), map[string]want{
			embedded: {value: 0.89}, audit: {value: 0.84}, external: {value: 0.89},
			halfEmb: {value: 3.1, p999: 4.2}, halfExt: {value: 4.1, p999: 5.5},
			sdkCPU: {value: 1.22},
		}},
		{"the naive bridges' own tails beside the latency floors", synthReport(compared, halfAll,
			withNaiveTails(floorRoundGood, 4000, 5000), withNaiveTails(floorRoundJustMissed, 4500, 6000), withNaiveTails(floorRoundBad, 9000, 9500)), map[string]want{
			embedded: {value: 0.89}, audit: {value: 0.84}, external: {value: 0.89},
			halfEmb: {value: 3.1, p999: 4.2, naive: 4.5}, halfExt: {value: 4.1, p999: 5.5, naive: 6},
			sdkCPU: {value: 1.22},
		}},
		{"only the setups that ran", synthReport([]string{setupEmbedded, setupNaive}, []string{setupNaive}, floorRoundGood), map[string]want{}},
		{"audit without timbus-embedded", synthReport([]string{setupEmbeddedAudit, setupNaiveEmbedded}, nil, floorRoundGood), map[string]want{
			audit: {value: 0.88, met: true},
		}},
		{"no decider CPU measured", synthReport([]string{setupEmbedded, setupEmbeddedSDK}, nil, map[string]synthRun{
			setupEmbedded: {index: 0.3}, setupEmbeddedSDK: {index: 0.3},
		}), map[string]want{sdkCPU: {}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]floor{}
			for _, f := range tt.rep.floors() {
				got[f.Name] = f
			}
			if len(got) != len(tt.want) {
				t.Errorf("floors %+v, want %d: %v", got, len(tt.want), tt.want)
			}
			for name, w := range tt.want {
				f, ok := got[name]
				switch {
				case !ok:
					t.Errorf("floor %q missing", name)
				case math.Abs(f.Value-w.value) > 1e-9 || math.Abs(f.P999-w.p999) > 1e-9 || f.Met != w.met || math.Abs(f.NaiveP99-w.naive) > 1e-9:
					t.Errorf("%s: %+v, want value %v, p99.9 %v, met %v, naive p99 %v", name, f, w.value, w.p999, w.met, w.naive)
				case w.naive > 0 && !strings.Contains(f.String(), fmt.Sprintf("at half its max: p99 %.2f ms", w.naive)):
					t.Errorf("%s: the report line does not quote the naive bridge: %s", name, f)
				}
			}
			missed := tt.rep.missedFloors()
			for name, w := range tt.want {
				if slices.Contains(missed, name) == w.met {
					t.Errorf("missedFloors %v: %q", missed, name)
				}
			}
			// The JSON line carries every floor, p99.9 next to the p99.
			line, err := json.Marshal(tt.rep.machine())
			if err != nil {
				t.Fatal(err)
			}
			var m machineResult
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatal(err)
			}
			if len(m.Floors) != len(tt.want) {
				t.Errorf("JSON floors: %+v", m.Floors)
			}
			for _, f := range m.Floors {
				if w := tt.want[f.Name]; f.Met != w.met || math.Abs(f.P999-w.p999) > 1e-3 {
					t.Errorf("JSON floor %+v, want %+v", f, w)
				}
			}
		})
	}
}

// TestExitCode: runs with errors fail the benchmark; missed floors fail it
// with --strict only.
func TestExitCode(t *testing.T) {
	met := func() *report { return synthReport(compared, halfBoth, floorRoundJustMet) }
	missed := func() *report { return synthReport(compared, halfBoth, floorRoundJustMissed) }
	invalid := func() *report {
		r := met()
		a := auditCheck{Published: 1000, Received: 990}
		r.runs[3].Audit = &a
		r.runs[3].Problem = strings.Join(a.problems(900), "; ")
		return r
	}
	for _, tt := range []struct {
		name   string
		rep    *report
		strict bool
		code   int
		stderr string
	}{
		{"met, strict", met(), true, exitOK, ""},
		{"missed", missed(), false, exitOK, ""},
		{"missed, strict", missed(), true, exitFailure, "floors missed: timbus-embedded / naive-embedded; timbus-embedded-audit / naive-embedded; timbus-external / naive; p99 of timbus-embedded at half its max; p99 of timbus-external at half its max; decider CPU per request, SDK / plain"},
		{"invalid run", invalid(), false, exitFailure, "timbus-embedded-audit (round 1): audit: timbus published 1000 records, the subscriber received 990"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := tt.rep.exitCode(tt.strict, &stderr); code != tt.code || !strings.Contains(stderr.String(), tt.stderr) || (tt.stderr == "") != (stderr.Len() == 0) {
				t.Errorf("exit %d, stderr %q; want %d, %q", code, stderr.String(), tt.code, tt.stderr)
			}
		})
	}
}

// TestAuditProblems: any record not delivered makes the run invalid.
func TestAuditProblems(t *testing.T) {
	for _, tt := range []struct {
		name string
		a    auditCheck
		want string // "" for none
	}{
		{"all delivered", auditCheck{Published: 1002, Received: 1002}, ""},
		{"lost on the way", auditCheck{Published: 1002, Received: 1001}, "audit: timbus published 1002 records, the subscriber received 1001"},
		{"dropped", auditCheck{Published: 1000, Received: 1000, Dropped: 2}, "audit: timbus dropped 2 records (its queue was full)"},
		{"refused", auditCheck{Published: 1000, Received: 1000, Failed: 2}, "audit: NATS refused 2 records"},
		{"not settled", auditCheck{Published: 1000, Received: 1000, Pending: 2}, "audit: 2 records still unpublished after the load"},
		{"unheard", auditCheck{Published: 990, Received: 990, Unheard: 12}, "audit: 990 records published for 1000 callbacks answered (12 unheard)"},
		{"unreadable", auditCheck{Error: "timbus's metrics lack timbus_audit_pending"}, "audit: timbus's metrics lack timbus_audit_pending"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(tt.a.problems(1000), "; ")
			if got != tt.want {
				t.Errorf("problems %q, want %q", got, tt.want)
			}
			rep := synthReport([]string{setupEmbeddedAudit}, nil, map[string]synthRun{setupEmbeddedAudit: {index: 0.3}})
			rep.runs[1].Audit, rep.runs[1].Problem = &tt.a, got
			if invalid := rep.invalidRuns(); (len(invalid) == 1) != (tt.want != "") {
				t.Errorf("invalid runs: %+v", invalid)
			}
		})
	}
}

// TestCheckAudit runs a real timbus (package bridge, embedded NATS) and the
// audit-sink subcommand, posts callbacks and checks the count: it settles
// when the sink hears every record, and a sink that hears none of them (it
// subscribes elsewhere while someone else takes the records) makes the run
// invalid.
func TestCheckAudit(t *testing.T) {
	body, err := callbackBody()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, sinkSubject string
		settle            time.Duration
		problem           string
	}{
		{"every record delivered", auditSubject, 30 * time.Second, ""},
		{"records missing", "timbus.audit.elsewhere.>", 300 * time.Millisecond, "audit: timbus published 8 records, the subscriber received 0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := bridge.DefaultConfig()
			cfg.Listen, cfg.NATSListen = "127.0.0.1:0", "127.0.0.1:0"
			cfg.Apps = []bridge.App{{ID: benchApp}}
			cfg.Timeout = 200 * time.Millisecond // no decider: the default, soon
			b, err := bridge.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := b.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := b.Shutdown(stopCtx); err != nil {
					t.Errorf("Shutdown: %v", err)
				}
			})
			// Someone takes every record, so that timbus publishes them.
			nc, err := nats.Connect(b.NATSURL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Subscribe(auditSubject, func(*nats.Msg) {}); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			sink := startSink(ctx, t, b.NATSURL(), tt.sinkSubject)

			const callbacks = 8
			url := "http://" + b.Addr() + benchQuery
			for range callbacks {
				resp, err := http.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("callback: %s", resp.Status)
				}
			}
			// timbus publishes on a goroutine of its own: once it has, the
			// sink's count is all that may be missing.
			metrics := "http://" + b.Addr() + "/metrics"
			for deadline := time.Now().Add(30 * time.Second); ; {
				a, err := scrapeAudit(ctx, metrics)
				if err != nil {
					t.Fatal(err)
				}
				if a.Published+a.Failed+a.Dropped >= callbacks && a.Pending == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("timbus did not publish the records: %+v", a)
				}
				time.Sleep(10 * time.Millisecond)
			}
			a, err := checkAudit(ctx, &instance{sink: sink, metricsURL: metrics}, tt.settle)
			if err != nil {
				t.Fatal(err)
			}
			if a.Published != callbacks || a.Dropped != 0 || a.Failed != 0 || a.Pending != 0 {
				t.Errorf("counts %+v, want %d published", a, callbacks)
			}
			if got := strings.Join(a.problems(callbacks), "; "); got != tt.problem {
				t.Errorf("problems %q, want %q (counts %+v)", got, tt.problem, a)
			}
		})
	}
}

// startSink runs the audit-sink subcommand in this process, as the proc the
// benchmark reads, until the test ends.
func startSink(ctx context.Context, t *testing.T, url, subject string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	p := &proc{name: "audit-sink", role: "audit-sink", out: newLineBuffer(), output: &headTail{}, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		if code := runAuditSink(ctx, []string{"--nats-url", url, "--subject", subject}, io.MultiWriter(p.out, p.output), p.output); code != exitOK {
			p.err = fmt.Errorf("exit %d", code)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	if _, err := p.waitLine(ctx, "ready", startTimeout); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestParseAuditMetrics: the counters are read from the Prometheus text
// format, large ones in exponent notation; a missing one is an error.
func TestParseAuditMetrics(t *testing.T) {
	const text = `# HELP timbus_audit_published_total Audit records published.
# TYPE timbus_audit_published_total counter
timbus_audit_published_total 1.234567e+06
timbus_audit_dropped_total 0
timbus_audit_failed_total 3
timbus_audit_unheard_total 4
timbus_audit_pending 5
timbus_audit_published_total_other 9
`
	a, err := parseAuditMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if want := (auditCheck{Published: 1234567, Failed: 3, Unheard: 4, Pending: 5}); a != want {
		t.Errorf("%+v, want %+v", a, want)
	}
	if _, err := parseAuditMetrics(strings.NewReader(strings.Replace(text, "timbus_audit_pending 5\n", "", 1))); err == nil || !strings.Contains(err.Error(), "timbus_audit_pending") {
		t.Errorf("missing counter: %v", err)
	}
	if _, err := parseAuditMetrics(strings.NewReader(strings.Replace(text, "failed_total 3", "failed_total x", 1))); err == nil {
		t.Error("bad value accepted")
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
	if c.rounds != 2 || c.duration != 2*time.Second || c.warmup != 0 || !slices.Equal(c.halfLoad, []string{setupEmbedded}) || c.requesters != 64 ||
		!slices.Equal(c.setups, compared) {
		t.Errorf("quick with explicit rounds: %+v", c)
	}
	// By default every HTTP bridge that runs is measured at half load: the
	// naive bridges beside timbus's two, for comparison.
	c, err = parseBenchFlags(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{setupEmbedded, setupExternal, setupNaiveEmbedded, setupNaive}; !slices.Equal(c.halfLoad, want) {
		t.Errorf("default half load %v, want %v", c.halfLoad, want)
	}
	// timbus at its own defaults unless told otherwise.
	if c.logLevel != "" || logLevelArgs(c.logLevel) != nil {
		t.Errorf("timbus log level %q: %v", c.logLevel, logLevelArgs(c.logLevel))
	}
	c, err = parseBenchFlags([]string{"--setups", "timbus-embedded-sdk,timbus-embedded-audit", "--timbus-log-level", "warn"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.setups, []string{setupEmbeddedAudit, setupEmbeddedSDK}) || len(c.halfLoad) != 0 ||
		!slices.Equal(logLevelArgs(c.logLevel), []string{"--log-level", "warn"}) {
		t.Errorf("new setups: %+v", c)
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
