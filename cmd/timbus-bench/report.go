package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Floors the project aims at (see the README): timbus at its default
// settings against the bridge a user would write by hand, all from the same
// run, medians over the rounds. They are reported, and only enforced with
// --strict.
const (
	floorEmbedded      = 0.90 // timbus-embedded / naive-embedded
	floorEmbeddedAudit = 0.85 // timbus-embedded-audit / naive-embedded (and every record delivered: else the run is invalid)
	floorExternal      = 0.90 // timbus-external / naive, on the same external nats-server
	// p99 open-loop at half of timbus's own throughput.
	floorHalfP99Embedded = 3 * time.Millisecond
	floorHalfP99External = 4 * time.Millisecond
	// The SDK decider's CPU per request over the plain decider's, at most.
	floorSDKDeciderCPU = 1.2
)

// nameSDKDeciderCPU names the comparison of the two deciders' CPU.
const nameSDKDeciderCPU = "decider CPU per request, SDK / plain"

type report struct {
	cfg      benchConfig
	started  time.Time
	elapsed  time.Duration
	runs     []runRecord
	profiled *runRecord
}

func (r *report) runsOf(setup string) []runRecord {
	var out []runRecord
	for _, x := range r.runs {
		if x.Setup == setup {
			out = append(out, x)
		}
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *report) median(setup string, f func(runRecord) float64) float64 {
	var xs []float64
	for _, x := range r.runsOf(setup) {
		xs = append(xs, f(x))
	}
	return median(xs)
}

// ratio is a throughput ratio over the rounds: its median and range.
type ratio struct {
	Name   string  `json:"name"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"rounds"`
}

func ratioOf(name string, xs []float64) ratio {
	if len(xs) == 0 {
		return ratio{Name: name}
	}
	return ratio{Name: name, Median: median(xs), Min: slices.Min(xs), Max: slices.Max(xs), N: len(xs)}
}

// ratios are the comparisons that count. Each setup's throughput is taken
// relative to the raw-http runs around it; two setups are compared round by
// round through those relative numbers, so that drift of the host cancels.
func (r *report) ratios() []ratio {
	index := func(setup string) map[int]float64 {
		m := map[int]float64{}
		for _, x := range r.runsOf(setup) {
			if x.Index > 0 {
				m[x.Round] = x.Index
			}
		}
		return m
	}
	vsRaw := func(setup string) []float64 {
		var xs []float64
		for _, x := range r.runsOf(setup) {
			if x.Index > 0 {
				xs = append(xs, x.Index)
			}
		}
		return xs
	}
	pair := func(a, b string) []float64 {
		ia, ib := index(a), index(b)
		var xs []float64
		for round, x := range ia {
			if y, ok := ib[round]; ok && y > 0 {
				xs = append(xs, x/y)
			}
		}
		return xs
	}
	has := func(s string) bool { return slices.Contains(r.cfg.setups, s) }
	var out []ratio
	for _, s := range r.cfg.setups {
		out = append(out, ratioOf(s+" / "+setupRawHTTP, vsRaw(s)))
	}
	for _, t := range []string{setupEmbedded, setupExternal} {
		for _, other := range []string{setupRawNATS, setupNaive, setupNaiveEmbedded} {
			if has(t) && has(other) {
				out = append(out, ratioOf(t+" / "+other, pair(t, other)))
			}
		}
	}
	for _, t := range []string{setupEmbeddedAudit, setupEmbeddedSDK} {
		for _, other := range []string{setupNaiveEmbedded, setupEmbedded} {
			if has(t) && has(other) {
				out = append(out, ratioOf(t+" / "+other, pair(t, other)))
			}
		}
	}
	return out
}

// cpuRatios compares the SDK decider's CPU per answered request with the
// plain decider's, round by round. The two share timbus-embedded-sdk's load
// in one queue group, so each answers about half of the same requests at
// the same time: their CPU per answer is compared at one rate, and host
// drift between runs does not enter. (Taken from two runs, the deciders'
// rates would differ by timbus's own run-to-run spread, and a process's CPU
// per message falls as its rate rises.) A round whose deciders did not both
// report is left out.
func (r *report) cpuRatios() []ratio {
	if !slices.Contains(r.cfg.setups, setupEmbeddedSDK) {
		return nil
	}
	var xs []float64
	for _, x := range r.runsOf(setupEmbeddedSDK) {
		if d := x.Deciders; d != nil && d.Plain.PerAnswer() > 0 && d.SDK.PerAnswer() > 0 {
			xs = append(xs, d.SDK.PerAnswer()/d.Plain.PerAnswer())
		}
	}
	return []ratio{ratioOf(nameSDKDeciderCPU, xs)}
}

// floor is one target and whether it was met.
type floor struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"` // median over Rounds
	Target float64 `json:"target"`
	AtMost bool    `json:"at_most,omitempty"` // the value must not exceed the target
	Unit   string  `json:"unit,omitempty"`    // "ms" for latencies; ratios have none
	// P999 is reported next to a p99 floor (median over the rounds, ms),
	// and so is the p99 of the naive bridge on the same NATS at half of its
	// own maximum, when that was measured.
	P999       float64 `json:"p99_9_ms,omitempty"`
	NaiveSetup string  `json:"naive_setup,omitempty"`
	NaiveP99   float64 `json:"naive_p99_ms,omitempty"`
	Rounds     int     `json:"rounds"` // rounds with numbers; none: missed
	Met        bool    `json:"met"`
}

