//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/bridge"
)

// helperFileLimit, in the environment of the test binary, makes
// TestServeHelperProcess run "timbus serve" under that open-file limit.
const helperFileLimit = "TIMBUS_TEST_HELPER_NOFILE"

// TestServeHelperProcess is no test of its own: the tests below run the test
// binary again with helperFileLimit set, and this function, in that child
// process, lowers RLIMIT_NOFILE, then runs "timbus serve" with the arguments
// after "--". It prints the addresses the bridge bound on one line of stdout.
func TestServeHelperProcess(t *testing.T) {
	limitText := os.Getenv(helperFileLimit)
	if limitText == "" {
		t.Skip("runs only as a helper process")
	}
	limit, err := strconv.ParseUint(limitText, 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: limit, Max: limit}); err != nil {
		fmt.Fprintln(os.Stderr, "setrlimit:", err)
		os.Exit(3)
	}
	args := os.Args[slices.Index(os.Args, "--")+1:]
	onStarted = func(b *bridge.Bridge) {
		fmt.Printf("serving %s %s %s\n", b.Addr(), b.OpsAddr(), b.NATSURL())
	}
	os.Exit(run(context.Background(), append([]string{"serve"}, args...), os.Stdout, os.Stderr))
}

// child is "timbus serve" in a process of its own.
type child struct {
	cmd                *exec.Cmd
	addr, ops, natsURL string
	stderr             *syncBuffer
	exited             chan struct{}
}

// startChild runs "timbus serve args..." under an open-file limit of limit,
// until it serves; it is stopped with SIGTERM when the test ends.
func startChild(t *testing.T, limit int, args ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestServeHelperProcess$", "--"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TIMBUS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d", helperFileLimit, limit))
	c := &child{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		defer close(c.exited)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			if strings.HasPrefix(s.Text(), "serving ") {
				lines <- s.Text()
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("serve still running 15s after SIGTERM; stderr:\n%s", c.stderr)
		}
	})
	select {
	case line := <-lines:
		if _, err := fmt.Sscanf(line, "serving %s %s %s", &c.addr, &c.ops, &c.natsURL); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
	case <-c.exited:
		t.Fatalf("serve exited (%v) before serving; stderr:\n%s", cmd.ProcessState, c.stderr)
	case <-time.After(15 * time.Second):
		t.Fatalf("serve did not start within 15s; stderr:\n%s", c.stderr)
	}
	return c
}

