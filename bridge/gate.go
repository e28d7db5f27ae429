package bridge

import (
	"sync/atomic"
	"time"
)

// gate lets one caller through per period, without a lock: for warnings and
// repair attempts that many goroutines may trigger at once.
type gate struct{ last atomic.Int64 } // unix nanos of the last pass

// pass reports whether the caller may go: at least period has gone by since
// the last pass, and no other caller took this one.
func (g *gate) pass(period time.Duration) bool {
	now, last := time.Now().UnixNano(), g.last.Load()
	return now-last >= int64(period) && g.last.CompareAndSwap(last, now)
}
