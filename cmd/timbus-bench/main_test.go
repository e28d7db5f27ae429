package main

import (
	"bytes"
	"context"
	"encoding/json"
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
// half load. It checks that every run completed without errors and that the
// result JSON holds every number the README needs; it does not judge the
// numbers, which a short run on a busy machine cannot settle.
func TestQuickEndToEnd(t *testing.T) {
	needs.Tools(t, "wrk — run `make deps` (Debian/Ubuntu) or install it", needs.Commands("wrk"))
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build timbus and nats-server: %v", err)
	}
	bin := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, goTool, "build", "-o", bin+string(filepath.Separator),
		"./cmd/timbus", "./cmd/timbus-bench", "github.com/nats-io/nats-server/v2")
	build.Dir = moduleRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	out := filepath.Join(t.TempDir(), "result.json")
	run := exec.CommandContext(ctx, filepath.Join(bin, "timbus-bench"), "--quick",
		"--timbus", filepath.Join(bin, "timbus"), "--nats-server", filepath.Join(bin, "nats-server"),
		"--json", out, "--max-time", "90s")
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	run.Cancel = func() error { return syscall.Kill(-run.Process.Pid, syscall.SIGKILL) }
	run.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	run.Stdout, run.Stderr = &stdout, &stderr
	start := time.Now()
	err = run.Run()
	t.Logf("timbus-bench --quick took %s:\n%s", time.Since(start).Round(time.Second), stdout.String())
	if err != nil {
		t.Fatalf("timbus-bench --quick: %v\n%s", err, stderr.String())
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
	want := append([]string{setupRawHTTP}, compared...)
	var got []string
	for _, s := range res.Setups {
		got = append(got, s.Setup)
		if s.RPS <= 0 || s.P50 <= 0 || s.P99 < s.P50 || s.P999 < s.P99 {
			t.Errorf("%s: implausible numbers %+v", s.Setup, s)
		}
		if s.Setup != setupRawHTTP && s.VsRaw <= 0 {
			t.Errorf("%s: no ratio to raw-http", s.Setup)
		}
		checkCPU(t, s)
	}
	if !slices.Equal(got, want) {
		t.Errorf("setups %v, want %v", got, want)
	}
	if n := len(res.Runs); n != 1+2*len(compared) {
		t.Errorf("%d runs, want %d", n, 1+2*len(compared))
	}
	for _, r := range res.Runs {
		if r.Problem != "" || r.Errors > 0 {
			t.Errorf("%s run: %s (%d errors)", r.Setup, r.Problem, r.Errors)
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

// checkCPU checks a setup's CPU accounting: each of its processes is there,
// and the sum agrees with the throughput (the machine's CPUs over req/s).
func checkCPU(t *testing.T, s setupSummary) {
	t.Helper()
	roles := map[string][]string{
		setupRawHTTP:       {"wrk", "raw-http"},
		setupEmbedded:      {"wrk", "timbus", "decider"},
		setupExternal:      {"wrk", "timbus", "nats-server", "decider"},
		setupNaive:         {"wrk", "naive", "nats-server", "decider"},
		setupNaiveEmbedded: {"wrk", "naive", "decider"},
	}[s.Setup]
	if roles == nil {
		return // raw-nats: no HTTP, no accounting
	}
	sum := 0.0
	for _, col := range cpuColumns {
		sum += s.CPU[col]
	}
	for _, role := range roles {
		if s.CPU[role] <= 0 {
			t.Errorf("%s: no CPU time for %s: %v", s.Setup, role, s.CPU)
		}
	}
	want := float64(runtime.NumCPU()) * 1e6 / s.RPS
	if sum < want*0.65 || sum > want*1.35 {
		t.Errorf("%s: CPU per request adds up to %.1f µs, but %d CPUs at %.0f req/s make %.1f µs", s.Setup, sum, runtime.NumCPU(), s.RPS, want)
	}
}

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
