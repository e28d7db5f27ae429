package bridge

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Why the callback connections' deadlines are swept rather than set: fasthttp
// sets three deadlines per keep-alive request (idle, read, write), and each
// net.Conn deadline is a runtime timer moved under the poller's lock. On
// the 2-core bench machine that was 0.7-0.8 µs per callback, about 3 % of
// what timbus spends on one (make bench, timbus-embedded / naive-embedded
// 0.91 → 0.93-0.94 with the three timeouts off, same runs). A swept
// connection only stores each deadline in an atomic; one goroutine looks at
// every open connection each sweep tick and, for an I/O still waiting past
// its deadline, sets the real deadline in the past, which ends that I/O with
// the usual timeout error. A deadline thus fires up to one tick late, never
// early; ticks are a small share of the shortest timeout.

// Bounds of the sweep tick: a sixteenth of the shortest timeout, within
// these.
const (
	minSweepTick = 5 * time.Millisecond
	maxSweepTick = 250 * time.Millisecond
)

// sweepTick is the tick for connections whose shortest timeout is shortest.
func sweepTick(shortest time.Duration) time.Duration {
	return min(max(shortest/16, minSweepTick), maxSweepTick)
}

// shortestTimeout is the shortest of the timeouts set (> 0), or 0.
func shortestTimeout(timeouts ...time.Duration) time.Duration {
	var shortest time.Duration
	for _, t := range timeouts {
		if t > 0 && (shortest == 0 || t < shortest) {
			shortest = t
		}
	}
	return shortest
}

// deadlineSweeper enforces the deadlines of the connections it tracks.
type deadlineSweeper struct {
	tick  time.Duration
	mu    sync.Mutex
	conns map[*sweptConn]struct{}
}

func newDeadlineSweeper(tick time.Duration) *deadlineSweeper {
	return &deadlineSweeper{tick: tick, conns: make(map[*sweptConn]struct{})}
}

// track returns c with swept deadlines, until it is closed.
func (s *deadlineSweeper) track(c net.Conn) net.Conn {
	sc := &sweptConn{Conn: c, sweeper: s}
	s.mu.Lock()
	s.conns[sc] = struct{}{}
	s.mu.Unlock()
	return sc
}

// tracked is how many open connections the sweeper watches.
func (s *deadlineSweeper) tracked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *deadlineSweeper) forget(c *sweptConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// run sweeps until ctx ends: the bridge's group, cancelled once the HTTP
// server has stopped, so that connections still draining keep their
// deadlines.
func (s *deadlineSweeper) run(ctx context.Context) {
	t := time.NewTicker(s.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.sweep(now.UnixNano())
		}
	}
}

func (s *deadlineSweeper) sweep(now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.read.expire(now, c.Conn.SetReadDeadline)
		c.write.expire(now, c.Conn.SetWriteDeadline)
	}
}

// sweptConn is a connection whose deadlines the sweeper enforces.
type sweptConn struct {
	net.Conn
	sweeper     *deadlineSweeper
	read, write sweptDeadline
	closed      atomic.Bool
}

func (c *sweptConn) Read(p []byte) (int, error) {
	c.read.busy.Add(1)
	defer c.read.busy.Add(-1)
	return c.Conn.Read(p)
}

func (c *sweptConn) Write(p []byte) (int, error) {
	c.write.busy.Add(1)
	defer c.write.busy.Add(-1)
	return c.Conn.Write(p)
}

func (c *sweptConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *sweptConn) SetReadDeadline(t time.Time) error {
	return c.read.set(t, c.Conn.SetReadDeadline)
}

func (c *sweptConn) SetWriteDeadline(t time.Time) error {
	return c.write.set(t, c.Conn.SetWriteDeadline)
}

func (c *sweptConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.sweeper.forget(c)
	}
	return c.Conn.Close()
}

// sweptDeadline is one direction's deadline.
type sweptDeadline struct {
	at   atomic.Int64 // Unix nanoseconds; 0: none
	busy atomic.Int32 // Reads (or Writes) in progress
	// mu orders expire and a set that follows it, so that the real
	// deadline expire put in the past is never left there for an I/O
	// under a deadline set since.
	mu      sync.Mutex
	expired atomic.Bool
}

func (d *sweptDeadline) set(t time.Time, real func(time.Time) error) error {
	var at int64
	if !t.IsZero() {
		at = max(t.UnixNano(), 1)
	}
	d.at.Store(at)
	if !d.expired.Load() {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.expired.Load() {
		return nil
	}
	d.expired.Store(false)
	return real(time.Time{})
}

// expire ends an I/O waiting past the deadline, by setting the real
// deadline in the past.
func (d *sweptDeadline) expire(now int64, real func(time.Time) error) {
	if at := d.at.Load(); at == 0 || at > now || d.busy.Load() == 0 || d.expired.Load() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// Marked before the second look, so that a set storing its deadline
	// after that look sees the mark and clears the real deadline again.
	d.expired.Store(true)
	if at := d.at.Load(); at == 0 || at > now {
		d.expired.Store(false) // a set since the first look wins
		return
	}
	_ = real(time.Unix(0, 1))
}
