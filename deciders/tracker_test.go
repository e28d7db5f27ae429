package deciders

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestTracker_WaitEndsWhenAllLeft: wait returns once every callback that
// entered has left, and not before, whatever the interleaving.
func TestTracker_WaitEndsWhenAllLeft(t *testing.T) {
	for round := range 200 {
		var tr tracker
		var left atomic.Int64
		const served = 8
		var entered sync.WaitGroup
		release := make(chan struct{})
		for range served {
			entered.Add(1)
			go func() {
				tr.enter()
				entered.Done()
				<-release
				left.Add(1)
				tr.leave()
			}()
		}
		entered.Wait()
		done := make(chan struct{})
		go func() { tr.wait(); close(done) }()
		if round%2 == 0 {
			time.Sleep(time.Microsecond) // let the waiter block first, half the time
		}
		close(release)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: wait never returned (%d left)", round, left.Load())
		}
		if n := left.Load(); n != served {
			t.Fatalf("round %d: wait returned with %d of %d left", round, n, served)
		}
	}
	var idle tracker
	idle.wait() // nobody in: returns at once
}
