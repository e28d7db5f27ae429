package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The setups. raw-http is the reference every other run is compared with.
const (
	setupRawHTTP  = "raw-http"
	setupEmbedded = "timbus-embedded"
	setupExternal = "timbus-external"
	setupNaive    = "naive"
	// setupNaiveEmbedded is the naive bridge with a NATS server embedded in
	// its process, which the decider reaches over loopback: what timbus
	// embedded is, minus everything timbus does besides forwarding.
	setupNaiveEmbedded = "naive-embedded"
	setupRawNATS       = "raw-nats"
	// setupEmbeddedAudit is timbus-embedded with a process subscribed to
	// the audit records (audit-sink): what recording every callback costs,
	// the check that every record reaches the subscriber included.
	setupEmbeddedAudit = "timbus-embedded-audit"
	// setupEmbeddedSDK is timbus-embedded with two deciders in one queue
	// group: the plain one and the same written with the Go SDK
	// (sdk-decider). Their CPU per answer is what the SDK costs a decider.
	setupEmbeddedSDK = "timbus-embedded-sdk"
	// setupProfiled is timbus-embedded with the bridge hosted by this binary
	// under the CPU profiler; only --cpuprofile runs it, outside the ratios.
	setupProfiled = "timbus-embedded-profiled"
	// setupNaiveProfiled is naive-embedded under the CPU profiler, the
	// profile that of timbus-embedded is compared with (pprof -diff_base).
	setupNaiveProfiled = "naive-embedded-profiled"
)

// compared are the setups run between raw-http runs, in this order.
var compared = []string{setupEmbedded, setupEmbeddedAudit, setupEmbeddedSDK, setupExternal, setupNaive, setupNaiveEmbedded, setupRawNATS}

type benchConfig struct {
	timbus      string
	natsServer  string
	wrk         string
	self        string
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	connections int
	threads     int
	requesters  int
	setups      []string // subset of compared, in compared's order
	halfLoad    []string // setups measured open-loop at half their throughput
	maxTime     time.Duration
	jsonOut     string
	svgOut      string
	cpuProfile  string
	workDir     string
	keepLogs    bool
	logLevel    string // timbus --log-level; empty: timbus's default
	timbusVer   string // first line of timbus version
	strict      bool
	quick       bool
}

