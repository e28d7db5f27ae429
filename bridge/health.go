package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// Paths of the operations endpoints.
const (
	PathHealth  = "/healthz"
	PathReady   = "/readyz"
	PathMetrics = "/metrics"
)

// opsHandler serves /healthz, /readyz and /metrics; ok is false for any
// other path.
func (b *Bridge) opsHandler() func(ctx *fasthttp.RequestCtx) (ok bool) {
	metricsHandler := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(b.metrics.reg, promhttp.HandlerOpts{}))
	return func(ctx *fasthttp.RequestCtx) bool {
		switch string(ctx.Path()) {
		case PathHealth:
			// The process runs, but a bridge that no longer receives
			// callbacks is as good as dead: have it restarted.
			if err := b.Err(); err != nil {
				writeJSON(ctx, fasthttp.StatusServiceUnavailable, map[string]any{"status": "failing", "error": err.Error()})
			} else {
				writeJSON(ctx, fasthttp.StatusOK, map[string]any{"status": "ok"})
			}
		case PathReady:
			if reasons := b.notReady(); len(reasons) > 0 {
				writeJSON(ctx, fasthttp.StatusServiceUnavailable, map[string]any{"ready": false, "reasons": reasons})
			} else {
				writeJSON(ctx, fasthttp.StatusOK, map[string]any{"ready": true})
			}
		case PathMetrics:
			metricsHandler(ctx)
		default:
			return false
		}
		return true
	}
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	body, _ := json.Marshal(v)
	ctx.SetStatusCode(status)
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(body)
}

// notReady lists why the bridge should not get traffic, or nothing.
func (b *Bridge) notReady() []string {
	var reasons []string
	if b.draining.Load() {
		reasons = append(reasons, "draining: shutting down")
	}
	if err := b.Err(); err != nil {
		reasons = append(reasons, err.Error())
	}
	if !b.started.Load() {
		reasons = append(reasons, "not started")
	} else if b.nc == nil || !b.nc.IsConnected() {
		status := "no connection"
		if b.nc != nil {
			status = b.nc.Status().String()
		}
		reasons = append(reasons, "NATS not connected: "+status)
	}
	if b.cfg.RequireDeciders || len(b.cfg.RequiredCommands) > 0 {
		live := b.registry.Load()
		for _, a := range b.appList {
			for _, name := range a.required() {
				if live == nil || (*live)[a.id+" "+name] == 0 {
					reasons = append(reasons, fmt.Sprintf("no live decider for %s of SdkAppid %s", name, a.id))
				}
			}
		}
	}
	return reasons
}

// required lists the before commands of an app that must have a live
// decider for the bridge to be ready. Only the operator's settings decide
// it: a command that arrives from the network, signed or not, never does,
// or one forged callback could take every bridge out of a load balancer.
func (a *appRoutes) required() []string {
	var names []string
	add := func(name string) {
		if rt, ok := a.known[name]; ok && rt.decide && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	if a.config.RequireDeciders {
		for name := range a.config.Commands {
			add(name)
		}
	}
	for _, name := range a.config.RequiredCommands {
		add(name)
	}
	sort.Strings(names)
	return names
}

// watchDeciders refreshes the decider registry every interval until the
// bridge stops: it asks every NATS service for its endpoints ($SRV.INFO) and
// counts, per command of each app, the service instances whose endpoint
// subject covers the command's decide subject.
func (b *Bridge) watchDeciders(interval time.Duration) {
	defer close(b.registryDone)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		b.refreshDeciders()
		select {
		case <-b.registryStop:
			return
		case <-tick.C:
		}
	}
}

func (b *Bridge) refreshDeciders() {
	if !b.nc.IsConnected() {
		return
	}
	infos := discoverServices(b.group.ctx, b.nc, 500*time.Millisecond, b.registryStop)
	live := map[string]int{}
	for _, a := range b.appList {
		for name, rt := range a.known {
			if !rt.decide {
				continue
			}
			n := 0
			for _, info := range infos {
				for _, ep := range info.Endpoints {
					if subjectMatches(ep.Subject, rt.subject) {
						n++
						break
					}
				}
			}
			live[a.id+" "+name] = n
			b.metrics.deciders.WithLabelValues(a.id, name).Set(float64(n))
		}
	}
	b.registry.Store(&live)
}

// discoverServices gathers the $SRV.INFO answers that arrive within wait,
// or until stop is closed or ctx ends.
func discoverServices(ctx context.Context, nc *nats.Conn, wait time.Duration, stop <-chan struct{}) []micro.Info {
	inbox := nc.NewInbox()
	replies := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return nil
	}
	defer sub.Unsubscribe()
	subject, err := micro.ControlSubject(micro.InfoVerb, "", "")
	if err != nil {
		return nil
	}
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var infos []micro.Info
	seen := map[string]bool{}
	for {
		select {
		case m := <-replies:
			var info micro.Info
			if json.Unmarshal(m.Data, &info) == nil && !seen[info.ID] {
				seen[info.ID] = true
				infos = append(infos, info)
			}
		case <-ctx.Done():
			return infos
		case <-stop:
			return infos
		}
	}
}

// subjectMatches reports whether the subscription pattern (with * and >)
// matches the concrete subject.
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || tok != "*" && tok != s[i] {
			return false
		}
	}
	return len(p) == len(s)
}

// registry is the last count of live deciders, by "<SdkAppid> <command>".
type registry = atomic.Pointer[map[string]int]
