package bridge

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"

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
