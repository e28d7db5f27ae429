// Package gctune sets the garbage collector's GOGC after every collection so
// that the heap may grow by at least a fixed headroom between collections.
//
// timbus's live heap is small (a few MB) while it allocates fast, mostly in
// the NATS client and server: a message's subject, reply and payload. At a
// fixed GOGC, a small live heap means a collection every few hundred
// milliseconds under load, and each mark phase takes one of two cores'
// worth of time for a few milliseconds: the callbacks in flight then are the
// slowest. The headroom trades that against the cost of a large heap, and
// the two were measured on two machines (make bench, 2 cores): on one,
// open-loop p99 at half load was about 3 ms at GOGC=400, 2.2 ms at
// GOGC=1600 and 1.9 ms with the collector off, and throughput did not move;
// on the other, whose page faults and cache misses cost more, a 64 MiB
// headroom (GOGC 1600 here, about 100 MB resident) took 2,000 page faults a
// second and 15-20 % of the throughput against GOGC=100 or 400 (about 30
// and 45 MB resident), with no better p99 at the same rate. 16 MiB keeps
// collections four times rarer than Go's default for a 4 MB live heap and
// the heap under a few tens of MB. Growing GOGC for good would let a large
// live heap (thousands of idle connections) grow many times over, so the
// percentage follows the live heap: Headroom over the live heap, within
// [MinPercent, MaxPercent]. The heap thus stays under
// live + max(live × MinPercent/100, Headroom) — with the defaults, under
// twice the live heap or the live heap plus 16 MiB.
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
	DefaultHeadroom   = 16 << 20
	DefaultMinPercent = 100
	DefaultMaxPercent = 400
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
