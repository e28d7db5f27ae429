package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/timbus-dev/timbus/deciders/protocol"
)

// The audit subscriber of timbus-embedded-audit. timbus publishes one audit
// record per callback, but only while someone subscribes (embedded NATS
// only): this process is that someone, as a log shipper or an audit store
// would be, and counts what it receives, so that the benchmark can check
// that every record timbus published arrived.

// auditSubject is where timbus publishes its audit records (default prefix).
const auditSubject = "timbus.audit.>"

// Bounds of the audit check.
const (
	// auditSettle is how long the records published during the run may take
	// to be published and received once the load has stopped.
	auditSettle = 10 * time.Second
	// sinkReportEvery is how often the sink prints its count while it
	// changes.
	sinkReportEvery = 100 * time.Millisecond
)

// runAuditSink counts the messages on a subject. It prints "ready" once its
// subscription is registered with the server and "received N" right after,
// every sinkReportEvery while N changes, and once more when stopped, after
// the messages already sent to it are counted.
func runAuditSink(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit-sink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("nats-url", nats.DefaultURL, "NATS server")
	subject := fs.String("subject", auditSubject, "subject to count")
	wait := fs.Duration("connect-timeout", 15*time.Second, "how long to keep trying to reach NATS")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	ctx, stop := untilSignal(ctx)
	defer stop()
	closed := make(chan struct{})
	nc, err := nats.Connect(*url, nats.Name("timbus-bench-audit-sink"),
		childRetries,
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		// A lost message shows as a count short of timbus's; say why.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { fmt.Fprintln(stderr, "audit-sink:", err) }))
	if err != nil {
		fmt.Fprintln(stderr, "audit-sink:", err)
		return exitFailure
	}
	defer nc.Close()
	var received atomic.Int64
	// A message holds one record or a batch of them.
	sub, err := nc.Subscribe(*subject, func(m *nats.Msg) {
		n := int64(0)
		protocol.EachRecord(m.Data, func([]byte) bool { n++; return true })
		received.Add(n)
	})
	if err != nil {
		fmt.Fprintln(stderr, "audit-sink:", err)
		return exitFailure
	}
	// No client-side limit: a record dropped here would be the sink's fault,
	// not timbus's.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		fmt.Fprintln(stderr, "audit-sink:", err)
		return exitFailure
	}
	if err := waitSubscribed(ctx, nc, *wait); err != nil {
		fmt.Fprintf(stderr, "audit-sink: %s: %v\n", *url, err)
		return exitFailure
	}
	fmt.Fprintln(stdout, "ready")
	last := received.Load()
	fmt.Fprintf(stdout, "received %d\n", last)
	tick := time.NewTicker(sinkReportEvery)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			if n := received.Load(); n != last {
				last = n
				fmt.Fprintf(stdout, "received %d\n", n)
			}
		}
	}
	// Drain counts what the server sent before the unsubscription.
	if err := nc.Drain(); err == nil {
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
		}
	}
	fmt.Fprintf(stdout, "received %d\n", received.Load())
	return exitOK
}