func newFloor(name string, value, target float64, atMost bool, rounds int) floor {
	met := value >= target
	if atMost {
		met = value <= target
	}
	return floor{Name: name, Value: value, Target: target, AtMost: atMost, Rounds: rounds, Met: met && rounds > 0}
}

func (f floor) String() string {
	state := "met"
	switch {
	case f.Rounds == 0:
		state = "MISSED (no numbers)"
	case !f.Met:
		state = "MISSED"
	}
	cmp := "≥"
	if f.AtMost {
		cmp = "≤"
	}
	if f.Unit == "ms" {
		line := fmt.Sprintf("%-40s %8.2f ms   target %s %.2f ms   %s   (p99.9 %.2f ms", f.Name, f.Value, cmp, f.Target, state, f.P999)
		if f.NaiveSetup != "" {
			line += fmt.Sprintf("; %s at half its max: p99 %.2f ms", f.NaiveSetup, f.NaiveP99)
		}
		return line + ")"
	}
	return fmt.Sprintf("%-40s %8.3f      target %s %.2f      %s", f.Name, f.Value, cmp, f.Target, state)
}

// floors are the targets of the setups that ran: a floor whose setups did
// not all run is not judged.
func (r *report) floors() []floor {
	var out []floor
	ratios := map[string]ratio{}
	for _, x := range r.ratios() {
		ratios[x.Name] = x
	}
	for _, f := range []struct {
		name   string
		target float64
	}{
		{setupEmbedded + " / " + setupNaiveEmbedded, floorEmbedded},
		{setupEmbeddedAudit + " / " + setupNaiveEmbedded, floorEmbeddedAudit},
		{setupExternal + " / " + setupNaive, floorExternal},
	} {
		if x, ok := ratios[f.name]; ok {
			out = append(out, newFloor(f.name, x.Median, f.target, false, x.N))
		}
	}
	halves := r.halfLoads()
	for _, h := range halves {
		var target time.Duration
		var naive string
		switch h.Setup {
		case setupEmbedded:
			target, naive = floorHalfP99Embedded, setupNaiveEmbedded
		case setupExternal:
			target, naive = floorHalfP99External, setupNaive
		default:
			continue // the naive bridges: measured for comparison only
		}
		f := newFloor("p99 of "+h.Setup+" at half its max", h.P99, float64(target)/float64(time.Millisecond), true, h.Rounds)
		f.Unit, f.P999 = "ms", h.P999
		// The hand-written bridge at half of its own maximum, in the same
		// run: how much of a missed latency floor is the machine's.
		if i := slices.IndexFunc(halves, func(x halfSummary) bool { return x.Setup == naive }); i >= 0 {
			f.NaiveSetup, f.NaiveP99 = naive, halves[i].P99
		}
		out = append(out, f)
	}
	for _, x := range r.cpuRatios() {
		out = append(out, newFloor(x.Name, x.Median, floorSDKDeciderCPU, true, x.N))
	}
	return out
}

