package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/valyala/fasthttp"
)

// loadResult is what the load subcommands print, as one JSON line, and what
// the benchmark records per run (wrk's output is turned into one too).
// Latencies are in microseconds.
type loadResult struct {
	Requests int64   `json:"requests"` // completed and correct, in the measured window
	Errors   int64   `json:"errors"`   // failed or wrong answers, in the measured window
	Seconds  float64 `json:"seconds"`  // length of the measured window
	RPS      float64 `json:"rps"`      // Requests / Seconds
	P50      float64 `json:"p50_us"`
	P75      float64 `json:"p75_us"`
	P90      float64 `json:"p90_us"`
	P99      float64 `json:"p99_us"`
	P999     float64 `json:"p99_9_us"`
	Max      float64 `json:"max_us"`
	// Open-loop runs only.
	TargetRate float64 `json:"target_rate,omitempty"`
	Completed  int64   `json:"completed,omitempty"` // answers with the verdict, warm-up included
	Unsent     int64   `json:"unsent,omitempty"`    // scheduled but never sent: the server fell too far behind
	// FirstError describes one failure, for the report.
	FirstError string `json:"first_error,omitempty"`
}

// percentile returns the nearest-rank percentile p (0–100) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// The epsilon keeps 99.9% of 1000 at rank 999 despite rounding.
	rank := int(math.Ceil(p/100*float64(len(sorted)) - 1e-9))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// fill sets the latency fields of r from lat, which it sorts.
func (r *loadResult) fill(lat []time.Duration) {
	slices.Sort(lat)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	r.P50 = us(percentile(lat, 50))
	r.P75 = us(percentile(lat, 75))
	r.P90 = us(percentile(lat, 90))
	r.P99 = us(percentile(lat, 99))
	r.P999 = us(percentile(lat, 99.9))
	if len(lat) > 0 {
		r.Max = us(lat[len(lat)-1])
	}
}

// firstError keeps the first of many concurrent errors.
type firstError struct {
	once sync.Once
	text string
}

func (f *firstError) set(err error) { f.once.Do(func() { f.text = err.Error() }) }

// runNATSLoad is the messaging ceiling: concurrency goroutines, each sending
// the callback body with the bridge's headers as a NATS request and waiting
// for the answer, over one connection as the bridge does. It measures each
// round trip itself.
func runNATSLoad(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nats-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("nats-url", nats.DefaultURL, "NATS server")
	subject := fs.String("subject", benchSubject, "subject to request")
	concurrency := fs.Int("concurrency", 64, "concurrent requesters")
	duration := fs.Duration("duration", 5*time.Second, "measured time")
	warmup := fs.Duration("warmup", time.Second, "unmeasured time before it")
	timeout := fs.Duration("timeout", deciderTimeout, "per request")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *concurrency < 1 || *duration <= 0 || *warmup < 0 {
		fmt.Fprintln(stderr, "nats-load: need --concurrency ≥ 1, --duration > 0, --warmup ≥ 0")
		return exitUsage
	}
	body, err := callbackBody()
	if err != nil {
		fmt.Fprintln(stderr, "nats-load:", err)
		return exitFailure
	}
	nc, err := nats.Connect(*url, nats.Name("timbus-bench-requester"))
	if err != nil {
		fmt.Fprintln(stderr, "nats-load:", err)
		return exitFailure
	}
	defer nc.Close()

	// The bridge's decide request at its defaults: the body, no headers
	// (its deadline and request id ride in the reply subject, which the
	// client's own request inbox stands in for).
	newMsg := func() *nats.Msg { return &nats.Msg{Subject: *subject, Data: body} }
	// The decider must answer before the clock starts.
	probe := newMsg()
	deadline := time.Now().Add(10 * time.Second)
	for {
		reply, err := nc.RequestMsg(probe, 200*time.Millisecond)
		if err == nil && bytes.Equal(reply.Data, verdict) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			fmt.Fprintf(stderr, "nats-load: no decider answers on %s (last error: %v)\n", *subject, err)
			return exitFailure
		}
		time.Sleep(20 * time.Millisecond)
	}

	start := time.Now()
	measureFrom := start.Add(*warmup)
	end := measureFrom.Add(*duration)
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		errs      atomic.Int64
		first     firstError
		wg        sync.WaitGroup
	)
	per := make([][]time.Duration, *concurrency)
	for i := range per {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := newMsg()
			lat := make([]time.Duration, 0, 1<<14)
			for !stop.Load() {
				t0 := time.Now()
				reply, err := nc.RequestMsg(m, *timeout)
				d := time.Since(t0)
				if !measuring.Load() {
					continue
				}
				if err == nil && !bytes.Equal(reply.Data, verdict) {
					err = errBadAnswer
				}
				if err != nil {
					errs.Add(1)
					first.set(err)
					continue
				}
				lat = append(lat, d)
			}
			per[i] = lat
		}()
	}
	time.Sleep(time.Until(measureFrom))
	measuring.Store(true)
	measured := time.Now()
	time.Sleep(time.Until(end))
	measuring.Store(false)
	window := time.Since(measured)
	stop.Store(true)
	wg.Wait()

	var all []time.Duration
	for _, l := range per {
		all = append(all, l...)
	}
	res := loadResult{Requests: int64(len(all)), Errors: errs.Load(), Seconds: window.Seconds(), FirstError: first.text}
	res.RPS = float64(res.Requests) / res.Seconds
	res.fill(all)
	return printResult(res, stdout, stderr)
}