// waitSubscribed returns once the server has the connection's subscriptions:
// a flush round trip, tried until NATS is reachable or wait is over.
func waitSubscribed(ctx context.Context, nc *nats.Conn, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := nc.FlushTimeout(200 * time.Millisecond)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("NATS not reachable within %s: %w", wait, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// auditCheck is what became of timbus's audit records in one run: timbus's
// counters (from its /metrics) and the subscriber's count.
type auditCheck struct {
	Published int64 `json:"published"` // timbus_audit_published_total
	Received  int64 `json:"received"`  // by audit-sink
	Dropped   int64 `json:"dropped"`   // timbus_audit_dropped_total
	Failed    int64 `json:"failed"`    // timbus_audit_failed_total
	Unheard   int64 `json:"unheard"`   // timbus_audit_unheard_total
	Pending   int64 `json:"pending"`   // timbus_audit_pending
	// Error is why the counts could not be read.
	Error string `json:"error,omitempty"`
}

// problems says how the run failed to deliver every record of the callbacks
// timbus answered (callbacks: the answers the load generators and probes
// saw; every one of them has a record).
func (a auditCheck) problems(callbacks int64) []string {
	if a.Error != "" {
		return []string{"audit: " + a.Error}
	}
	var out []string
	if a.Received != a.Published {
		out = append(out, fmt.Sprintf("audit: timbus published %d records, the subscriber received %d", a.Published, a.Received))
	}
	if a.Dropped > 0 {
		out = append(out, fmt.Sprintf("audit: timbus dropped %d records (its queue was full)", a.Dropped))
	}
	if a.Failed > 0 {
		out = append(out, fmt.Sprintf("audit: NATS refused %d records", a.Failed))
	}
	if a.Pending > 0 {
		out = append(out, fmt.Sprintf("audit: %d records still unpublished after the load", a.Pending))
	}
	if a.Published < callbacks {
		out = append(out, fmt.Sprintf("audit: %d records published for %d callbacks answered (%d unheard)", a.Published, callbacks, a.Unheard))
	}
	return out
}

// checkAudit waits, at most settle, until timbus has no record left to
// publish and the subscriber has received as many as timbus published, and
// returns the counts as they then are. It returns an error only when the
// counts cannot be read; a count that does not settle is for problems.
func checkAudit(ctx context.Context, in *instance, settle time.Duration) (auditCheck, error) {
	deadline := time.Now().Add(settle)
	var a auditCheck
	for {
		var err error
		// timbus first: a record it publishes after this read only makes
		// the subscriber's count higher, and the loop goes round again.
		if a, err = scrapeAudit(ctx, in.metricsURL); err == nil {
			a.Received, err = sinkCount(in.sink)
		}
		switch {
		case err == nil && a.Pending == 0 && a.Received == a.Published:
			return a, nil
		case in.sink.exited():
			return a, in.sink.failure("exited before the audit records were counted")
		case time.Now().After(deadline):
			return a, err
		}
		select {
		case <-ctx.Done():
			return a, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// sinkCount is the audit sink's last reported count.
func sinkCount(p *proc) (int64, error) {
	line, _ := p.out.find("received ")
	if line == "" {
		return 0, errors.New("the audit subscriber reported no count")
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(line, "received "), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("the audit subscriber's count %q: %w", line, err)
	}
	return n, nil
}

// scrapeAudit reads timbus's audit counters from its Prometheus metrics.
func scrapeAudit(ctx context.Context, url string) (auditCheck, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return auditCheck{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return auditCheck{}, fmt.Errorf("timbus's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return auditCheck{}, fmt.Errorf("timbus's metrics: %s", resp.Status)
	}
	return parseAuditMetrics(resp.Body)
}

// parseAuditMetrics picks the audit counters out of the Prometheus text
// format; each must be there.
func parseAuditMetrics(r io.Reader) (auditCheck, error) {
	var a auditCheck
	fields := map[string]*int64{
		"timbus_audit_published_total": &a.Published,
		"timbus_audit_dropped_total":   &a.Dropped,
		"timbus_audit_failed_total":    &a.Failed,
		"timbus_audit_unheard_total":   &a.Unheard,
		"timbus_audit_pending":         &a.Pending,
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		dst := fields[name]
		if !ok || dst == nil {
			continue
		}
		// Large counters come as 1.234567e+06.
		f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return a, fmt.Errorf("timbus's metrics: %s %q: %w", name, value, err)
		}
		*dst = int64(f)
		seen[name] = true
	}
	if err := sc.Err(); err != nil {
		return a, fmt.Errorf("timbus's metrics: %w", err)
	}
	for name := range fields {
		if !seen[name] {
			return a, fmt.Errorf("timbus's metrics lack %s", name)
		}
	}
	return a, nil
}
