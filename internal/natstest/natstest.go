// Package natstest starts real NATS servers for tests: embedded in the test
// process, on 127.0.0.1 and a random port, shut down when the test ends.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options returns the options Run uses, for tests that need to change them
// (JetStream, clustering) before calling RunWith.
func Options() *server.Options {
	return &server.Options{
		Host:   "127.0.0.1",
		Port:   server.RANDOM_PORT,
		NoSigs: true,
		NoLog:  true,
	}
}

// Run starts a NATS server and stops it when the test ends.
func Run(tb testing.TB) *server.Server {
	tb.Helper()
	return RunWith(tb, Options())
}

// RunWith starts a NATS server with opts and stops it when the test ends.
func RunWith(tb testing.TB, opts *server.Options) *server.Server {
	tb.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("natstest: new server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		tb.Fatal("natstest: server not ready within 10s")
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect opens a client connection to s and closes it when the test ends.
func Connect(tb testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		tb.Fatalf("natstest: connect %s: %v", s.ClientURL(), err)
	}
	tb.Cleanup(nc.Close)
	return nc
}