func printResult(res loadResult, stdout, stderr io.Writer) int {
	line, err := json.Marshal(res)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s\n", line)
	return exitOK
}

// runRateLoad drives an HTTP endpoint open-loop at a constant rate, as wrk2
// does: requests are scheduled at fixed times whether or not earlier ones have
// been answered, and a request that goes out late because its connection was
// still waiting for an earlier answer counts its latency from the scheduled
// time, so a stall is charged to every request it delays (no coordinated
// omission).
func runRateLoad(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rate-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8080"+benchQuery, "callback URL")
	rate := fs.Float64("rate", 1000, "requests per second")
	duration := fs.Duration("duration", 5*time.Second, "measured time")
	warmup := fs.Duration("warmup", time.Second, "unmeasured time before it, at the same rate")
	conns := fs.Int("connections", 64, "HTTP connections (and sending goroutines)")
	timeout := fs.Duration("timeout", 2*time.Second, "per request")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *rate <= 0 || *conns < 1 || *duration <= 0 || *warmup < 0 {
		fmt.Fprintln(stderr, "rate-load: need --rate > 0, --connections ≥ 1, --duration > 0, --warmup ≥ 0")
		return exitUsage
	}
	body, err := callbackBody()
	if err != nil {
		fmt.Fprintln(stderr, "rate-load:", err)
		return exitFailure
	}
	var uri fasthttp.URI
	if err := uri.Parse(nil, []byte(*url)); err != nil {
		fmt.Fprintln(stderr, "rate-load: --url:", err)
		return exitUsage
	}
	client := &fasthttp.HostClient{
		Addr:                string(uri.Host()),
		MaxConns:            *conns,
		MaxIdleConnDuration: time.Minute,
		ReadTimeout:         *timeout,
		WriteTimeout:        *timeout,
	}

	interval := time.Duration(float64(time.Second) / *rate)
	if interval <= 0 {
		fmt.Fprintln(stderr, "rate-load: --rate too high")
		return exitUsage
	}
	total := int((*warmup + *duration) / interval)
	warmCount := int(*warmup / interval)
	start := time.Now().Add(20 * time.Millisecond)
	// Past this, what is still unsent is given up and reported.
	giveUp := start.Add(time.Duration(total)*interval + *timeout + 3*time.Second)
	var (
		errs      atomic.Int64
		unsent    atomic.Int64
		completed atomic.Int64
		first     firstError
		wg        sync.WaitGroup
	)
	// As in wrk2, each connection has its own share of the schedule:
	// request n goes out on connection n mod conns at start + n·interval,
	// or at once when that connection is still busy with earlier ones.
	per := make([][]time.Duration, *conns)
	for w := range per {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := fasthttp.AcquireRequest()
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			out := make([]time.Duration, 0, total / *conns + 16)
			defer func() { per[w] = out }()
			for n := w; n < total; n += *conns {
				// Latency counts from the scheduled time when the connection
				// was still busy then (the server's slowness delayed the
				// send), and from the send when the connection was idle and
				// waited: Go's timers wake up to a millisecond late, which is
				// not the server's doing.
				due := start.Add(time.Duration(n) * interval)
				origin := due
				if wait := time.Until(due); wait > 0 {
					time.Sleep(wait)
					origin = time.Now()
				}
				if ctx.Err() != nil || time.Now().After(giveUp) {
					unsent.Add(int64((total - n + *conns - 1) / *conns))
					return
				}
				req.Reset()
				req.SetRequestURI(*url)
				req.Header.SetMethod(fasthttp.MethodPost)
				req.Header.SetContentType("application/json")
				req.SetBody(body)
				err := client.DoTimeout(req, resp, *timeout)
				lat := time.Since(origin)
				if err == nil && (resp.StatusCode() != fasthttp.StatusOK || !bytes.Equal(resp.Body(), verdict)) {
					err = fmt.Errorf("%w: HTTP %d %q", errBadAnswer, resp.StatusCode(), resp.Body())
				}
				if err == nil {
					completed.Add(1)
				}
				if n < warmCount {
					continue
				}
				if err != nil {
					errs.Add(1)
					first.set(err)
					continue
				}
				out = append(out, lat)
			}
		}()
	}
	wg.Wait()

	var all []time.Duration
	for _, l := range per {
		all = append(all, l...)
	}
	res := loadResult{
		Requests:   int64(len(all)),
		Errors:     errs.Load(),
		Seconds:    duration.Seconds(),
		TargetRate: *rate,
		Unsent:     unsent.Load(),
		Completed:  completed.Load(),
		FirstError: first.text,
	}
	res.RPS = float64(res.Requests) / res.Seconds
	res.fill(all)
	return printResult(res, stdout, stderr)
}
