package deciders

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/timbus-dev/timbus/internal/benchratio"
)

func TestDeadlineContext(t *testing.T) {
	t.Run("ends at the deadline", func(t *testing.T) {
		ctx := newDeadlineContext(time.Now().Add(50 * time.Millisecond))
		if err := ctx.Err(); err != nil {
			t.Fatalf("Err before the deadline = %v", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("Done not closed at the deadline")
		}
		if err := ctx.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Err = %v, want DeadlineExceeded", err)
		}
	})
	t.Run("Err sees the deadline without a timer", func(t *testing.T) {
		ctx := newDeadlineContext(time.Now().Add(-time.Millisecond))
		if err := ctx.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Err = %v, want DeadlineExceeded", err)
		}
		select {
		case <-ctx.Done():
		default:
			t.Fatal("Err is set but Done is open")
		}
	})
	t.Run("cancel ends it", func(t *testing.T) {
		ctx := newDeadlineContext(time.Now().Add(time.Hour))
		done := ctx.Done()
		ctx.cancel()
		<-done
		if err := ctx.Err(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Err = %v, want Canceled", err)
		}
		ctx.cancel() // twice is harmless
		if ctx.timer.Stop() {
			t.Error("the timer still runs after cancel")
		}
	})
	t.Run("Done after cancel is closed", func(t *testing.T) {
		ctx := newDeadlineContext(time.Now().Add(time.Hour))
		ctx.cancel()
		<-ctx.Done()
	})
	t.Run("children see the parent's end", func(t *testing.T) {
		parent := newDeadlineContext(time.Now().Add(time.Hour))
		child, stop := context.WithTimeout(parent, time.Hour)
		defer stop()
		if d, ok := child.Deadline(); !ok || !d.Equal(parent.deadline) {
			t.Errorf("child deadline = %v, %v; want the parent's", d, ok)
		}
		parent.cancel()
		select {
		case <-child.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("child not ended with its parent")
		}
	})
}

// BenchmarkDeadlineContext is a callback's context that nobody waits on,
// against context.WithDeadline's.
func BenchmarkDeadlineContext(b *testing.B) {
	deadline := time.Now().Add(time.Hour)
	var sink context.Context
	benchratio.Run(b, "x_context_WithDeadline", func() {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		sink = ctx
		cancel()
	}, func() {
		ctx := newDeadlineContext(deadline)
		sink = ctx
		ctx.cancel()
	})
	_ = sink
}
