//go:build unix

package main

import (
	"syscall"
	"testing"
	"time"
)

// TestServeStopsOnSIGTERM sends the process a real SIGTERM, as an
// orchestrator would. Were serve not to catch it, the test binary would die.
func TestServeStopsOnSIGTERM(t *testing.T) {
	clearEnv(t)
	s := startServe(t, "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--sdkappid", testApp)
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.finished:
	case <-time.After(5 * time.Second):
		t.Fatalf("serve did not stop within 5s of SIGTERM; stderr:\n%s", s.stderr)
	}
	if s.code != exitOK {
		t.Errorf("exit code = %d, want %d", s.code, exitOK)
	}
}
