package bridge

import (
	"context"
	"fmt"
	"sync"
)

// group runs the goroutines of one bridge. They share a context that
// Shutdown cancels, and Shutdown waits for all of them: a stopped bridge
// leaves nothing behind that could still log, publish or hold a connection.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool // wait has begun: Go starts nothing more
}

func newGroup() *group {
	// The root of everything the bridge does on its own; a caller's context
	// (Start's, Shutdown's) bounds only that call.
	ctx, cancel := context.WithCancel(context.Background())
	return &group{ctx: ctx, cancel: cancel}
}

// Go runs f in a goroutine of the group, with the group's context. Once
// wait has begun, f is not run: the bridge is gone, and what f would do
// (a stream re-check asked for by a late callback) is moot.
func (g *group) Go(f func(ctx context.Context)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.wg.Go(func() { f(g.ctx) })
}

// close cancels the group's context and lets Go start nothing more.
func (g *group) close() {
	g.cancel()
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// wait closes the group and waits for its goroutines to end, or for ctx to
// end first, which it reports.
func (g *group) wait(ctx context.Context) error {
	g.close()
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		select {
		case <-done: // both ready: the goroutines did end
			return nil
		default:
		}
		return fmt.Errorf("bridge: goroutines still running at the shutdown deadline: %w", ctx.Err())
	}
}