func parseBenchFlags(args []string, stderr io.Writer) (benchConfig, error) {
	var c benchConfig
	fs := flag.NewFlagSet("timbus-bench run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.timbus, "timbus", "bin/timbus", "timbus binary (make build)")
	fs.StringVar(&c.natsServer, "nats-server", "bin/nats-server", "nats-server binary (GOBIN=$PWD/bin go install github.com/nats-io/nats-server/v2@v2.15.2); looked up in PATH when missing")
	fs.StringVar(&c.wrk, "wrk", "wrk", "wrk binary (apt-get install wrk)")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds; each runs every setup once, between raw-http runs")
	fs.DurationVar(&c.duration, "duration", 5*time.Second, "measured time per run (whole seconds: wrk's unit)")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "unmeasured load before each run (whole seconds; 0: none)")
	fs.IntVar(&c.connections, "connections", 64, "HTTP connections (wrk -c)")
	fs.IntVar(&c.threads, "threads", 2, "wrk threads (wrk -t)")
	fs.IntVar(&c.requesters, "nats-requesters", 0, "concurrent NATS requesters for raw-nats (0: as many as --connections)")
	setups := fs.String("setups", strings.Join(compared, ","), "setups compared with raw-http, from "+strings.Join(compared, ","))
	halfLoad := fs.String("half-load", strings.Join([]string{setupEmbedded, setupExternal, setupNaiveEmbedded, setupNaive}, ","),
		"setups whose latency is measured open-loop at half their throughput (empty: none; by default those of these among --setups: timbus's two, and the naive bridges for comparison)")
	fs.DurationVar(&c.maxTime, "max-time", 0, "abort after this long (0: the planned time plus a margin)")
	fs.StringVar(&c.jsonOut, "json", "", "also write the result JSON to this file")
	fs.StringVar(&c.svgOut, "svg", filepath.Join("bin", "bench.svg"), "also draw the figures (throughput, latency percentiles) as an SVG chart in this file (empty: none)")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "after the measurement, profile timbus-embedded (bridge hosted by timbus-bench) into this file and naive-embedded into its -naive sibling (cpu.prof, cpu-naive.prof)")
	fs.StringVar(&c.workDir, "workdir", "", "where child logs go (default: a temporary directory, removed unless something failed)")
	fs.BoolVar(&c.keepLogs, "keep-logs", false, "keep the child logs (the beginning and end of each child's output)")
	fs.StringVar(&c.logLevel, "timbus-log-level", "", "timbus --log-level (default: none passed, timbus's own default, as in production)")
	fs.BoolVar(&c.strict, "strict", false, "exit 1 when a floor is missed")
	fs.BoolVar(&c.quick, "quick", false, "smoke test: 1 round of 2 s runs of every setup without warm-up, half load of timbus-embedded only (flags given explicitly win)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.quick {
		if !set["rounds"] {
			c.rounds = 1
		}
		if !set["duration"] {
			c.duration = 2 * time.Second
		}
		if !set["warmup"] {
			c.warmup = 0
		}
		if !set["half-load"] {
			*halfLoad = setupEmbedded
		}
	}
	if c.requesters == 0 {
		c.requesters = c.connections
	}
	for _, s := range splitList(*setups) {
		if !slices.Contains(compared, s) {
			return c, fmt.Errorf("--setups: unknown setup %q (known: %s)", s, strings.Join(compared, ", "))
		}
	}
	for _, s := range compared {
		if slices.Contains(splitList(*setups), s) {
			c.setups = append(c.setups, s)
		}
	}
	for _, s := range splitList(*halfLoad) {
		if !set["half-load"] && !slices.Contains(c.setups, s) {
			continue // a default, for a setup left out of --setups
		}
		if s != setupEmbedded && s != setupExternal && s != setupNaive && s != setupNaiveEmbedded {
			return c, fmt.Errorf("--half-load: %q is not an HTTP bridge setup (%s, %s, %s, %s)", s, setupEmbedded, setupExternal, setupNaive, setupNaiveEmbedded)
		}
		if !slices.Contains(c.setups, s) {
			return c, fmt.Errorf("--half-load: %q is not among --setups", s)
		}
		c.halfLoad = append(c.halfLoad, s)
	}
	switch {
	case c.rounds < 1:
		return c, errors.New("--rounds must be at least 1")
	case c.duration < time.Second || c.duration%time.Second != 0:
		return c, errors.New("--duration must be whole seconds, at least 1s (wrk's unit)")
	case c.warmup < 0 || c.warmup%time.Second != 0:
		return c, errors.New("--warmup must be whole seconds (wrk's unit)")
	case c.connections < 1 || c.threads < 1 || c.threads > c.connections:
		return c, errors.New("need 1 ≤ --threads ≤ --connections")
	case c.requesters < 1:
		return c, errors.New("--nats-requesters must be at least 1")
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// schedule is the interleaved order of the throughput runs: raw-http first,
// then each compared setup followed by raw-http, once per round, so that
// every compared run has a raw-http run right before and right after it.
func schedule(rounds int, setups []string) []plannedRun {
	runs := []plannedRun{{setup: setupRawHTTP, round: 1}}
	for r := 1; r <= rounds; r++ {
		for _, s := range setups {
			runs = append(runs, plannedRun{setup: s, round: r}, plannedRun{setup: setupRawHTTP, round: r})
		}
	}
	return runs
}

type plannedRun struct {
	setup string
	round int
}

// perRunOverhead is about what starting and stopping a setup takes.
const perRunOverhead = 500 * time.Millisecond

func (c benchConfig) planned() time.Duration {
	n := len(schedule(c.rounds, c.setups))
	t := time.Duration(n) * (c.duration + c.warmup + perRunOverhead)
	half := c.duration + max(c.warmup, time.Second)
	t += time.Duration(len(c.halfLoad)*(c.rounds+1)) * half
	if c.cpuProfile != "" {
		t += c.duration + perRunOverhead
	}
	if slices.Contains(c.setups, setupEmbeddedAudit) {
		// One more process to start, and the wait for its count.
		t += time.Duration(c.rounds) * perRunOverhead
	}
	return t
}

// bench is one benchmark: its settings, children and results.
type bench struct {
	cfg    benchConfig
	out    io.Writer
	procs  *procs
	body   []byte
	script string // wrk's Lua script
	failed bool   // keep the logs
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseBenchFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "timbus-bench:", err)
		return exitUsage
	}
	if err := cfg.resolveBinaries(); err != nil {
		fmt.Fprintln(stderr, "timbus-bench:", err)
		return exitFailure
	}
	sigCtx, stop := untilSignal(ctx)
	defer stop()
	if cfg.maxTime == 0 {
		cfg.maxTime = cfg.planned() + cfg.planned()/2 + time.Minute
	}
	ctx, cancel := context.WithTimeout(sigCtx, cfg.maxTime)
	defer cancel()

	b, err := newBench(cfg, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "timbus-bench:", err)
		return exitFailure
	}
	defer b.close(stderr)
	rep, err := b.run(ctx)
	if err != nil {
		b.failed = true
		switch {
		case sigCtx.Err() != nil:
			err = fmt.Errorf("interrupted by a signal; children stopped (%w)", err)
		case ctx.Err() == context.DeadlineExceeded:
			err = fmt.Errorf("%w (aborted: over --max-time %s)", err, cfg.maxTime)
		}
		fmt.Fprintln(stderr, "timbus-bench:", err)
		return exitFailure
	}
	rep.print(stdout)
	line, err := json.Marshal(rep.machine())
	if err != nil {
		fmt.Fprintln(stderr, "timbus-bench:", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "BENCH_JSON %s\n", line)
	if cfg.jsonOut != "" {
		if err := os.WriteFile(cfg.jsonOut, append(line, '\n'), 0o644); err != nil {
			fmt.Fprintln(stderr, "timbus-bench:", err)
			return exitFailure
		}
	}
	if cfg.svgOut != "" {
		if err := writeSVGFile(cfg.svgOut, rep.machine()); err != nil {
			fmt.Fprintln(stderr, "timbus-bench:", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "Chart: %s\n", cfg.svgOut)
	}
	if len(rep.invalidRuns()) > 0 {
		b.failed = true // keep the logs
	}
	return rep.exitCode(cfg.strict, stderr)
}

// resolveBinaries finds every program the benchmark runs, or says how to get
// it.
func (c *benchConfig) resolveBinaries() error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find my own binary: %w", err)
	}
	c.self = self
	if c.wrk, err = exec.LookPath(c.wrk); err != nil {
		return fmt.Errorf("wrk not found (%w): install it with `apt-get install -y wrk`", err)
	}
	if c.timbus, err = exec.LookPath(c.timbus); err != nil {
		return fmt.Errorf("timbus binary not found (%w): run `make build` or pass --timbus", err)
	}
	if _, err := os.Stat(c.natsServer); err != nil {
		if p, lerr := exec.LookPath("nats-server"); lerr == nil {
			c.natsServer = p
		} else {
			return fmt.Errorf("nats-server not found at %s nor in PATH: GOBIN=$PWD/bin go install github.com/nats-io/nats-server/v2@v2.15.2", c.natsServer)
		}
	}
	if c.natsServer, err = filepath.Abs(c.natsServer); err != nil {
		return err
	}
	if c.timbus, err = filepath.Abs(c.timbus); err != nil {
		return err
	}
	if c.cpuProfile != "" {
		// The profiled child writes it; make it independent of its directory.
		if c.cpuProfile, err = filepath.Abs(c.cpuProfile); err != nil {
			return err
		}
	}
	return nil
}

