package bridge

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// This file finds the live deciders: NATS service discovery ($SRV.INFO)
// tells which service instances serve which decide subjects; the count per
// command feeds timbus_deciders and /readyz.

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
