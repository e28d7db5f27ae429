package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/valyala/fasthttp"

	"github.com/timbus-dev/timbus/deciders"
	"github.com/timbus-dev/timbus/internal/samples"
)

// What every setup is asked and answers.
const (
	benchApp     = "1400000001"
	benchCommand = "OfficialAccount.CallbackBeforeCreateOfficialAccount"
	// benchQuery is what Tencent appends to the callback URL.
	benchQuery = "/?SdkAppid=" + benchApp + "&CallbackCommand=" + benchCommand +
		"&contenttype=json&ClientIP=127.0.0.1&OptPlatform=RESTAPI"
	// benchSubject is the bridge's subject for benchCommand.
	benchSubject = "timbus.decide." + benchApp + "." + benchCommand
	// deciderSubject is what the decider subscribes to, in deciderQueue.
	deciderSubject = "timbus.decide.*.OfficialAccount.>"
	deciderQueue   = "timbus-bench"
	// deciderTimeout is how long the bridges wait for the decider; the
	// bridge's default, too.
	deciderTimeout = 1500 * time.Millisecond
)

// verdict is the decider's answer in every setup, and raw-http's.
var verdict = []byte(`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`)

// callbackBody is Tencent's documented body of benchCommand, compacted as
// Tencent sends it.
func callbackBody() ([]byte, error) {
	raw, ok := samples.Request(benchCommand)
	if !ok {
		return nil, fmt.Errorf("no documented sample of %s", benchCommand)
	}
	var out bytes.Buffer
	if err := json.Compact(&out, raw); err != nil {
		return nil, fmt.Errorf("sample of %s: %w", benchCommand, err)
	}
	return out.Bytes(), nil
}

// untilSignal returns a context that ends on SIGINT or SIGTERM, which is how
// the benchmark stops its servers.
func untilSignal(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// serveHTTP serves h on addr until ctx ends. It prints "ready" on stdout once
// the listener is open.
func serveHTTP(ctx context.Context, addr string, h fasthttp.RequestHandler, name string, stdout io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &fasthttp.Server{Handler: h, Name: name}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	fmt.Fprintln(stdout, "ready")
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.ShutdownWithContext(stopCtx)
	return nil
}

// runRawHTTP is the HTTP ceiling: fasthttp answering the fixed verdict, with
// nothing in between.
func runRawHTTP(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("raw-http", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "HTTP address")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	ctx, stop := untilSignal(ctx)
	defer stop()
	h := func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(verdict)
	}
	if err := serveHTTP(ctx, *listen, h, "raw-http", stdout); err != nil {
		fmt.Fprintln(stderr, "raw-http:", err)
		return exitFailure
	}
	return exitOK
}

// runDecider answers every decide request with the fixed verdict: a plain
// QueueSubscribe, the simplest decider there is. It prints "ready" once its
// subscription is registered with the server and, when stopped, what
// reportServed prints.
func runDecider(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("decider", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("nats-url", nats.DefaultURL, "NATS server")
	subject := fs.String("subject", deciderSubject, "subject to answer")
	queue := fs.String("queue", deciderQueue, "queue group")
	wait := fs.Duration("connect-timeout", 15*time.Second, "how long to keep trying to reach NATS")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	ctx, stop := untilSignal(ctx)
	defer stop()
	stopProfile, err := startCPUProfile(*cpuprofile)
	if err != nil {
		fmt.Fprintln(stderr, "decider:", err)
		return exitFailure
	}
	defer stopProfile()
	nc, err := nats.Connect(*url, nats.Name("timbus-bench-decider"),
		childRetries)
	if err != nil {
		fmt.Fprintln(stderr, "decider:", err)
		return exitFailure
	}
	defer nc.Close()
	var answered atomic.Int64
	_, err = nc.QueueSubscribe(*subject, *queue, func(m *nats.Msg) {
		if m.Respond(verdict) == nil {
			answered.Add(1)
		}
	})
	if err != nil {
		fmt.Fprintln(stderr, "decider:", err)
		return exitFailure
	}
	// The subscription counts once the server has it.
	if err := waitSubscribed(ctx, nc, *wait); err != nil {
		fmt.Fprintf(stderr, "decider: NATS at %s: %v\n", *url, err)
		return exitFailure
	}
	fmt.Fprintln(stdout, "ready")
	<-ctx.Done()
	nc.Close()
	reportServed(stdout, answered.Load())
	return exitOK
}

// reportServed prints, as a decider stops, "answered N" and "cpu_us T":
// the requests it answered and the CPU time (user and system) it spent over
// its whole life. timbus-embedded-sdk runs the plain decider and the SDK one
// in one queue group, so that each answers about half of the same load at
// the same time, and compares the two per answer.
func reportServed(w io.Writer, answered int64) {
	fmt.Fprintf(w, "answered %d\n", answered)
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		fmt.Fprintf(w, "cpu_us %d\n", cpu.Microseconds())
	}
}