func newBench(cfg benchConfig, out io.Writer) (*bench, error) {
	body, err := callbackBody()
	if err != nil {
		return nil, err
	}
	dir := cfg.workDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "timbus-bench-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg.workDir = dir
	b := &bench{cfg: cfg, out: out, procs: newProcs(dir), body: body, script: filepath.Join(dir, "callback.lua")}
	if err := writeWrkScript(b.script, body); err != nil {
		return nil, err
	}
	return b, nil
}

// close kills every child still running and removes the logs, unless
// something failed or they were asked for.
func (b *bench) close(stderr io.Writer) {
	b.procs.killAll()
	switch {
	case b.failed || b.cfg.keepLogs:
		fmt.Fprintf(stderr, "timbus-bench: child logs kept in %s\n", b.cfg.workDir)
	case b.cfg.workDir != "":
		os.RemoveAll(b.cfg.workDir)
	}
}

// run performs the whole benchmark.
func (b *bench) run(ctx context.Context) (*report, error) {
	c := b.cfg
	plan := schedule(c.rounds, c.setups)
	fmt.Fprintf(b.out, "timbus-bench: %d throughput runs (%d round(s) of %s), %s each after %s warm-up, %d connections, %d wrk threads, %d NATS requesters; half load after each run of %s; planned ≈ %s, at most %s\n",
		len(plan), c.rounds, strings.Join(c.setups, ", "), c.duration, c.warmup, c.connections, c.threads, c.requesters,
		orNone(strings.Join(c.halfLoad, ", ")), c.planned().Round(time.Second), c.maxTime.Round(time.Second))
	out, _, err := b.procs.runOnce(ctx, "timbus-version", 10*time.Second, c.timbus, "version")
	if err != nil {
		return nil, err
	}
	c.timbusVer, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	b.cfg.timbusVer = c.timbusVer
	fmt.Fprintf(b.out, "timbus-bench: %s at %s (--log-level %s), nats-server %s, wrk %s, logs in %s\n",
		c.timbusVer, c.timbus, orDefault(c.logLevel), c.natsServer, c.wrk, c.workDir)

	rep := &report{cfg: c, started: time.Now()}
	for i, pr := range plan {
		// Half load follows each closed-loop run of the setups asked for, on
		// the same processes, at half the throughput just measured: the
		// host's speed drifts too much to use a number from minutes before.
		// In the last round the next raw-http run gets the same rate, as a
		// reference for what the load generator alone costs.
		var halfRate float64
		switch {
		case slices.Contains(c.halfLoad, pr.setup):
			halfRate = -1
		case pr.setup == setupRawHTTP && pr.round == c.rounds && i > 0 && rep.runs[i-1].Half != nil:
			halfRate = rep.runs[i-1].Half.TargetRate
		}
		r, err := b.measure(ctx, i+1, pr.setup, pr.round, halfRate)
		if err != nil {
			return nil, fmt.Errorf("%s (run %d of %d): %w", pr.setup, i+1, len(plan), err)
		}
		rep.runs = append(rep.runs, r)
		if r.Setup == setupRawHTTP && i >= 2 {
			// The run before the previous raw-http one now has both neighbours.
			prev := &rep.runs[i-1]
			prev.Index = prev.RPS / ((rep.runs[i-2].RPS + r.RPS) / 2)
			b.progress(len(plan), i, *prev)
		}
		b.progress(len(plan), i+1, r)
	}
	if c.cpuProfile != "" {
		r, err := b.measure(ctx, len(plan)+1, setupProfiled, 0, 0)
		if err != nil {
			return nil, fmt.Errorf("profiled run: %w", err)
		}
		rep.profiled = &r
		fmt.Fprintf(b.out, "profile    %-16s %8.0f req/s (bridge in timbus-bench under pprof); CPU profile: %s\n", setupEmbedded, r.RPS, c.cpuProfile)
		n, err := b.measure(ctx, len(plan)+2, setupNaiveProfiled, 0, 0)
		if err != nil {
			return nil, fmt.Errorf("profiled naive run: %w", err)
		}
		naive := naiveProfilePath(c.cpuProfile)
		fmt.Fprintf(b.out, "profile    %-16s %8.0f req/s (under pprof); CPU profile: %s\n", setupNaiveEmbedded, n.RPS, naive)
		fmt.Fprintf(b.out, "           view them with: go tool pprof -top %s %s\n", c.self, c.cpuProfile)
		fmt.Fprintf(b.out, "           what timbus adds:  go tool pprof -top -diff_base %s %s %s\n", naive, c.self, c.cpuProfile)
	}
	rep.elapsed = time.Since(rep.started)
	return rep, nil
}

