// Command timbus-bench is the end-to-end speed benchmark behind `make bench`.
//
// It measures, on one machine and over loopback only, how fast timbus answers
// callbacks compared with the ceilings it cannot beat and with what a user
// would write by hand:
//
//	raw-http         a bare fasthttp handler answering a fixed verdict (the HTTP ceiling)
//	raw-nats         NATS request-reply between two processes through nats-server (the messaging ceiling)
//	timbus-embedded  wrk → bin/timbus serve (embedded NATS) → decider process
//	timbus-embedded-audit  the same, with a process subscribed to timbus's audit records
//	timbus-embedded-sdk    the same, with a second decider written with the Go SDK in the plain one's queue group
//	timbus-external  wrk → bin/timbus serve → nats-server process → decider process
//	naive            wrk → a few-line fasthttp + nc.RequestWithContext bridge → nats-server → decider
//	naive-embedded   the same bridge with a NATS server embedded in its process → decider
//
// Every setup uses the same decider (a plain nats.go QueueSubscribe replying
// {"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}); in
// timbus-embedded-sdk a decider answering the same through the Go SDK shares
// the load with it, so that the two deciders' CPU per answer compares at one
// rate; timbus runs at its default settings. The host's speed drifts, so runs are
// interleaved with raw-http runs and each setup is judged by its throughput
// relative to the raw-http runs right before and after it.
// After each closed-loop run of timbus-embedded and timbus-external, and of
// the naive bridges beside them, the same processes are driven open-loop at
// half the throughput just reached, to measure the tail latency under a
// steady, realistic load; the naive bridges' tails show how much of
// timbus's belongs to the machine. During every
// closed-loop run it reads each process's CPU time from /proc, so that the
// report says where the CPU per request went. The report ends with the
// floors timbus is held to (report.go); with --strict a missed one fails the
// benchmark.
//
// Usage:
//
//	timbus-bench [run] [flags]   run the benchmark (see timbus-bench run --help)
//
// The other subcommands are the processes the benchmark starts; they are not
// meant to be run by hand, but can be:
//
//	timbus-bench raw-http  --listen ADDR
//	timbus-bench decider   --nats-url URL --subject SUBJECT
//	timbus-bench sdk-decider --nats-url URL --command COMMAND
//	timbus-bench audit-sink --nats-url URL --subject 'timbus.audit.>'
//	timbus-bench naive     --listen ADDR (--nats-url URL | --embedded-nats ADDR)
//	timbus-bench nats-load --nats-url URL --subject SUBJECT --concurrency N --duration D
//	timbus-bench rate-load --url URL --rate R --duration D
//	timbus-bench bridge    --listen ADDR --nats-listen ADDR --cpuprofile FILE
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the benchmark ran but failed, or a run had errors
	exitUsage   = 2
)

type subcommand struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func subcommands() []subcommand {
	return []subcommand{
		{"run", "run the benchmark (the default)", runBench},
		{"raw-http", "serve a fixed verdict over fasthttp (the HTTP ceiling)", runRawHTTP},
		{"decider", "answer decide requests with a fixed verdict (plain QueueSubscribe)", runDecider},
		{"sdk-decider", "the same decider written with the Go SDK (package deciders)", runSDKDecider},
		{"audit-sink", "count timbus's audit records (a subscriber to timbus.audit.>)", runAuditSink},
		{"naive", "a hand-written fasthttp → NATS bridge of a few lines", runNaive},
		{"nats-load", "closed-loop NATS request load with latency percentiles", runNATSLoad},
		{"rate-load", "open-loop constant-rate HTTP load with latency percentiles", runRateLoad},
		{"bridge", "host package bridge in-process, optionally under the CPU profiler", runBridgeHost},
	}
}

func main() {
	os.Exit(dispatch(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			usage(stdout)
			return exitOK
		}
		return runBench(ctx, args, stdout, stderr)
	}
	for _, c := range subcommands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	if args[0] == "help" {
		usage(stdout)
		return exitOK
	}
	fmt.Fprintf(stderr, "timbus-bench: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: timbus-bench [command] [flags]   (default command: run)")
	fmt.Fprintln(w)
	for _, c := range subcommands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "timbus-bench run --help lists the benchmark's flags.")
}