// runSDKDecider is runDecider written with the Go SDK (package deciders):
// the same allow for the bench's command, through the SDK's checks, headers
// and micro service. Its CPU per request, against the plain decider's, is
// what the SDK costs. Same output as runDecider.
func runSDKDecider(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sdk-decider", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("nats-url", nats.DefaultURL, "NATS server")
	command := fs.String("command", benchCommand, "command (or pattern of commands) to answer, of every app")
	wait := fs.Duration("connect-timeout", 15*time.Second, "how long to keep trying to reach NATS")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	ctx, stop := untilSignal(ctx)
	defer stop()
	stopProfile, err := startCPUProfile(*cpuprofile)
	if err != nil {
		fmt.Fprintln(stderr, "sdk-decider:", err)
		return exitFailure
	}
	defer stopProfile()
	nc, err := nats.Connect(*url, nats.Name("timbus-bench-sdk-decider"),
		childRetries)
	if err != nil {
		fmt.Fprintln(stderr, "sdk-decider:", err)
		return exitFailure
	}
	defer nc.Close()
	d, err := deciders.New(nc, deciders.Config{Name: "timbus-bench", Version: "1.0.0", QueueGroup: deciderQueue})
	if err != nil {
		fmt.Fprintln(stderr, "sdk-decider:", err)
		return exitFailure
	}
	var answered atomic.Int64
	err = d.Handle(*command, func(context.Context, *deciders.Callback) (deciders.Verdict, error) {
		answered.Add(1)
		return deciders.Allow(), nil
	})
	if err != nil {
		fmt.Fprintln(stderr, "sdk-decider:", err)
		return exitFailure
	}
	if err := waitSubscribed(ctx, nc, *wait); err != nil {
		fmt.Fprintf(stderr, "sdk-decider: NATS at %s: %v\n", *url, err)
		return exitFailure
	}
	fmt.Fprintln(stdout, "ready")
	<-ctx.Done()
	if err := d.Stop(); err != nil {
		fmt.Fprintln(stderr, "sdk-decider:", err)
	}
	nc.Close()
	reportServed(stdout, answered.Load())
	return exitOK
}

// runNaive is the bridge a user would write by hand: take the body, ask
// NATS with a timeout, pass the answer on. On any error it answers 503, so
// that the load generator counts the failure (a real one would answer a
// default verdict, which hides failures from a benchmark).
func runNaive(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("naive", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "HTTP address")
	url := fs.String("nats-url", nats.DefaultURL, "NATS server")
	timeout := fs.Duration("timeout", deciderTimeout, "how long to wait for a decider")
	embedded := fs.String("embedded-nats", "", "run a NATS server in this process, listening here, instead of using --nats-url")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	ctx, stop := untilSignal(ctx)
	defer stop()
	stopProfile, err := startCPUProfile(*cpuprofile)
	if err != nil {
		fmt.Fprintln(stderr, "naive:", err)
		return exitFailure
	}
	defer stopProfile()
	if *embedded != "" {
		ns, err := embeddedNATS(*embedded)
		if err != nil {
			fmt.Fprintln(stderr, "naive:", err)
			return exitFailure
		}
		defer ns.Shutdown()
		*url = ns.ClientURL()
	}
	nc, err := nats.Connect(*url)
	if err != nil {
		fmt.Fprintln(stderr, "naive:", err)
		return exitFailure
	}
	defer nc.Close()

	// The naive bridge itself.
	h := func(ctx *fasthttp.RequestCtx) {
		c, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		subject := "timbus.decide." + string(ctx.QueryArgs().Peek("SdkAppid")) + "." + string(ctx.QueryArgs().Peek("CallbackCommand"))
		reply, err := nc.RequestWithContext(c, subject, ctx.PostBody())
		if err != nil {
			ctx.Error(err.Error(), fasthttp.StatusServiceUnavailable)
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBody(reply.Data)
	}

	if err := serveHTTP(ctx, *listen, h, "naive", stdout); err != nil {
		fmt.Fprintln(stderr, "naive:", err)
		return exitFailure
	}
	return exitOK
}

// embeddedNATS starts a NATS server in this process listening on addr, as
// timbus runs its embedded one.
func embeddedNATS(addr string) (*server.Server, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("port of %s: %w", addr, err)
	}
	ns, err := server.NewServer(&server.Options{Host: host, Port: port, NoSigs: true, NoLog: true})
	if err != nil {
		return nil, err
	}
	go ns.Start()
	if !ns.ReadyForConnections(startTimeout) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS server on %s did not start", addr)
	}
	return ns, nil
}

// errBadAnswer is an answer other than the decider's verdict.
var errBadAnswer = errors.New("answer is not the decider's verdict")

// childRetries is the connection policy of the bench's NATS children
// (deciders, the audit sink): they may start before their server, and
// reconnect at once.
func childRetries(o *nats.Options) error {
	o.RetryOnFailedConnect = true
	o.MaxReconnect = -1
	o.ReconnectWait = 50 * time.Millisecond
	return nil
}
