// Package gctune sets the garbage collector's GOGC after every collection so
// that the heap may grow by at least a fixed headroom between collections.
//
// timbus's live heap is small (a few MB) while it allocates fast, mostly in
// the NATS client and server: a message's subject, reply and payload. At a
// fixed GOGC, a small live heap means a collection every few hundred
// milliseconds under load, and each mark phase takes one of two cores'
// worth of time for a few milliseconds: that is where the slowest callbacks
// come from (make bench, open-loop p99 at half load: about 3 ms at GOGC=400,
// 2.2 ms at GOGC=1600, 1.9 ms with the collector off, on the 2-core bench
// machine). Growing GOGC for good would let a large live heap (thousands of
// idle connections) grow many times over. So the percentage follows the
// live heap: Headroom over the live heap, within [MinPercent, MaxPercent].
// The heap thus stays under live + max(live × MinPercent/100, Headroom) —
// with the defaults, under 5× the live heap or the live heap plus 64 MiB.
package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// Defaults.
const (
	DefaultHeadroom   = 64 << 20
	DefaultMinPercent = 400
	DefaultMaxPercent = 1600
)

// Config says how GOGC follows the live heap.
type Config struct {
	Headroom   uint64 // bytes the heap may grow by between collections, at least
	MinPercent int    // GOGC never below this
	MaxPercent int    // nor above this
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Headroom: DefaultHeadroom, MinPercent: DefaultMinPercent, MaxPercent: DefaultMaxPercent}
}

// PercentFor is the GOGC for a live heap of live bytes.
func (c Config) PercentFor(live uint64) int {
	if live == 0 {
		return c.MaxPercent
	}
	p := c.Headroom * 100 / live
	return int(max(min(p, uint64(c.MaxPercent)), uint64(c.MinPercent)))
}

// Tuner sets GOGC after each collection until Stop.
type Tuner struct {
	cfg     Config
	sample  []metrics.Sample
	mu      sync.Mutex // one collection's update at a time
	percent atomic.Int64
	stopped atomic.Bool
}

const liveHeapMetric = "/gc/heap/live:bytes"

// Start sets GOGC for the current live heap and again after every
// collection.
func Start(cfg Config) *Tuner {
	t := &Tuner{cfg: cfg, sample: []metrics.Sample{{Name: liveHeapMetric}}}
	t.tune()
	t.arm()
	return t
}

// Percent is the GOGC last set.
func (t *Tuner) Percent() int { return int(t.percent.Load()) }

// Stop stops tuning; GOGC keeps its last value.
func (t *Tuner) Stop() { t.stopped.Store(true) }

// sentinel is an object nothing refers to: the collection that finds it
// unreachable runs its cleanup, which arms a new one. It holds a pointer so
// that it is not a tiny allocation, whose cleanups may never run.
type sentinel struct {
	_ *byte
	_ [16]byte
}

func (t *Tuner) arm() {
	runtime.AddCleanup(&sentinel{}, func(t *Tuner) {
		if t.stopped.Load() {
			return
		}
		t.tune()
		t.arm()
	}, t)
}

func (t *Tuner) tune() {
	t.mu.Lock()
	defer t.mu.Unlock()
	metrics.Read(t.sample)
	var live uint64
	if t.sample[0].Value.Kind() == metrics.KindUint64 {
		live = t.sample[0].Value.Uint64()
	}
	p := t.cfg.PercentFor(live)
	if int64(p) != t.percent.Load() {
		debug.SetGCPercent(p)
		t.percent.Store(int64(p))
	}
}
