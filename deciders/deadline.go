package deciders

import (
	"context"
	"sync"
	"time"
)

// deadlineContext is the context a handler gets: it ends at the callback's
// deadline, or when the callback is done. Unlike context.WithDeadline it arms
// no timer until someone waits on Done: most handlers decide from the body
// alone and never look, and a timer per callback was the largest cost the
// SDK added to a plain subscriber (BenchmarkDeadlineContext).
type deadlineContext struct {
	deadline time.Time

	mu    sync.Mutex
	done  chan struct{} // made on the first Done or on the end, whichever comes first
	err   error         // set once, when done closes
	timer *time.Timer
}

func newDeadlineContext(deadline time.Time) *deadlineContext {
	return &deadlineContext{deadline: deadline}
}

func (c *deadlineContext) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *deadlineContext) Value(any) any { return nil }

func (c *deadlineContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	c.done = make(chan struct{})
	switch wait := time.Until(c.deadline); {
	case c.err != nil:
		close(c.done)
	case wait <= 0:
		c.endLocked(context.DeadlineExceeded)
	default:
		c.timer = time.AfterFunc(wait, func() { c.end(context.DeadlineExceeded) })
	}
	return c.done
}

// Err is DeadlineExceeded from the deadline on even if no timer is armed,
// so that a handler polling Err sees it; Done is closed whenever Err is
// not nil.
func (c *deadlineContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && !time.Now().Before(c.deadline) {
		c.endLocked(context.DeadlineExceeded)
	}
	return c.err
}

// end closes the context with err unless it has ended already.
func (c *deadlineContext) end(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endLocked(err)
}

func (c *deadlineContext) endLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.done != nil {
		close(c.done)
	}
}

// cancel ends the context once the callback is answered, as the cancel
// function of context.WithDeadline does.
func (c *deadlineContext) cancel() { c.end(context.Canceled) }
