//go:build unix

package main

import (
	"strings"
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

// TestServeReloadsTLSOnSIGHUP sends a real SIGHUP to a serve with HTTPS: it
// reads the certificate again and goes on serving. Were serve not to catch
// it, the test binary would die.
func TestServeReloadsTLSOnSIGHUP(t *testing.T) {
	clearEnv(t)
	cert, key, _ := tlsFiles(t)
	s := startServe(t, "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--sdkappid", testApp,
		"--tls-cert", cert, "--tls-key", key)
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.stderr.String(), "SIGHUP: TLS certificate files read again") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged within 5s of SIGHUP; stderr:\n%s", s.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.bridge.Err(); err != nil {
		t.Errorf("serving stopped: %v", err)
	}
	if code := s.stop(t); code != exitOK {
		t.Errorf("exit code = %d, want %d", code, exitOK)
	}
}
