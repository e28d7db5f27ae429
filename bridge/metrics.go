package bridge

import (
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/timbus-dev/timbus/deciders/protocol"
)

// Every reason a request can be refused for.
var rejectReasons = []string{
	"not_found", "method_not_allowed", "source_not_allowed", "unknown_sdkappid", "missing_signature",
	"bad_request_time", "stale_request_time", "bad_signature", "missing_command", "invalid_command",
	"invalid_body", "command_mismatch", "body_too_large", "header_too_large", "bad_request", "read_timeout",
	reasonTooManyConns, reasonTooManyConnsPerIP, reasonClientCert, reasonTLSHandshake,
}

// metrics holds the bridge's Prometheus collectors in a registry of its own.
type metrics struct {
	reg       *prometheus.Registry
	callbacks *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	rejected  map[string]prometheus.Counter
	deciders  *prometheus.GaugeVec
	shadow    *prometheus.CounterVec
	breaker   *prometheus.GaugeVec
}

// routeMetrics are one route's collectors, resolved once.
type routeMetrics struct {
	outcomes     map[protocol.Outcome]prometheus.Counter
	latency      prometheus.Observer
	shadowAgree  prometheus.Counter
	shadowDiffer prometheus.Counter
	breakerOpen  prometheus.Gauge
}

func newMetrics(b *Bridge) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "timbus_callbacks_total",
			Help: "Callbacks handled, by app, command and outcome.",
		}, []string{"sdkappid", "command", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "timbus_decision_seconds",
			Help:    "Time from a before callback's arrival to its answer.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 1.5, 2},
		}, []string{"sdkappid", "command"}),
		rejected: map[string]prometheus.Counter{},
		deciders: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "timbus_deciders",
			Help: "Live deciders per command, from the NATS services discovery ($SRV.INFO); deciders that are not NATS services are not counted.",
		}, []string{"sdkappid", "command"}),
		shadow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "timbus_shadow_verdicts_total",
			Help: "Shadow verdicts, by whether they agreed with the verdict sent.",
		}, []string{"sdkappid", "command", "agrees"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "timbus_circuit_open",
			Help: "1 while a command's circuit breaker answers the default without asking deciders.",
		}, []string{"sdkappid", "command"}),
	}
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "timbus_rejected_total",
		Help: "Requests refused before reaching NATS, by reason.",
	}, []string{"reason"})
	for _, r := range rejectReasons {
		m.rejected[r] = rejected.WithLabelValues(r)
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(
		m.callbacks, m.latency, rejected, m.deciders, m.shadow, m.breaker,
		gauge("timbus_inflight", "Callbacks being handled now.", func() float64 { return float64(b.inflight.Load()) }),
		gauge("timbus_nats_connected", "1 while the NATS connection is up.", func() float64 {
			if b.nc != nil && b.nc.Status() == nats.CONNECTED {
				return 1
			}
			return 0
		}),
		counter("timbus_nats_reconnects_total", "Reconnections to NATS.", func() float64 {
			if b.nc == nil {
				return 0
			}
			return float64(b.nc.Stats().Reconnects)
		}),
		counter("timbus_audit_published_total", "Audit records published (acknowledged, with an audit stream).", func() float64 {
			return auditCount(b, func(a *auditor) uint64 { return a.published.Load() })
		}),
		counter("timbus_audit_dropped_total", "Audit records dropped because the queue was full.", func() float64 {
			return auditCount(b, func(a *auditor) uint64 { return a.dropped.Load() })
		}),
		gauge("timbus_audit_pending", "Audit records queued and not yet published: waiting to be sent, for the stream's acknowledgement, or for NATS or the stream to be reachable again.", func() float64 {
			return auditCount(b, func(a *auditor) uint64 { return uint64(max(a.pending.Load(), 0)) })
		}),
		counter("timbus_audit_failed_total", "Audit records NATS or the stream refused for good, or still held at shutdown.", func() float64 {
			return auditCount(b, func(a *auditor) uint64 { return a.failed.Load() })
		}),
		counter("timbus_audit_unheard_total", "Audit records not sent because nobody subscribed to them (known exactly with embedded NATS; with an external server, from a probe per command each second).", func() float64 {
			return auditCount(b, func(a *auditor) uint64 { return a.unheard.Load() })
		}),
		gauge("timbus_connections", "Callback connections open now, against max-conns.", func() float64 {
			if b.ln == nil || b.ln.limits == nil {
				return 0
			}
			return float64(b.ln.limits.open.Load())
		}),
		acceptErrors(func() *listener { return b.ln }, "callback"),
		acceptErrors(func() *listener { return b.opsLn }, "ops"),
		gauge("timbus_ready", "1 while /readyz reports ready.", func() float64 {
			if len(b.notReady()) == 0 {
				return 1
			}
			return 0
		}),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) forRoute(app, command string) routeMetrics {
	rm := routeMetrics{
		outcomes:     make(map[protocol.Outcome]prometheus.Counter, len(protocol.CallbackOutcomes())),
		latency:      m.latency.WithLabelValues(app, command),
		shadowAgree:  m.shadow.WithLabelValues(app, command, "true"),
		shadowDiffer: m.shadow.WithLabelValues(app, command, "false"),
		breakerOpen:  m.breaker.WithLabelValues(app, command),
	}
	for _, o := range protocol.CallbackOutcomes() {
		rm.outcomes[o] = m.callbacks.WithLabelValues(app, command, string(o))
	}
	return rm
}

func (m *metrics) reject(reason string) {
	if c, ok := m.rejected[reason]; ok {
		c.Inc()
	}
}

// acceptErrors counts the accept errors a listener waited out, such as
// running out of descriptors.
func acceptErrors(ln func() *listener, name string) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name:        "timbus_accept_errors_total",
		Help:        "Errors accepting connections (such as too many open files), each followed by a wait and a retry.",
		ConstLabels: prometheus.Labels{"listener": name},
	}, func() float64 {
		if l := ln(); l != nil {
			return float64(l.errors.Load())
		}
		return 0
	})
}

func auditCount(b *Bridge, get func(*auditor) uint64) float64 {
	if b.audit == nil {
		return 0
	}
	return float64(get(b.audit))
}
