package bridge

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// BenchmarkBridge_HotPath measures one before callback through the bridge's
// handler (parse, route, build the NATS request, validate the reply, write
// the answer) against a decider on a real NATS server, without the HTTP
// socket. The baseline is a bare NATS request with the same body, headers and
// decider, measured in the same run: "x_nats" is the bridge's time over it
// and "allocs_over_nats" the allocations the bridge adds to it.
func BenchmarkBridge_HotPath(b *testing.B) {
	tb := startBridge(b, func(c *Config) { c.Logger = zerolog.New(io.Discard) })
	sub, err := tb.nc.QueueSubscribe(decideOA, "deciders", func(m *nats.Msg) { _ = m.Respond([]byte(oaCreateDeny)) })
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = tb.nc.Flush()

	body := sample(b, oaCreate)
	var req fasthttp.Request
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("/?SdkAppid=" + testApp + "&CallbackCommand=" + oaCreate + "&contenttype=json&ClientIP=10.0.0.7&OptPlatform=RESTAPI")
	req.SetBody(body)
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5555}
	var ctx fasthttp.RequestCtx
	handle := func() {
		ctx.Init(&req, remote, nil)
		tb.handle(&ctx)
		if string(ctx.Response.Body()) != oaCreateDeny {
			b.Fatalf("answer %s", ctx.Response.Body())
		}
	}
	client := natsConnect(b, tb.NATSURL())
	msg := nats.NewMsg(decideOA)
	for _, k := range slotNames {
		msg.Header.Set(k, "1400000001")
	}
	msg.Data = body
	bare := func() {
		if _, err := client.RequestMsg(msg, time.Second); err != nil {
			b.Fatal(err)
		}
	}

	const baselineRuns = 2000
	baseAllocs := testing.AllocsPerRun(baselineRuns, bare)
	start := time.Now()
	for range baselineRuns {
		bare()
	}
	basePerOp := time.Since(start) / baselineRuns
	bridgeAllocs := testing.AllocsPerRun(baselineRuns, handle)

	b.ReportAllocs()
	b.ResetTimer()
	start = time.Now()
	n := 0
	for b.Loop() {
		handle()
		n++
	}
	perOp := time.Since(start) / time.Duration(n)
	b.ReportMetric(float64(perOp)/float64(basePerOp), "x_nats")
	b.ReportMetric(bridgeAllocs-baseAllocs, "allocs_over_nats")
}

func natsConnect(tb testing.TB, url string) *nats.Conn {
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}
