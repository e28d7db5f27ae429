package bridge

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/benchratio"
)

// BenchmarkBridge_HotPath measures one before callback through the bridge's
// handler (parse, route, build the NATS request, validate the reply, write
// the answer) against a decider on a real NATS server, without the HTTP
// socket. The baseline is a bare NATS request with the same body and
// decider, measured in the same run: "x_nats" is the bridge's time over it
// and "allocs_over_nats" the allocations the bridge adds to it.
func BenchmarkBridge_HotPath(b *testing.B) {
	tb := startBridge(b, func(c *Config) { c.Logger, c.LogCallbacks = zerolog.New(io.Discard), DefaultConfig().LogCallbacks })
	sub, err := tb.nc.QueueSubscribe(decideOA, "deciders", func(m *nats.Msg) { _ = m.Respond([]byte(oaCreateDeny)) })
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = tb.nc.Flush()

	handle := hotPath(b, tb)
	body := sample(b, oaCreate)
	client := natsConnect(b, tb.NATSURL())
	msg := &nats.Msg{Subject: decideOA, Data: body} // at the defaults the bridge sends no headers either
	bare := func() {
		if _, err := client.RequestMsg(msg, time.Second); err != nil {
			b.Fatal(err)
		}
	}

	const baselineRuns = 2000
	baseAllocs := testing.AllocsPerRun(baselineRuns, bare)
	bridgeAllocs := testing.AllocsPerRun(baselineRuns, handle)
	benchratio.RunN(b, "x_nats", baselineRuns, bare, handle)
	b.ReportMetric(bridgeAllocs-baseAllocs, "allocs_over_nats")
}

// BenchmarkBridge_AuditSubscriber measures the hot path with an audit
// subscriber that cannot keep up (it sleeps on every record) against the
// same path with nobody listening to audit subjects, interleaved in one run.
// "x_without" is the ratio of the two; audit publishing is off the request
// path, so it should stay near 1.
func BenchmarkBridge_AuditSubscriber(b *testing.B) {
	tb := startBridge(b, func(c *Config) { c.Logger, c.LogCallbacks = zerolog.New(io.Discard), DefaultConfig().LogCallbacks })
	sub, err := tb.nc.QueueSubscribe(decideOA, "deciders", func(m *nats.Msg) { _ = m.Respond([]byte(oaCreateDeny)) })
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	handle := hotPath(b, tb)
	round := func(n int) time.Duration {
		start := time.Now()
		for range n {
			handle()
		}
		return time.Since(start)
	}
	const rounds, perRound = 6, 500
	var without, with time.Duration
	auditor := natsConnect(b, tb.NATSURL())
	for r := 0; r < rounds; r++ {
		without += round(perRound)
		slow, err := auditor.Subscribe("timbus.audit.>", func(*nats.Msg) { time.Sleep(time.Millisecond) })
		if err != nil {
			b.Fatal(err)
		}
		_ = auditor.Flush()
		with += round(perRound)
		_ = slow.Unsubscribe()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		handle()
	}
	b.ReportMetric(float64(with)/float64(without), "x_without")
}

// hotPath returns a function that runs one before callback through the
// bridge's handler and checks the answer.
func hotPath(b *testing.B, tb *testBridge) func() {
	body := sample(b, oaCreate)
	var req fasthttp.Request
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("/?SdkAppid=" + testApp + "&CallbackCommand=" + oaCreate + "&contenttype=json&ClientIP=10.0.0.7&OptPlatform=RESTAPI")
	req.SetBody(body)
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5555}
	var ctx fasthttp.RequestCtx
	return func() {
		ctx.Init(&req, remote, nil)
		tb.handle(&ctx)
		if string(ctx.Response.Body()) != oaCreateDeny {
			b.Fatalf("answer %s", ctx.Response.Body())
		}
	}
}

func natsConnect(tb testing.TB, url string) *nats.Conn {
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// BenchmarkBridge_AfterCallback measures one after callback through the
// bridge's handler (parse, route, publish the event, answer) against a real
// NATS server with an event subscriber, without the HTTP socket: "serial"
// one at a time, "parallel" from GOMAXPROCS×8 goroutines at once, as when
// Tencent sends many notifications together.
func BenchmarkBridge_AfterCallback(b *testing.B) {
	tb := startBridge(b, func(c *Config) { c.Logger, c.LogCallbacks = zerolog.New(io.Discard), DefaultConfig().LogCallbacks })
	sub, err := tb.nc.Subscribe("timbus.event.>", func(*nats.Msg) {})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)
	_ = tb.nc.Flush()
	b.Run("serial", func(b *testing.B) {
		handle := afterPath(b, tb)
		b.ReportAllocs()
		for b.Loop() {
			handle()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		flushes := tb.confirm.flushes.Load()
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			handle := afterPath(b, tb)
			for pb.Next() {
				handle()
			}
		})
		if n := tb.confirm.flushes.Load() - flushes; n > 0 {
			b.ReportMetric(float64(b.N)/float64(n), "callbacks/flush")
		}
	})
}

// afterPath returns a function that runs one after callback through the
// bridge's handler and checks that it was answered 200.
func afterPath(b *testing.B, tb *testBridge) func() {
	const command = "Group.CallbackAfterSendMsg"
	body := sample(b, command)
	var req fasthttp.Request
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("/?SdkAppid=" + testApp + "&CallbackCommand=" + command + "&contenttype=json&ClientIP=10.0.0.7&OptPlatform=RESTAPI")
	req.SetBody(body)
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5555}
	var ctx fasthttp.RequestCtx
	return func() {
		ctx.Init(&req, remote, nil)
		tb.handle(&ctx)
		if ctx.Response.StatusCode() != fasthttp.StatusOK {
			b.Fatalf("answer %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

// BenchmarkAuditEncode measures the encoding of a typical audit record (a
// decided callback with Tencent's sample body) on the auditor's goroutine.
func BenchmarkAuditEncode(b *testing.B) {
	e := &auditEntry{}
	e.reset()
	e.received = time.Now()
	e.app, e.command, e.kind, e.outcome, e.status, e.code = testApp, oaCreate, "before", protocol.OutcomeDecided, 200, 120005
	e.decider = "names/1.2.0/x7"
	e.latency = 1234 * time.Microsecond
	e.id = e.keep([]byte("2c25335faf68-1a"))
	e.clientIP = e.keep([]byte("10.0.0.7"))
	e.platform = e.keep([]byte("RESTAPI"))
	e.body = e.keep(sample(b, oaCreate))
	e.answer = []byte(oaCreateDeny)
	var out []byte
	encode := func() { out = e.encode(out[:0], 1<<20) }
	// The baseline validates body and answer again, as the encoder does for
	// values nobody checked; the bridge's records are of checked ones.
	unchecked := func() {
		e.bodyChecked, e.answerChecked = false, false
		encode()
		e.bodyChecked, e.answerChecked = true, true
	}
	e.bodyChecked, e.answerChecked = true, true
	encode()
	b.SetBytes(int64(len(out)))
	b.ReportAllocs()
	benchratio.Run(b, "x_unchecked", unchecked, encode)
}
