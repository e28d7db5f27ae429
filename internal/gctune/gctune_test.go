package gctune

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercentFor(t *testing.T) {
	c := DefaultConfig()
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, DefaultMaxPercent},
		{1 << 20, DefaultMaxPercent},  // 16 MiB over 1 MiB: capped
		{4 << 20, 400},                // 16 MiB over 4 MiB
		{8 << 20, 200},                // 16 MiB over 8 MiB
		{16 << 20, DefaultMinPercent}, // 16 MiB over 16 MiB is 100
		{1 << 30, DefaultMinPercent},  // a large live heap: the floor
	} {
		if got := c.PercentFor(tc.live); got != tc.want {
			t.Errorf("PercentFor(%d MiB) = %d, want %d", tc.live>>20, got, tc.want)
		}
	}
}

// gcPercent reads GOGC without changing it for long.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestTuner_FollowsTheLiveHeap(t *testing.T) {
	before := gcPercent()
	defer debug.SetGCPercent(before)

	// The live heap Start reads is the last collection's: collect now, so
	// that it is this test's and not what an earlier test (or run, with
	// -count) left to collect. Otherwise GOGC may start at the floor and
	// have nowhere to fall.
	runtime.GC()

	// A headroom of 4× the live heap that is about to exist, so that the
	// percentage moves when it does.
	var keep [][]byte
	cfg := Config{Headroom: 32 << 20, MinPercent: 50, MaxPercent: 10000}
	tuner := Start(cfg)
	defer tuner.Stop()
	if got, want := gcPercent(), tuner.Percent(); got != want {
		t.Fatalf("GOGC = %d right after Start, tuner says %d", got, want)
	}
	small := tuner.Percent()

	for range 64 {
		keep = append(keep, make([]byte, 1<<20)) // 64 MiB more live heap
	}
	deadline := time.Now().Add(10 * time.Second)
	for tuner.Percent() >= small && time.Now().Before(deadline) {
		runtime.GC() // the cleanup runs after the collection, on its own goroutine
		time.Sleep(10 * time.Millisecond)
	}
	runtime.KeepAlive(keep)
	big := tuner.Percent()
	if big >= small {
		t.Fatalf("GOGC stayed at %d with 64 MiB more live heap", big)
	}
	if got := gcPercent(); got != big {
		t.Errorf("runtime GOGC = %d, tuner says %d", got, big)
	}
	if want := cfg.PercentFor(64 << 20); big > want {
		t.Errorf("GOGC = %d with over 64 MiB live, want at most %d", big, want)
	}
}