// naiveProfilePath names the naive bridge's profile after timbus's:
// cpu.prof → cpu-naive.prof.
func naiveProfilePath(timbusProfile string) string {
	ext := filepath.Ext(timbusProfile)
	return strings.TrimSuffix(timbusProfile, ext) + "-naive" + ext
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func orDefault(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

func problemSuffix(p string) string {
	if p == "" {
		return ""
	}
	return "  INVALID: " + p
}

// progress prints a run once its numbers are known: compared runs once the
// raw-http run after them is in.
func (b *bench) progress(total, n int, r runRecord) {
	if r.Setup != setupRawHTTP && r.Index == 0 {
		return
	}
	idx := ""
	if r.Index > 0 {
		idx = fmt.Sprintf("  %.3f× raw-http", r.Index)
	}
	fmt.Fprintf(b.out, "[%2d/%d] round %d  %-21s %8.0f req/s  p50 %s  p99 %s  p99.9 %s%s%s\n",
		n, total, r.Round, r.Setup, r.RPS, ms(r.P50), ms(r.P99), ms(r.P999), idx, problemSuffix(r.Problem))
	if h := r.Half; h != nil {
		fmt.Fprintf(b.out, "        then open-loop  %8.0f req/s  p50 %s  p99 %s  p99.9 %s\n", h.TargetRate, ms(h.P50), ms(h.P99), ms(h.P999))
	}
	if a := r.Audit; a != nil {
		fmt.Fprintf(b.out, "        audit records: %d published by timbus, %d received by the subscriber, %d dropped, %d failed\n", a.Published, a.Received, a.Dropped, a.Failed)
	}
}

// instance is one setup's processes, running.
type instance struct {
	setup   string
	url     string // HTTP setups: where wrk sends the callback
	natsURL string // where the decider listens
	procs   []*proc
	decider *proc
	// sdkDecider is the SDK decider that shares the plain one's queue
	// group (timbus-embedded-sdk).
	sdkDecider *proc
	probes     int64 // probes the deciders answered
	// timbus-embedded-audit: the audit subscriber, and timbus's metrics,
	// which say how many records it published.
	sink       *proc
	metricsURL string
}

// stop stops the processes in reverse order of their start.
func (in *instance) stop() {
	for i := len(in.procs) - 1; i >= 0; i-- {
		in.procs[i].stop()
	}
}

// check reports a process that died during the run.
func (in *instance) check() error {
	for _, p := range in.procs {
		if p.exited() {
			return p.failure("exited during the run")
		}
	}
	return nil
}

// start launches a setup and waits until a callback gets the decider's
// verdict through it. It tries twice: a free port may be taken by someone
// else between the moment it is picked and the moment a child binds it.
func (b *bench) start(ctx context.Context, setup, tag string) (*instance, error) {
	in, err := b.startOnce(ctx, setup, tag)
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(b.out, "timbus-bench: %s did not start, trying again: %v\n", setup, firstLine(err))
		in, err = b.startOnce(ctx, setup, tag+"-retry")
	}
	return in, err
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func (b *bench) startOnce(ctx context.Context, setup, tag string) (in *instance, err error) {
	c := b.cfg
	in = &instance{setup: setup}
	defer func() {
		if err != nil {
			in.stop()
		}
	}()
	ports, err := freePorts(3)
	if err != nil {
		return in, err
	}
	httpAddr := "127.0.0.1:" + strconv.Itoa(ports[0])
	natsAddr := "127.0.0.1:" + strconv.Itoa(ports[1])
	metricsAddr := "127.0.0.1:" + strconv.Itoa(ports[2])
	in.url = "http://" + httpAddr + benchQuery
	in.natsURL = "nats://" + natsAddr

	launch := func(name, path string, args ...string) (*proc, error) {
		p, err := b.procs.start(tag+"-"+name, path, args...)
		if err != nil {
			return nil, err
		}
		p.role = name
		in.procs = append(in.procs, p)
		return p, nil
	}
	natsServer := func() error {
		p, err := launch("nats-server", c.natsServer, "-a", "127.0.0.1", "-p", strconv.Itoa(ports[1]))
		if err != nil {
			return err
		}
		return waitTCP(ctx, natsAddr, p)
	}
	decider := func() error {
		p, err := launch("decider", c.self, "decider", "--nats-url", in.natsURL, "--subject", deciderSubject)
		if err != nil {
			return err
		}
		in.decider = p
		if _, err = p.waitLine(ctx, "ready", startTimeout); err != nil || setup != setupEmbeddedSDK {
			return err
		}
		// The SDK decider joins the plain one's queue group (a queue group
		// is its name, whatever the subjects), so that the two answer
		// halves of one load side by side; same role, its CPU in the same
		// column.
		if p, err = launch("sdk-decider", c.self, "sdk-decider", "--nats-url", in.natsURL, "--command", benchCommand); err != nil {
			return err
		}
		p.role = "decider"
		in.sdkDecider = p
		_, err = p.waitLine(ctx, "ready", startTimeout)
		return err
	}
	timbus := func(natsArgs ...string) (*proc, error) {
		args := append([]string{"serve", "--listen", httpAddr, "--sdkappid", benchApp,
			"--default", "deny"}, logLevelArgs(c.logLevel)...)
		args = append(args, natsArgs...)
		p, err := launch("timbus", c.timbus, args...)
		if err != nil {
			return nil, err
		}
		return p, waitTCP(ctx, httpAddr, p)
	}
	var front *proc
	switch setup {
	case setupRawHTTP:
		if front, err = launch("raw-http", c.self, "raw-http", "--listen", httpAddr); err != nil {
			return in, err
		}
		if _, err = front.waitLine(ctx, "ready", startTimeout); err != nil {
			return in, err
		}
	case setupEmbedded, setupEmbeddedSDK:
		// A decider answering the default would be indistinguishable from
		// the decider's allow; timbus denies by default here, and the probe
		// waits for the allow.
		if front, err = timbus("--nats-listen", natsAddr); err != nil {
			return in, err
		}
		if err = decider(); err != nil {
			return in, err
		}
	case setupEmbeddedAudit:
		// The subscriber comes before any callback, probes included, so
		// that every record timbus publishes is one it must receive.
		if front, err = timbus("--nats-listen", natsAddr, "--metrics-listen", metricsAddr); err != nil {
			return in, err
		}
		in.metricsURL = "http://" + metricsAddr + "/metrics"
		if in.sink, err = launch("audit-sink", c.self, "audit-sink", "--nats-url", in.natsURL, "--subject", auditSubject); err != nil {
			return in, err
		}
		if _, err = in.sink.waitLine(ctx, "ready", startTimeout); err != nil {
			return in, err
		}
		if err = decider(); err != nil {
			return in, err
		}
	case setupProfiled:
		args := append([]string{"bridge", "--listen", httpAddr, "--nats-listen", natsAddr,
			"--default", "deny", "--cpuprofile", c.cpuProfile}, logLevelArgs(c.logLevel)...)
		if front, err = launch("bridge", c.self, args...); err != nil {
			return in, err
		}
		if _, err = front.waitLine(ctx, "ready", startTimeout); err != nil {
			return in, err
		}
		if err = decider(); err != nil {
			return in, err
		}
	case setupExternal:
		if err = natsServer(); err != nil {
			return in, err
		}
		if err = decider(); err != nil {
			return in, err
		}
		if front, err = timbus("--nats-url", in.natsURL); err != nil {
			return in, err
		}
	case setupNaive:
		if err = natsServer(); err != nil {
			return in, err
		}
		if err = decider(); err != nil {
			return in, err
		}
		if front, err = launch("naive", c.self, "naive", "--listen", httpAddr, "--nats-url", in.natsURL); err != nil {
			return in, err
		}
		if _, err = front.waitLine(ctx, "ready", startTimeout); err != nil {
			return in, err
		}
	case setupNaiveEmbedded, setupNaiveProfiled:
		args := []string{"naive", "--listen", httpAddr, "--embedded-nats", natsAddr}
		if setup == setupNaiveProfiled {
			args = append(args, "--cpuprofile", naiveProfilePath(c.cpuProfile))
		}
		if front, err = launch("naive", c.self, args...); err != nil {
			return in, err
		}
		if _, err = front.waitLine(ctx, "ready", startTimeout); err != nil {
			return in, err
		}
		if err = decider(); err != nil {
			return in, err
		}
	case setupRawNATS:
		if err = natsServer(); err != nil {
			return in, err
		}
		return in, decider()
	default:
		return in, fmt.Errorf("unknown setup %q", setup)
	}
	in.probes, err = probeHTTP(ctx, in.url, b.body, in.procs...)
	return in, err
}

// logLevelArgs passes --log-level on only when one was asked for: timbus's
// default is what users get.
func logLevelArgs(level string) []string {
	if level == "" {
		return nil
	}
	return []string{"--log-level", level}
}

// runRecord is one measured run.
type runRecord struct {
	Setup string `json:"setup"`
	Round int    `json:"round"`
	loadResult
	// Index is RPS over the mean of the raw-http runs right before and after
	// (compared setups only).
	Index float64 `json:"vs_raw_http,omitempty"`
	// Half is the open-loop run that followed on the same processes, at
	// half of RPS (or, for raw-http, at the rate of the run before).
	Half *loadResult `json:"half_load,omitempty"`
	// CPU is µs of CPU per answered request during the closed-loop run, by
	// process role, plus the machine's softirq and idle time (HTTP setups).
	CPU map[string]float64 `json:"cpu_us_per_request,omitempty"`
	// Deciders are the two deciders of timbus-embedded-sdk, each over its
	// whole life.
	Deciders *deciderPair `json:"deciders,omitempty"`
	// Audit is what became of the audit records (timbus-embedded-audit).
	Audit *auditCheck `json:"audit,omitempty"`
	// Problem is why the run's numbers are not to be trusted.
	Problem string `json:"problem,omitempty"`
}

// served is what a decider did, as it reported when stopped (reportServed).
type served struct {
	Answered int64   `json:"answered"`
	CPU      float64 `json:"cpu_us"` // over its whole life, warm-up and probes included
}

// PerAnswer is µs of CPU per request answered.
func (s served) PerAnswer() float64 {
	if s.Answered <= 0 {
		return 0
	}
	return s.CPU / float64(s.Answered)
}

// deciderPair is the plain decider and the SDK one, answering halves of the
// same load in one queue group.
type deciderPair struct {
	Plain served `json:"plain"`
	SDK   served `json:"sdk"`
}

// readServed reads what a stopped decider reported.
func readServed(p *proc) (served, error) {
	var s served
	line, _ := p.out.find("answered ")
	n, err := strconv.ParseInt(strings.TrimPrefix(line, "answered "), 10, 64)
	if err != nil {
		return s, errors.New("did not report how many requests it answered")
	}
	s.Answered = n
	line, _ = p.out.find("cpu_us ")
	us, err := strconv.ParseInt(strings.TrimPrefix(line, "cpu_us "), 10, 64)
	if err != nil {
		return s, errors.New("did not report its CPU time")
	}
	s.CPU = float64(us)
	return s, nil
}

// measure starts a setup, loads it closed-loop (wrk, or nats-load for
// raw-nats), then, when halfRate is not zero, open-loop at halfRate (-1: half
// the closed-loop throughput just measured), stops it and checks that every
// answer came from the decider.
func (b *bench) measure(ctx context.Context, seq int, setup string, round int, halfRate float64) (runRecord, error) {
	c := b.cfg
	tag := fmt.Sprintf("%02d-%s", seq, setup)
	rec := runRecord{Setup: setup, Round: round}
	in, err := b.start(ctx, setup, tag)
	if err != nil {
		return rec, err
	}
	defer in.stop()

	var completed int64 // answers the load generators saw, warm-up included
	if setup == setupRawNATS {
		out, _, err := b.procs.runOnce(ctx, tag+"-nats-load", c.warmup+c.duration+30*time.Second, c.self, "nats-load",
			"--nats-url", in.natsURL, "--subject", benchSubject, "--concurrency", strconv.Itoa(c.requesters),
			"--duration", c.duration.String(), "--warmup", c.warmup.String())
		if err != nil {
			return rec, err
		}
		if rec.loadResult, err = parseLoadResult(out); err != nil {
			return rec, err
		}
	} else {
		if c.warmup > 0 {
			w, err := b.wrk(ctx, tag+"-wrk-warmup", in.url, c.warmup)
			if err != nil {
				return rec, err
			}
			completed += w.Completed
		}
		meter := startCPUMeter(in.procs)
		r, err := b.wrk(ctx, tag+"-wrk", in.url, c.duration)
		if err != nil {
			return rec, err
		}
		completed += r.Completed
		rec.loadResult = r.loadResult
		if rec.CPU, err = meter.perRequest(r.Completed, "wrk", r.CPU); err != nil {
			fmt.Fprintf(b.out, "timbus-bench: %s: no CPU accounting: %v\n", tag, err)
		}
		if halfRate != 0 {
			if halfRate < 0 {
				halfRate = rec.RPS / 2
			}
			h, err := b.rateLoad(ctx, tag+"-half", in.url, halfRate)
			if err != nil {
				return rec, err
			}
			completed += h.Completed
			rec.Half = &h
		}
	}
	if in.sink != nil {
		// Read before the processes stop: timbus's counters die with it.
		a, err := checkAudit(ctx, in, auditSettle)
		if err != nil {
			a.Error = err.Error()
		}
		rec.Audit = &a
	}
	if err := in.check(); err != nil {
		return rec, err
	}
	in.stop()

	var problems []string
	if rec.FirstError != "" {
		problems = append(problems, fmt.Sprintf("%d errors, e.g. %s", rec.Errors, rec.FirstError))
	}
	if in.decider != nil && setup != setupRawNATS {
		// Every answer must be a decider's, not a default verdict.
		var answered int64
		plain, err := readServed(in.decider)
		answered += plain.Answered
		if err != nil {
			problems = append(problems, "the decider "+err.Error())
		}
		if in.sdkDecider != nil {
			sdk, err := readServed(in.sdkDecider)
			answered += sdk.Answered
			if err != nil {
				problems = append(problems, "the SDK decider "+err.Error())
			} else if plain.CPU > 0 && sdk.CPU > 0 {
				rec.Deciders = &deciderPair{Plain: plain, SDK: sdk}
			}
		}
		if answered < completed+in.probes {
			problems = append(problems, fmt.Sprintf("%d answers did not come from the decider", completed+in.probes-answered))
		}
		if rec.Max >= float64(deciderTimeout/time.Microsecond) {
			problems = append(problems, fmt.Sprintf("slowest answer took %s: at the decider timeout, it may be a default verdict", ms(rec.Max)))
		}
	}
	if rec.Audit != nil {
		problems = append(problems, rec.Audit.problems(completed+in.probes)...)
	}
	if rec.Requests == 0 {
		problems = append(problems, "no request completed")
	}
	if h := rec.Half; h != nil {
		if h.Errors > 0 {
			problems = append(problems, fmt.Sprintf("half load: %d errors, e.g. %s", h.Errors, h.FirstError))
		}
		if h.Unsent > 0 {
			problems = append(problems, fmt.Sprintf("half load: %d requests never sent: the load generator or the server fell behind", h.Unsent))
		}
	}
	rec.Problem = strings.Join(problems, "; ")
	return rec, nil
}

// wrk runs wrk for d against url.
func (b *bench) wrk(ctx context.Context, name, url string, d time.Duration) (wrkRun, error) {
	c := b.cfg
	out, cpu, err := b.procs.runOnce(ctx, name, d+20*time.Second, c.wrk,
		"-t", strconv.Itoa(c.threads), "-c", strconv.Itoa(c.connections),
		"-d", strconv.Itoa(int(d/time.Second))+"s", "--latency", "-s", b.script, url)
	if err != nil {
		return wrkRun{}, err
	}
	r, err := parseWrk(out)
	if err != nil {
		return r, fmt.Errorf("%s: %w\n%s", name, err, out)
	}
	r.CPU = cpu
	return r, nil
}

func parseLoadResult(out []byte) (loadResult, error) {
	var r loadResult
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	if err := json.Unmarshal([]byte(last), &r); err != nil {
		return r, fmt.Errorf("load generator output %q: %w", last, err)
	}
	return r, nil
}

// rateLoad drives url open-loop at rate with the rate-load subcommand.
func (b *bench) rateLoad(ctx context.Context, name, url string, rate float64) (loadResult, error) {
	c := b.cfg
	if rate < 1 {
		return loadResult{}, fmt.Errorf("%s: no throughput to take half of", name)
	}
	warm := max(c.warmup, time.Second)
	out, _, err := b.procs.runOnce(ctx, name, warm+c.duration+30*time.Second, c.self, "rate-load",
		"--url", url, "--rate", strconv.FormatFloat(rate, 'f', 0, 64), "--connections", strconv.Itoa(c.connections),
		"--duration", c.duration.String(), "--warmup", warm.String())
	if err != nil {
		return loadResult{}, err
	}
	return parseLoadResult(out)
}