// opsGet reads an operations endpoint of the child on a connection of its
// own, without failing the test: under descriptor exhaustion it may not
// answer.
func (c *child) opsGet(path string) (int, string, error) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + c.ops + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// metric returns the value of one series, or -1 when it cannot be read.
func (c *child) metric(series string) float64 {
	_, text, err := c.opsGet("/metrics")
	if err != nil {
		return -1
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestHostileDescriptorExhaustion runs timbus under an open-file limit
// of 256 and opens 300 connections to it. With the default --max-conns the
// excess is refused and descriptors never run out; with a cap above the
// limit they do run out, and the listener must wait instead of dying. Either
// way, once the connections are closed, a callback gets its decider's
// verdict and /readyz says ready.
func TestHostileDescriptorExhaustion(t *testing.T) {
	const limit, flood = 256, 300
	const verdict = `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"reserved"}`
	for _, tc := range []struct {
		name string
		args []string
		// flooded waits until the child has seen the flood.
		flooded func(t *testing.T, c *child)
		// after checks the metrics once the connections are closed.
		after map[string]func(float64) bool
	}{
		{
			name: "default max-conns",
			flooded: func(t *testing.T, c *child) {
				waitUntil(t, "every connection accepted or refused", func() bool {
					open, refused := c.metric("timbus_connections"), c.metric(`timbus_rejected_total{reason="too_many_conns"}`)
					return open > 0 && refused > 0 && open+refused == flood
				})
				// Still serving, and readiness says so: the cap is load.
				if status, body, err := c.opsGet("/readyz"); status != 200 {
					t.Errorf("/readyz at the cap: %d %s %v", status, body, err)
				}
			},
			after: map[string]func(float64) bool{
				`timbus_rejected_total{reason="too_many_conns"}`:  func(v float64) bool { return v > 0 && v < flood },
				`timbus_accept_errors_total{listener="callback"}`: func(v float64) bool { return v == 0 },
			},
		},
		{
			name: "max-conns above the limit",
			args: []string{"--max-conns", "10000"},
			flooded: func(t *testing.T, c *child) {
				waitUntil(t, "the listener to run out of descriptors", func() bool {
					return strings.Contains(c.stderr.String(), "cannot accept connections")
				})
			},
			after: map[string]func(float64) bool{
				`timbus_accept_errors_total{listener="callback"}`: func(v float64) bool { return v > 0 },
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startChild(t, limit, append([]string{"--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
				"--metrics-listen", "127.0.0.1:0", "--sdkappid", testApp, "--read-timeout", "30s"}, tc.args...)...)
			nc, err := nats.Connect(c.natsURL)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Subscribe("timbus.decide."+testApp+"."+createAccount, func(m *nats.Msg) { _ = m.Respond([]byte(verdict)) }); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			body := `{"CallbackCommand":"` + createAccount + `","Name":"x"}`

			conns := make([]net.Conn, 0, flood)
			defer func() {
				for _, conn := range conns {
					conn.Close()
				}
			}()
			for range flood {
				conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
				if err != nil {
					t.Fatalf("connection %d: %v", len(conns), err)
				}
				conns = append(conns, conn)
			}
			tc.flooded(t, c)
			for _, conn := range conns {
				conn.Close()
			}
			conns = conns[:0]

			waitUntil(t, "/readyz to answer ready", func() bool {
				status, body, _ := c.opsGet("/readyz")
				return status == 200 && body == `{"ready":true}`
			})
			if status, answer := postCallback(t, c.addr, testApp, createAccount, body); status != 200 || answer != verdict {
				t.Errorf("callback after the flood: %d %s, want 200 %s", status, answer, verdict)
			}
			for series, ok := range tc.after {
				if v := c.metric(series); !ok(v) {
					t.Errorf("%s = %v", series, v)
				}
			}
			if status, _, err := c.opsGet("/healthz"); status != 200 {
				t.Errorf("/healthz: %d %v", status, err)
			}
		})
	}
}

// TestServeExitsWhenListenerFails breaks the callback listener's socket under
// the bridge (shutdown(2) makes accept fail with EINVAL, for good): serve
// must exit with status 1 and say why, rather than live on deaf.
func TestServeExitsWhenListenerFails(t *testing.T) {
	clearEnv(t)
	s := startServe(t, "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--sdkappid", testApp)
	fd := listeningSocket(t, s.bridge.Addr())
	if err := syscall.Shutdown(fd, syscall.SHUT_RD); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	select {
	case <-s.finished:
	case <-time.After(10 * time.Second):
		t.Fatalf("serve still running 10s after its listener failed; stderr:\n%s", s.stderr)
	}
	if s.code != exitFailure {
		t.Errorf("exit code = %d, want %d", s.code, exitFailure)
	}
	if log := s.stderr.String(); !strings.Contains(log, "stopped serving callbacks") || !strings.Contains(log, s.bridge.Addr()) {
		t.Errorf("the log does not say that callbacks are no longer served:\n%s", log)
	}
}

// listeningSocket finds, among this process's descriptors, the listening
// socket bound to addr.
func listeningSocket(t *testing.T, addr string) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := syscall.Getsockname(fd)
		if err != nil {
			continue
		}
		in4, ok := sa.(*syscall.SockaddrInet4)
		if !ok || in4.Port != int(ap.Port()) || in4.Addr != ap.Addr().As4() {
			continue
		}
		if listening, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err == nil && listening == 1 {
			return fd
		}
	}
	t.Fatalf("no listening socket on %s among this process's descriptors", addr)
	return -1
}