func (r *report) missedFloors() []string {
	var out []string
	for _, f := range r.floors() {
		if !f.Met {
			out = append(out, f.Name)
		}
	}
	return out
}

// exitCode is the benchmark's verdict once its report is out: a run with
// errors fails it, and so, with --strict, does a missed floor. It says why on
// stderr.
func (r *report) exitCode(strict bool, stderr io.Writer) int {
	if invalid := r.invalidRuns(); len(invalid) > 0 {
		fmt.Fprintf(stderr, "timbus-bench: %d run(s) had errors, their numbers are not to be trusted:\n", len(invalid))
		for _, x := range invalid {
			fmt.Fprintf(stderr, "  %s (round %d): %s\n", x.Setup, x.Round, x.Problem)
		}
		return exitFailure
	}
	if missed := r.missedFloors(); strict && len(missed) > 0 {
		fmt.Fprintln(stderr, "timbus-bench: floors missed:", strings.Join(missed, "; "))
		return exitFailure
	}
	return exitOK
}

func (r *report) invalidRuns() []runRecord {
	var out []runRecord
	for _, x := range r.runs {
		if x.Problem != "" {
			out = append(out, x)
		}
	}
	if r.profiled != nil && r.profiled.Problem != "" {
		out = append(out, *r.profiled)
	}
	return out
}

// halfSummary sums up a setup's open-loop runs at half its throughput.
// Latencies in milliseconds.
type halfSummary struct {
	Setup  string  `json:"setup"`
	Rounds int     `json:"rounds"`
	Rate   float64 `json:"rate"` // median of the rates
	P50    float64 `json:"p50_ms"`
	P90    float64 `json:"p90_ms"`
	P99    float64 `json:"p99_ms"`
	P99Min float64 `json:"p99_ms_min"`
	P99Max float64 `json:"p99_ms_max"`
	P999   float64 `json:"p99_9_ms"`
	// RawHTTPP99 is the p99 of raw-http at the same rate in the last round:
	// what the load generator and the HTTP hop alone cost.
	RawHTTPP99  float64 `json:"raw_http_same_rate_p99_ms,omitempty"`
	RawHTTPP999 float64 `json:"raw_http_same_rate_p99_9_ms,omitempty"`
}

func (r *report) halfLoads() []halfSummary {
	var out []halfSummary
	for _, s := range r.cfg.halfLoad {
		h := halfSummary{Setup: s}
		var rate, p50, p90, p99, p999 []float64
		for i, x := range r.runs {
			if x.Setup != s || x.Half == nil {
				continue
			}
			rate, p50, p90 = append(rate, x.Half.TargetRate), append(p50, x.Half.P50/1e3), append(p90, x.Half.P90/1e3)
			p99, p999 = append(p99, x.Half.P99/1e3), append(p999, x.Half.P999/1e3)
			if i+1 < len(r.runs) && r.runs[i+1].Setup == setupRawHTTP && r.runs[i+1].Half != nil {
				h.RawHTTPP99, h.RawHTTPP999 = round3(r.runs[i+1].Half.P99/1e3), round3(r.runs[i+1].Half.P999/1e3)
			}
		}
		if len(p99) == 0 {
			continue
		}
		h.Rounds = len(p99)
		h.Rate = math.Round(median(rate))
		h.P50, h.P90, h.P99, h.P999 = round3(median(p50)), round3(median(p90)), round3(median(p99)), round3(median(p999))
		h.P99Min, h.P99Max = round3(slices.Min(p99)), round3(slices.Max(p99))
		out = append(out, h)
	}
	return out
}

