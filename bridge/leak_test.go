package bridge

import (
	"context"
	"errors"
	"net"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/timbus-dev/timbus/internal/natstest"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// bridge the tests start must leave nothing behind once shut down.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leakIgnores()...)
}

// leakIgnores are the goroutines of third-party code that outlive a stopped
// bridge through no fault of its own. Both are fasthttp's:
//   - updateServerDate's refresher, started once per process for the Date
//     header and never stopped;
//   - a server's worker pool cleaner, which sees the pool stopped only when
//     it wakes, up to MaxIdleWorkerDuration (10s) after Shutdown. It holds
//     no connection and then ends.
func leakIgnores() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	}
}

// TestShutdown_LeavesNoGoroutine: once Shutdown has returned, no goroutine of
// the bridge, its NATS connection or its embedded server is left, whether it
// runs its own NATS server, uses an external one, or starts while that one
// is unreachable (and keeps trying to set its streams up in the background).
func TestShutdown_LeavesNoGoroutine(t *testing.T) {
	streams := func(c *Config) {
		c.AuditStream = StreamConfig{Name: "AUDIT"}
		c.EventsStream = StreamConfig{Name: "EVENTS", DuplicateWindow: time.Minute}
	}
	tests := []struct {
		name string
		// nats returns the NATS URL for the bridge, "" for the embedded
		// server, and stops the server it started, if any.
		nats func(t *testing.T) (url string, stop func())
		// reachable is false when no callback should be sent: its audit
		// record would be held until the shutdown's deadline.
		reachable bool
	}{
		{"embedded", func(t *testing.T) (string, func()) { return "", func() {} }, true},
		{"external", func(t *testing.T) (string, func()) {
			opts := natstest.Options()
			opts.JetStream, opts.StoreDir = true, t.TempDir()
			ns := natstest.RunWith(t, opts)
			return ns.ClientURL(), func() { ns.Shutdown(); ns.WaitForShutdown() }
		}, true},
		{"external unreachable", func(t *testing.T) (string, func()) {
			// A port nobody listens on: the bridge starts all the same and
			// retries NATS and its streams until Shutdown.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			url := "nats://" + ln.Addr().String()
			ln.Close()
			return url, func() {}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			url, stopNATS := tt.nats(t)
			cfg := DefaultConfig()
			cfg.Listen = "127.0.0.1:0"
			cfg.MetricsListen = "127.0.0.1:0"
			cfg.Apps = []App{{ID: testApp}}
			cfg.Logger = zerolog.New(&syncBuffer{})
			cfg.NATSURL = url
			if url == "" {
				cfg.NATSListen = "127.0.0.1:0"
				cfg.NATSStoreDir = t.TempDir()
			}
			streams(&cfg)
			b, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			if tt.reachable {
				// The request path's goroutines too: a before and an after
				// callback.
				for _, command := range []string{oaCreate, afterCommand} {
					if got := post(t, "http://"+b.Addr()+"/?SdkAppid="+testApp+"&CallbackCommand="+command, sample(t, command)); got.status != 200 {
						t.Fatalf("%s: %d %s", command, got.status, got.body)
					}
				}
				httpClient.CloseIdleConnections()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := b.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			// Shutdown waits for the bridge's own goroutines: none may be
			// left the moment it returns. Those of nats.go and nats-server
			// end on their own a little later, which goleak waits for.
			if left := bridgeGoroutines(); len(left) > 0 {
				t.Errorf("goroutines of the bridge still running after Shutdown:\n%s", strings.Join(left, "\n\n"))
			}
			stopNATS()
			goleak.VerifyNone(t, append(leakIgnores(), before)...)
		})
	}
}

// bridgeFrame is a stack frame in the bridge package (tests included: see
// bridgeGoroutines).
var bridgeFrame = regexp.MustCompile(`\t\S*/bridge/[^/\s]+\.go:\d+`)

// bridgeGoroutines returns the stacks of the goroutines other than the
// caller's that run the bridge's own code.
func bridgeGoroutines() []string {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var left []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 { // the caller's own, listed first
			continue
		}
		for _, m := range bridgeFrame.FindAllString(g, -1) {
			if !strings.Contains(m, "_test.go:") {
				left = append(left, g)
				break
			}
		}
	}
	return left
}

// TestShutdown_AfterFailedStart: Start undoes what it set up when a step
// fails, so a Shutdown after it has nothing to wait for and returns at once.
func TestShutdown_AfterFailedStart(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ns := natstest.Run(t)
	cfg := DefaultConfig()
	cfg.Listen = busy.Addr().String()
	cfg.NATSURL = ns.ClientURL()
	cfg.Apps = []App{{ID: testApp}}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); !errors.Is(err, ErrListen) {
		t.Fatalf("Start on a busy port: %v, want ErrListen", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	if err := b.Shutdown(ctx); err != nil || time.Since(start) > time.Second {
		t.Errorf("Shutdown after a failed Start: %v after %v", err, time.Since(start))
	}
}
