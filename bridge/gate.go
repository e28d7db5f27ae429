package bridge

import (
	"sync/atomic"
	"time"
)

// gate lets one caller through per period, without a lock: for warnings and
// repair attempts that many goroutines may trigger at once.
//
// Why not golang.org/x/time/rate: rate.Sometimes{Interval} runs its
// function under its mutex, so every other caller waits while one logs or
// repairs the streams over NATS, where a shut gate sends them on at once;
// rate.Limiter's zero value refuses everything, where a gate's zero value
// works as a struct field with no constructor, and Allow is the slowest of
// the three. BenchmarkGateVersusRate, shut gate, same run on the 2-core dev
// machine (shared, so ranges over 4 runs): ~50-90 ns here, ~35-230 ns for
// Sometimes.Do, ~100-225 ns for Limiter.Allow, none allocating: Sometimes
// is as fast, so speed is not the reason; the behaviour is.
type gate struct{ last atomic.Int64 } // unix nanos of the last pass

// pass reports whether the caller may go: at least period has gone by since
// the last pass, and no other caller took this one.
func (g *gate) pass(period time.Duration) bool {
	now, last := time.Now().UnixNano(), g.last.Load()
	return now-last >= int64(period) && g.last.CompareAndSwap(last, now)
}