// ms formats microseconds as milliseconds.
func ms(us float64) string { return fmt.Sprintf("%.2fms", us/1e3) }

// setupSummary is a setup's medians over its runs.
type setupSummary struct {
	Setup  string  `json:"setup"`
	Runs   int     `json:"runs"`
	RPS    float64 `json:"rps"`
	P50    float64 `json:"p50_ms"`
	P99    float64 `json:"p99_ms"`
	P999   float64 `json:"p99_9_ms"`
	VsRaw  float64 `json:"vs_raw_http,omitempty"`
	VsLow  float64 `json:"vs_raw_http_min,omitempty"`
	VsHigh float64 `json:"vs_raw_http_max,omitempty"`
	// CPU is µs of CPU per request by process and machine state.
	CPU map[string]float64 `json:"cpu_us_per_request,omitempty"`
}

func (r *report) summaries() []setupSummary {
	var out []setupSummary
	byName := map[string]ratio{}
	for _, x := range r.ratios() {
		byName[x.Name] = x
	}
	for _, s := range append([]string{setupRawHTTP}, r.cfg.setups...) {
		sum := setupSummary{
			Setup: s,
			Runs:  len(r.runsOf(s)),
			RPS:   math.Round(r.median(s, func(x runRecord) float64 { return x.RPS })),
			P50:   round3(r.median(s, func(x runRecord) float64 { return x.P50 }) / 1e3),
			P99:   round3(r.median(s, func(x runRecord) float64 { return x.P99 }) / 1e3),
			P999:  round3(r.median(s, func(x runRecord) float64 { return x.P999 }) / 1e3),
			CPU:   r.cpuSummary(s),
		}
		if x, ok := byName[s+" / "+setupRawHTTP]; ok && x.N > 0 {
			sum.VsRaw, sum.VsLow, sum.VsHigh = round3(x.Median), round3(x.Min), round3(x.Max)
		}
		out = append(out, sum)
	}
	return out
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

func (r *report) print(w io.Writer) {
	c := r.cfg
	fmt.Fprintf(w, "\ntimbus-bench: %s, %d round(s), %s runs, %d connections, %d wrk threads, %d CPUs, %s; took %s\n\n",
		c.timbusVer, c.rounds, c.duration, c.connections, c.threads, runtime.NumCPU(), runtime.Version(), r.elapsed.Round(time.Second))
	fmt.Fprintln(w, "| setup | req/s | p50 | p99 | p99.9 | vs raw-http |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: |")
	for _, s := range r.summaries() {
		vs := "1"
		if s.Setup != setupRawHTTP {
			vs = fmt.Sprintf("%.3f (%.3f–%.3f)", s.VsRaw, s.VsLow, s.VsHigh)
		}
		fmt.Fprintf(w, "| %s | %.0f | %.2f ms | %.2f ms | %.2f ms | %s |\n", s.Setup, s.RPS, s.P50, s.P99, s.P999, vs)
	}
	fmt.Fprintln(w, "\nMedians over the rounds; \"vs raw-http\" is each run's req/s over the mean of the raw-http runs right before and after it (range in brackets).")
	fmt.Fprintln(w, "\nRatios (median over rounds, range in brackets):")
	for _, x := range r.ratios() {
		fmt.Fprintf(w, "  %-40s %.3f  (%.3f–%.3f, %d round(s))\n", x.Name, x.Median, x.Min, x.Max, x.N)
	}
	r.printCPU(w)
	r.printAudit(w)
	if halves := r.halfLoads(); len(halves) > 0 {
		fmt.Fprintln(w, "\nOpen-loop at half the throughput just measured, on the same processes (medians over rounds; wrk2-style:")
		fmt.Fprintln(w, "a request delayed by a busy connection counts from its scheduled time). raw-http at the same rate, in the")
		fmt.Fprintln(w, "last round, shows what the load generator and the HTTP hop alone cost.")
		fmt.Fprintln(w, "\n| setup | req/s | p50 | p90 | p99 | p99.9 | raw-http p99 at that rate |")
		fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
		for _, h := range halves {
			fmt.Fprintf(w, "| %s | %.0f | %.2f ms | %.2f ms | %.2f ms (%.2f–%.2f) | %.2f ms | %.2f ms |\n",
				h.Setup, h.Rate, h.P50, h.P90, h.P99, h.P99Min, h.P99Max, h.P999, h.RawHTTPP99)
		}
	}
	fmt.Fprintln(w, "\nFloors:")
	for _, f := range r.floors() {
		fmt.Fprintln(w, "  "+f.String())
	}
	fmt.Fprintln(w)
}

// machineResult is the JSON line: everything needed to update the README.
type machineResult struct {
	Version  int            `json:"version"`
	Date     string         `json:"date"`
	Host     map[string]any `json:"host"`
	Config   map[string]any `json:"config"`
	Setups   []setupSummary `json:"setups"`
	Ratios   []ratio        `json:"ratios"`
	CPU      []ratio        `json:"cpu_ratios,omitempty"` // CPU per request compared: the SDK decider's with the plain one's
	HalfLoad []halfSummary  `json:"half_load,omitempty"`
	Floors   []floor        `json:"floors"`
	Runs     []runRecord    `json:"runs"`
	Profiled *runRecord     `json:"profiled,omitempty"`
	Seconds  float64        `json:"seconds"`
}

func (r *report) machine() machineResult {
	c := r.cfg
	ratios := r.ratios()
	for i := range ratios {
		ratios[i].Median, ratios[i].Min, ratios[i].Max = round3(ratios[i].Median), round3(ratios[i].Min), round3(ratios[i].Max)
	}
	floors := r.floors()
	for i := range floors {
		floors[i].Value = round3(floors[i].Value)
	}
	cpuRatios := r.cpuRatios()
	for i := range cpuRatios {
		cpuRatios[i].Median, cpuRatios[i].Min, cpuRatios[i].Max = round3(cpuRatios[i].Median), round3(cpuRatios[i].Min), round3(cpuRatios[i].Max)
	}
	return machineResult{
		Version: 1,
		Date:    r.started.UTC().Format(time.RFC3339),
		Host:    map[string]any{"cpus": runtime.NumCPU(), "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH},
		Config: map[string]any{
			"rounds": c.rounds, "duration_s": c.duration.Seconds(), "warmup_s": c.warmup.Seconds(),
			"connections": c.connections, "wrk_threads": c.threads, "nats_requesters": c.requesters,
			"timbus_log_level": orDefault(c.logLevel), "quick": c.quick, "timbus": c.timbusVer,
		},
		Setups:   r.summaries(),
		Ratios:   ratios,
		CPU:      cpuRatios,
		HalfLoad: r.halfLoads(),
		Floors:   floors,
		Runs:     r.runs,
		Profiled: r.profiled,
		Seconds:  math.Round(r.elapsed.Seconds()),
	}
}

// cpuColumns orders the CPU table: the load generator, the front, NATS, the
// decider, and idle time; they add up to the machine's CPUs over the
// throughput. Softirq, the kernel's loopback networking, comes after the sum:
// the kernel charges most of it to whichever process was running, so it is
// part of the columns before, shown for scale.
var cpuColumns = []string{"wrk", "raw-http", "timbus", "naive", "nats-server", "decider", "audit-sink", cpuIdle}

// cpuSummary is a setup's median CPU per request by column.
func (r *report) cpuSummary(setup string) map[string]float64 {
	out := map[string]float64{}
	for _, col := range append(cpuColumns, cpuSoftirq, cpuSteal) {
		var xs []float64
		for _, x := range r.runsOf(setup) {
			if v, ok := x.CPU[col]; ok {
				xs = append(xs, v)
			}
		}
		if len(xs) > 0 {
			out[col] = math.Round(median(xs)*10) / 10
		}
	}
	return out
}

// printCPU prints where the CPU went per request: why each setup reaches the
// throughput it does.
func (r *report) printCPU(w io.Writer) {
	var rows []string
	for _, s := range append([]string{setupRawHTTP}, r.cfg.setups...) {
		sum := r.cpuSummary(s)
		if len(sum) == 0 {
			continue
		}
		row := "| " + s + " |"
		total := 0.0
		for _, col := range cpuColumns {
			v, ok := sum[col]
			if !ok {
				row += " — |"
				continue
			}
			total += v
			row += fmt.Sprintf(" %.1f |", v)
		}
		rows = append(rows, row+fmt.Sprintf(" %.1f | %.1f | %.1f |", total, sum[cpuSoftirq], sum[cpuSteal]))
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nCPU per answered request in the closed-loop runs, µs (medians over rounds). The sum is the machine's")
	fmt.Fprintln(w, "CPUs over the throughput; softirq (loopback networking) is mostly charged to the processes already.")
	fmt.Fprintln(w, "Stolen is time the hypervisor kept the machine's CPUs from running (not in the sum): where it is")
	fmt.Fprintln(w, "more than a few percent of the sum, that run had a slower machine than its neighbours:")
	fmt.Fprintln(w, "\n| setup | "+strings.Join(cpuColumns, " | ")+" | sum | of which softirq | stolen |")
	fmt.Fprintln(w, "| --- |"+strings.Repeat(" ---: |", len(cpuColumns)+3))
	for _, row := range rows {
		fmt.Fprintln(w, row)
	}
	for _, x := range r.cpuRatios() {
		perAnswer := func(of func(*deciderPair) served) float64 {
			return r.median(setupEmbeddedSDK, func(x runRecord) float64 {
				if x.Deciders == nil {
					return 0
				}
				return of(x.Deciders).PerAnswer()
			})
		}
		plain := perAnswer(func(d *deciderPair) served { return d.Plain })
		sdk := perAnswer(func(d *deciderPair) served { return d.SDK })
		fmt.Fprintf(w, "\n%s: %.3f  (%.3f–%.3f, %d round(s)); the two answered halves of timbus-embedded-sdk's load\n"+
			"in one queue group, each over its whole life: %.1f µs per answer with the SDK, %.1f µs plain (medians)\n",
			x.Name, x.Median, x.Min, x.Max, x.N, sdk, plain)
	}
}

// printAudit says whether every audit record of timbus-embedded-audit
// reached its subscriber, over all its runs.
func (r *report) printAudit(w io.Writer) {
	var sum auditCheck
	runs, bad := 0, 0
	for _, x := range r.runsOf(setupEmbeddedAudit) {
		if x.Audit == nil {
			continue
		}
		runs++
		sum.Published += x.Audit.Published
		sum.Received += x.Audit.Received
		sum.Dropped += x.Audit.Dropped
		sum.Failed += x.Audit.Failed
		if strings.Contains(x.Problem, "audit: ") {
			bad++
		}
	}
	if runs == 0 {
		return
	}
	verdict := "every record delivered"
	if bad > 0 {
		verdict = fmt.Sprintf("NOT every record delivered in %d run(s): see their problems", bad)
	}
	fmt.Fprintf(w, "\nAudit records of %s (%d run(s), warm-up and probes included): %d published by timbus, %d received by the subscriber, %d dropped, %d failed: %s.\n",
		setupEmbeddedAudit, runs, sum.Published, sum.Received, sum.Dropped, sum.Failed, verdict)
}
