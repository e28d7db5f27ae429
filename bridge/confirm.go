package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// confirmer tells after callbacks when their event is on the NATS server,
// so that Tencent gets 200 only for an event NATS has. A publish returns
// once the message is in the client's write buffer, where a NATS outage or
// a shutdown would lose it; only the server's PONG to a PING sent after it
// on the same connection proves that the server took it. One goroutine
// sends that PING for every callback waiting when it starts (a group
// commit): concurrent callbacks share one round trip.
type confirmer struct {
	nc *nats.Conn

	mu      sync.Mutex
	waiting []*confirmWait
	stopped bool

	flushes atomic.Uint64 // round trips made, for benchmarks

	spare []*confirmWait // the last batch, reused; run's own
	wake  chan struct{}  // a waiter registered; capacity 1
	quit  chan struct{}
	done  chan struct{}
}

// confirmWait is one callback waiting for its confirmation. It lives in
// the callback's pooled exchange; result has capacity 1, so run never
// blocks on it.
type confirmWait struct {
	epoch    uint64    // the connection's reconnect count before the publish
	deadline time.Time // when the callback must be answered
	result   chan error
}

func newConfirmWait() *confirmWait { return &confirmWait{result: make(chan error, 1)} }

// Why a callback's event was not confirmed; the callback gets 503.
var (
	errConfirmStopped     = fmt.Errorf("%w: the bridge is stopping", ErrNATS)
	errConfirmTimeout     = fmt.Errorf("%w: NATS did not confirm the event before the deadline", ErrNATS)
	errConfirmReconnected = fmt.Errorf("%w: the connection to NATS was replaced before the event was confirmed", ErrNATS)
)

func newConfirmer(g *group, nc *nats.Conn) *confirmer {
	c := &confirmer{nc: nc, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	g.Go(func(context.Context) { c.run() })
	return c
}

// epoch identifies the connection a publish goes out on. Read before the
// publish and compared after the PONG: equal, no reconnection came between
// them, so the PONG came on the connection that carried the publish.
func (c *confirmer) epoch() uint64 { return c.nc.Stats().Reconnects }

// confirm waits until the event published after epoch was read is on the
// server, or fails once deadline passes, the connection is lost or
// replaced, or the confirmer stops. timer must be stopped; it is left
// stopped. On errConfirmTimeout w may still receive a result later, so
// the caller must not use w again.
func (c *confirmer) confirm(w *confirmWait, epoch uint64, deadline time.Time, timer *time.Timer) error {
	w.epoch, w.deadline = epoch, deadline
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return errConfirmStopped
	}
	c.waiting = append(c.waiting, w)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // run is already due to look
	}
	// Run bounds each flush by its batch's earliest deadline, but a flush
	// begun for others may outlast this callback's own deadline.
	timer.Reset(time.Until(deadline))
	select {
	case err := <-w.result:
		timer.Stop()
		return err
	case <-timer.C:
		return errConfirmTimeout
	}
}

// run confirms the waiting callbacks, one batch per flush, until stop.
func (c *confirmer) run() {
	defer close(c.done)
	for {
		select {
		case <-c.wake:
		case <-c.quit:
			return
		}
		c.mu.Lock()
		batch := c.waiting
		c.waiting, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		c.flush(batch)
		clear(batch)
		c.spare = batch[:0]
	}
}

// flush sends one PING for batch and answers each of its callbacks.
// Callbacks already past their deadline are not waited for, and the flush
// ends by the earliest remaining deadline: a slow NATS should fail the
// batch while its callbacks can still be answered, not after.
func (c *confirmer) flush(batch []*confirmWait) {
	now := time.Now()
	var until time.Time
	for _, w := range batch {
		if w.deadline.After(now) && (until.IsZero() || w.deadline.Before(until)) {
			until = w.deadline
		}
	}
	var err error
	switch {
	case until.IsZero():
		err = errConfirmTimeout
	case !c.nc.IsConnected():
		// A PING now would wait for the next connection, which cannot
		// carry events published on the lost one.
		err = fmt.Errorf("%w: %s", ErrNATS, c.nc.Status())
	default:
		c.flushes.Add(1)
		if err = c.nc.FlushTimeout(until.Sub(now)); errors.Is(err, nats.ErrTimeout) {
			err = errConfirmTimeout
		} else if err != nil {
			err = fmt.Errorf("%w: confirm the event: %w", ErrNATS, err)
		}
	}
	epoch := c.epoch()
	for _, w := range batch {
		switch {
		case err != nil:
			w.result <- err
		case !w.deadline.After(now):
			w.result <- errConfirmTimeout
		case w.epoch != epoch:
			w.result <- errConfirmReconnected
		default:
			w.result <- nil
		}
	}
}

// stop ends run once its flush in progress, if any, is over, and fails the
// callbacks still waiting: NATS cannot confirm them any more. It is called
// when the HTTP server has stopped, so only callbacks that outlived the
// shutdown's deadline can still be waiting.
func (c *confirmer) stop() {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	close(c.quit)
	<-c.done
	c.mu.Lock()
	waiting := c.waiting
	c.waiting = nil
	c.mu.Unlock()
	for _, w := range waiting {
		w.result <- errConfirmStopped
	}
}
