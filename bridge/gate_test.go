package bridge

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestGate(t *testing.T) {
	var g gate
	const period = 50 * time.Millisecond
	var passed atomic.Int32
	var wg sync.WaitGroup
	for range 8 { // many at once: one goes through
		wg.Go(func() {
			if g.pass(period) {
				passed.Add(1)
			}
		})
	}
	wg.Wait()
	if passed.Load() != 1 {
		t.Fatalf("%d callers passed at once, want 1", passed.Load())
	}
	if g.pass(period) {
		t.Fatal("passed again within the period")
	}
	time.Sleep(period)
	if !g.pass(period) {
		t.Fatal("did not pass after the period")
	}
}
