package bridge

// Benchmarks of the hand-written pieces against the maintained library that
// would replace each, measured in the same run. Each piece's "Why not" comment
// quotes them; run with
//
//	go test -run '^$' -bench 'Versus' -benchmem -benchtime=100ms ./bridge/

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"github.com/timbus-dev/timbus/deciders/protocol"
)

// BenchmarkBreakerVersusGobreaker measures a decision through a closed
// breaker (the usual case: ask, then count the result), alone and from
// every core at once, against gobreaker's two-step breaker set up to behave
// alike (window, cool-down, one probe, the same ratio rule).
func BenchmarkBreakerVersusGobreaker(b *testing.B) {
	cfg := DefaultBreakerConfig()
	newTimbus := func() *breaker { return &breaker{cfg: cfg, onChange: func(bool) {}} }
	newGobreaker := func() *gobreaker.TwoStepCircuitBreaker[struct{}] {
		return gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			MaxRequests: 1, Interval: cfg.Window, Timeout: cfg.Cooldown,
			ReadyToTrip: func(c gobreaker.Counts) bool {
				return c.Requests >= uint32(cfg.MinRequests) && float64(c.TotalFailures) >= cfg.FailureRatio*float64(c.Requests)
			},
		})
	}
	timbus := func(br *breaker) {
		ok, probe := br.allow(time.Now())
		if !ok {
			b.Fatal("closed breaker refused")
		}
		br.record(time.Now(), false, probe)
	}
	library := func(cb *gobreaker.TwoStepCircuitBreaker[struct{}]) {
		done, err := cb.Allow()
		if err != nil {
			b.Fatal(err)
		}
		done(nil)
	}
	b.Run("timbus", func(b *testing.B) {
		br := newTimbus()
		b.ReportAllocs()
		for b.Loop() {
			timbus(br)
		}
	})
	b.Run("gobreaker", func(b *testing.B) {
		cb := newGobreaker()
		b.ReportAllocs()
		for b.Loop() {
			library(cb)
		}
	})
	b.Run("timbus-parallel", func(b *testing.B) {
		br := newTimbus()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				timbus(br)
			}
		})
	})
	b.Run("gobreaker-parallel", func(b *testing.B) {
		cb := newGobreaker()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				library(cb)
			}
		})
	})
}

// BenchmarkGateVersusRate measures a warning gate that is shut (the usual
// case: the warning went out less than a period ago), alone and from every
// core at once, against rate.Limiter's Allow (one token per period) and
// rate.Sometimes's Do.
func BenchmarkGateVersusRate(b *testing.B) {
	const period = time.Hour
	var sink atomic.Int64 // what passed, so that nothing is optimised away
	for _, bench := range []struct {
		name string
		op   func() func()
	}{
		{"timbus", func() func() {
			var g gate
			return func() {
				if g.pass(period) {
					sink.Add(1)
				}
			}
		}},
		{"rate.Limiter", func() func() {
			lim := rate.NewLimiter(rate.Every(period), 1)
			return func() {
				if lim.Allow() {
					sink.Add(1)
				}
			}
		}},
		{"rate.Sometimes", func() func() {
			s := &rate.Sometimes{Interval: period}
			return func() { s.Do(func() { sink.Add(1) }) }
		}},
	} {
		b.Run(bench.name, func(b *testing.B) {
			op := bench.op()
			b.ReportAllocs()
			for b.Loop() {
				op()
			}
		})
		b.Run(bench.name+"-parallel", func(b *testing.B) {
			op := bench.op()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					op()
				}
			})
		})
	}
}

// BenchmarkTraceparentVersusPlain measures taking a callback's traceparent
// into the decide request (check it, keep its trace id and flags, put in a
// new span id) against the same done the plain way: split on '-',
// hex-decode the parts, build the new value as a string.
func BenchmarkTraceparentVersusPlain(b *testing.B) {
	incoming := []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	b.Run("timbus", func(b *testing.B) {
		var dst []byte
		b.ReportAllocs()
		for b.Loop() {
			dst = appendTraceparent(dst[:0], incoming)
		}
		if !validTraceparent(dst) || string(dst[:36]) != string(incoming[:36]) {
			b.Fatalf("got %s", dst)
		}
	})
	b.Run("plain", func(b *testing.B) {
		var out string
		b.ReportAllocs()
		for b.Loop() {
			out = plainTraceparent(string(incoming))
		}
		if !validTraceparent([]byte(out)) || out[:36] != string(incoming[:36]) {
			b.Fatalf("got %s", out)
		}
	})
}

// plainTraceparent is appendTraceparent written the obvious way, as the
// benchmark's baseline.
func plainTraceparent(incoming string) string {
	var span [8]byte
	putRandom(span[:])
	if traceID, flags, err := parseTraceparent(incoming); err == nil {
		return "00-" + traceID + "-" + hex.EncodeToString(span[:]) + "-" + flags
	}
	var trace [16]byte
	putRandom(trace[:])
	return "00-" + hex.EncodeToString(trace[:]) + "-" + hex.EncodeToString(span[:]) + "-00"
}

var errTraceparent = errors.New("malformed traceparent")

func parseTraceparent(s string) (traceID, flags string, err error) {
	parts := strings.Split(s, "-")
	if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		return "", "", errTraceparent
	}
	for _, p := range parts[1:] {
		if strings.ToLower(p) != p {
			return "", "", errTraceparent
		}
		if _, err := hex.DecodeString(p); err != nil {
			return "", "", errTraceparent
		}
	}
	if strings.Trim(parts[1], "0") == "" || strings.Trim(parts[2], "0") == "" {
		return "", "", errTraceparent
	}
	return parts[1], parts[3], nil
}

// BenchmarkAuditEncodeVersusEncodingJSON measures the audit record of
// BenchmarkAuditEncode against encoding/json marshalling
// protocol.AuditRecord with the same fields (which neither bounds the
// record's size nor repairs invalid UTF-8 in the raw values).
func BenchmarkAuditEncodeVersusEncodingJSON(b *testing.B) {
	received := time.Now()
	body := sample(b, oaCreate)
	b.Run("timbus", func(b *testing.B) {
		e := &auditEntry{}
		e.reset()
		e.received = received
		e.app, e.command, e.kind, e.outcome, e.status, e.code = testApp, oaCreate, "before", protocol.OutcomeDecided, 200, 120005
		e.decider = "names/1.2.0/x7"
		e.latency = 1234 * time.Microsecond
		e.id = e.keep([]byte("2c25335faf68-1a"))
		e.clientIP = e.keep([]byte("10.0.0.7"))
		e.platform = e.keep([]byte("RESTAPI"))
		e.body = e.keep(body)
		e.answer = []byte(oaCreateDeny)
		var out []byte
		b.ReportAllocs()
		for b.Loop() {
			out = e.encode(out[:0], 1<<20)
		}
		b.SetBytes(int64(len(out)))
	})
	b.Run("encoding-json", func(b *testing.B) {
		rec := protocol.AuditRecord{
			Version: protocol.AuditVersion, RequestID: "2c25335faf68-1a", ReceivedAt: received,
			SdkAppID: testApp, Command: oaCreate, Kind: "before", ClientIP: "10.0.0.7", OptPlatform: "RESTAPI",
			Outcome: string(protocol.OutcomeDecided), HTTPStatus: 200, Code: 120005, Answer: json.RawMessage(oaCreateDeny),
			Decider: "names/1.2.0/x7", LatencyMS: 1.234, Body: body,
		}
		var out []byte
		b.ReportAllocs()
		for b.Loop() {
			var err error
			if out, err = json.Marshal(&rec); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(int64(len(out)))
	})
}
