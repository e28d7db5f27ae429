package bridge

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// sweptPair returns a connection tracked by a running sweeper with tick, and
// its peer, over loopback TCP.
func sweptPair(t *testing.T, tick time.Duration) (*deadlineSweeper, net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	s := newDeadlineSweeper(tick)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.run(ctx) }()
	c := s.track(raw)
	t.Cleanup(func() {
		c.Close()
		peer.Close()
		cancel()
		<-done
	})
	return s, c, peer
}

func setReadDeadline(t *testing.T, c net.Conn, at time.Time) {
	t.Helper()
	if err := c.SetReadDeadline(at); err != nil {
		t.Fatal(err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestSweptDeadline_ReadPastDeadlineTimesOut(t *testing.T) {
	const tick, wait = 5 * time.Millisecond, 60 * time.Millisecond
	_, c, _ := sweptPair(t, tick)
	start := time.Now()
	setReadDeadline(t, c, start.Add(wait))
	_, err := c.Read(make([]byte, 1))
	took := time.Since(start)
	if !isTimeout(err) {
		t.Fatalf("read past its deadline: got %v, want a timeout net.Error", err)
	}
	if took < wait {
		t.Errorf("the deadline fired early: after %v, deadline %v", took, wait)
	}
	if took > 5*time.Second {
		t.Errorf("the deadline fired only after %v (deadline %v, tick %v)", took, wait, tick)
	}
	// The deadline stays in force for later reads, as a net.Conn's does.
	if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
		t.Errorf("second read past the deadline: got %v, want a timeout", err)
	}
	// A new deadline lifts it.
	setReadDeadline(t, c, time.Time{})
}

func TestSweptDeadline_LaterDeadlineWins(t *testing.T) {
	const tick = 5 * time.Millisecond
	_, c, peer := sweptPair(t, tick)
	setReadDeadline(t, c, time.Now().Add(30*time.Millisecond))
	// Moved before it passes: the data, sent after the first deadline,
	// must be read.
	setReadDeadline(t, c, time.Now().Add(10*time.Second))
	go func() {
		time.Sleep(100 * time.Millisecond)
		peer.Write([]byte("x"))
	}()
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatalf("read under the later deadline: %v", err)
	}
}

// A deadline that passes while nothing waits on it (fasthttp's read deadline
// while the handler runs) must not fail the I/O that comes after a new one.
func TestSweptDeadline_PassedWhileIdleThenRenewed(t *testing.T) {
	const tick = 5 * time.Millisecond
	_, c, peer := sweptPair(t, tick)
	setReadDeadline(t, c, time.Now().Add(10*time.Millisecond))
	time.Sleep(20 * tick) // many sweeps past the deadline, no read waiting
	readsAfterRenewal(t, c, peer)
}

func TestSweptDeadline_RenewedAfterExpiry(t *testing.T) {
	const tick = 5 * time.Millisecond
	_, c, peer := sweptPair(t, tick)
	setReadDeadline(t, c, time.Now().Add(20*time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("got %v, want a timeout", err)
	}
	readsAfterRenewal(t, c, peer)
}

// readsAfterRenewal gives c a distant read deadline and checks that a read
// of what peer then writes succeeds.
func readsAfterRenewal(t *testing.T, c, peer net.Conn) {
	t.Helper()
	setReadDeadline(t, c, time.Now().Add(10*time.Second))
	if _, err := peer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatalf("read under the renewed deadline: %v", err)
	}
}

func TestSweptDeadline_WriteToPeerNotReading(t *testing.T) {
	const tick = 5 * time.Millisecond
	_, c, _ := sweptPair(t, tick)
	if err := c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	var err error
	// Loopback buffers hold a few MB; the peer never reads.
	for i := 0; i < 256 && err == nil; i++ {
		_, err = c.Write(chunk)
	}
	if !isTimeout(err) {
		t.Fatalf("write to a peer that does not read: got %v, want a timeout", err)
	}
}

func TestSweptDeadline_ClosedConnIsForgotten(t *testing.T) {
	s, c, _ := sweptPair(t, time.Second)
	c.Close()
	c.Close() // twice is harmless
	if n := s.tracked(); n != 0 {
		t.Errorf("sweeper still tracks %d connection(s) after Close", n)
	}
}

// Deadlines set while sweeps run: whatever the interleaving, a read under a
// deadline far ahead is never failed by an earlier one that passed.
func TestSweptDeadline_SetDuringSweeps(t *testing.T) {
	const tick = time.Millisecond
	s, c, peer := sweptPair(t, tick)
	sc := c.(*sweptConn)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // sweeps as fast as it can, beside the ticker
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				s.sweep(time.Now().UnixNano())
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	buf := make([]byte, 1)
	for i := range 300 {
		// A deadline just passed, then one far ahead, as fasthttp moves
		// from a request's read deadline to the next one's.
		sc.read.busy.Add(1) // as if a read waited, so that sweeps act
		setReadDeadline(t, c, time.Now().Add(-time.Millisecond))
		time.Sleep(time.Duration(i%3) * tick)
		sc.read.busy.Add(-1)
		setReadDeadline(t, c, time.Now().Add(time.Minute))
		if _, err := peer.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("round %d: read under a deadline a minute ahead: %v", i, err)
		}
	}
}

func TestSweepTick(t *testing.T) {
	for _, tc := range []struct{ shortest, want time.Duration }{
		{5 * time.Second, maxSweepTick},
		{time.Second, time.Second / 16},
		{10 * time.Millisecond, minSweepTick},
	} {
		if got := sweepTick(tc.shortest); got != tc.want {
			t.Errorf("sweepTick(%v) = %v, want %v", tc.shortest, got, tc.want)
		}
	}
	if got := shortestTimeout(0, 3*time.Second, time.Second); got != time.Second {
		t.Errorf("shortestTimeout = %v, want 1s", got)
	}
	if got := shortestTimeout(0, 0); got != 0 {
		t.Errorf("shortestTimeout of none = %v, want 0", got)
	}
}
