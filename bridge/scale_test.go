package bridge

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestBridge_ScaleOut: callbacks spread over every decider of a queue group,
// and when one decider leaves mid-run no callback goes unanswered. A decider
// that drains finishes its work, so every callback is still decided; one
// that vanishes costs at most its in-flight callbacks, which get the default
// within the deadline.
func TestBridge_ScaleOut(t *testing.T) {
	for _, tt := range []struct {
		name  string
		leave func(*nats.Conn)
		// lost bounds the callbacks that may fall back to the default: a
		// vanishing decider loses what it had received and not answered,
		// at most every callback in flight (one per client).
		lost int32
	}{
		{"decider drains", func(nc *nats.Conn) { _ = nc.Drain() }, 0},
		{"decider vanishes", func(nc *nats.Conn) { nc.Close() }, 16},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := startBridge(t, func(c *Config) { c.Timeout = 500 * time.Millisecond })
			const deciders, callbacks, clients = 4, 400, 16
			var handled [deciders]atomic.Int32
			conns := make([]*nats.Conn, deciders)
			for i := range conns {
				conns[i] = connect(t, tb)
				decider(t, conns[i], decideOA, func(*nats.Msg) *nats.Msg {
					handled[i].Add(1)
					time.Sleep(time.Millisecond) // some work, so requests overlap
					return &nats.Msg{Data: []byte(oaCreateDeny)}
				})
			}
			body := sample(t, oaCreate)
			var (
				next, decided, fallback, bad atomic.Int32
				wg                           sync.WaitGroup
				leaveOnce                    sync.Once
			)
			for c := 0; c < clients; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := next.Add(1); n <= callbacks; n = next.Add(1) {
						if n == callbacks/4 {
							leaveOnce.Do(func() { tt.leave(conns[0]) })
						}
						got := post(t, tb.callbackURL(oaCreate), body)
						switch {
						case got.status != 200 || got.elapsed > tb.cfg.Timeout+250*time.Millisecond:
							bad.Add(1)
						case got.body == oaCreateDeny:
							decided.Add(1)
						case got.body == allowAnswer:
							fallback.Add(1)
						default:
							bad.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			if bad.Load() != 0 || decided.Load()+fallback.Load() != callbacks {
				t.Fatalf("%d decided, %d default, %d bad of %d", decided.Load(), fallback.Load(), bad.Load(), callbacks)
			}
			if fallback.Load() > tt.lost {
				t.Errorf("%d callbacks fell back to the default, at most %d allowed", fallback.Load(), tt.lost)
			}
			for i := range handled {
				if handled[i].Load() == 0 {
					t.Errorf("decider %d got no work: %v", i, &handled)
				}
			}
			// The deciders that stayed took over: each did far more than the
			// one that left after a quarter of the run.
			for i := 1; i < deciders; i++ {
				if handled[i].Load() <= handled[0].Load() {
					t.Errorf("decider %d handled %d, no more than the one that left (%d)", i, handled[i].Load(), handled[0].Load())
				}
			}
			t.Logf("spread %d/%d/%d/%d, %d decided, %d default", handled[0].Load(), handled[1].Load(), handled[2].Load(), handled[3].Load(), decided.Load(), fallback.Load())
		})
	}
}
