package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Bounds on every wait for a child process.
const (
	startTimeout = 15 * time.Second // until a server is ready
	stopGrace    = 3 * time.Second  // after SIGTERM, before SIGKILL
	killWait     = 2 * time.Second  // after SIGKILL
)

// procs starts child processes, each in its own process group so that
// whatever it starts dies with it, and kills what is left at the end.
type procs struct {
	dir string // logs go here

	mu   sync.Mutex
	live map[*proc]struct{}
}

func newProcs(dir string) *procs {
	return &procs{dir: dir, live: make(map[*proc]struct{})}
}

// proc is one long-running child: a server, NATS, a decider.
type proc struct {
	name    string
	role    string // what it is in its setup: timbus, decider, nats-server…
	logPath string
	cmd     *exec.Cmd
	out     *lineBuffer // its stdout, line by line
	output  *headTail   // its stdout and stderr
	done    chan struct{}
	err     error // Wait's, once done is closed
	owner   *procs
}

// start runs path with args. Its stdout and stderr go to <name>.log in the
// log directory when it exits, only their first and last logKeep bytes: a
// busy timbus logs tens of megabytes, and writing them to a file would have
// the kernel flush them to disk during later runs. Stdout lines are also kept
// for waitLine.
func (ps *procs) start(name, path string, args ...string) (*proc, error) {
	logPath := filepath.Join(ps.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "# %s %s\n", path, strings.Join(args, " "))
	p := &proc{name: name, logPath: logPath, out: newLineBuffer(), done: make(chan struct{}), owner: ps}
	output := &headTail{}
	p.output = output
	cmd := exec.Command(path, args...)
	cmd.Env = childEnv()
	cmd.Stdout = io.MultiWriter(p.out, output)
	cmd.Stderr = output
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = killWait
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.cmd = cmd
	ps.mu.Lock()
	ps.live[p] = struct{}{}
	ps.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		output.writeTo(logf)
		logf.Close()
		p.out.close()
		close(p.done)
	}()
	return p, nil
}

// logKeep is how much of the beginning and of the end of a child's output
// its log keeps.
const logKeep = 64 << 10

// headTail keeps the first and the last logKeep bytes written to it.
type headTail struct {
	mu      sync.Mutex
	head    []byte
	tail    []byte // a ring once full
	next    int    // where the ring continues
	skipped int64
}

func (h *headTail) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(p)
	if room := logKeep - len(h.head); room > 0 {
		k := min(room, len(p))
		h.head = append(h.head, p[:k]...)
		p = p[k:]
	}
	for len(p) > 0 {
		if len(h.tail) < logKeep {
			k := min(logKeep-len(h.tail), len(p))
			h.tail = append(h.tail, p[:k]...)
			p = p[k:]
			continue
		}
		k := min(logKeep-h.next, len(p))
		h.skipped += int64(k)
		copy(h.tail[h.next:], p[:k])
		h.next = (h.next + k) % logKeep
		p = p[k:]
	}
	return n, nil
}

// last returns up to n of the last bytes written.
func (h *headTail) last(n int) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	all := append(append(slices.Clip(h.head), h.tail[h.next:]...), h.tail[:h.next]...)
	return all[max(0, len(all)-n):]
}

func (h *headTail) writeTo(w io.Writer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, _ = w.Write(h.head)
	if h.skipped > 0 {
		fmt.Fprintf(w, "\n[… %d bytes left out …]\n", h.skipped)
	}
	_, _ = w.Write(h.tail[h.next:])
	_, _ = w.Write(h.tail[:h.next])
}

// childEnv is the environment of every child: this one without TIMBUS_
// settings, so that timbus runs with the benchmark's flags and defaults only.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TIMBUS_") {
			env = append(env, kv)
		}
	}
	return env
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// failure describes a process that failed, with the end of its output.
func (p *proc) failure(what string) error {
	exit := "still running"
	if p.exited() {
		exit = fmt.Sprintf("exit: %v", p.err)
	}
	return fmt.Errorf("%s: %s (%s; log: %s)\n%s", p.name, what, exit, p.logPath, indent(p.output.last(1500)))
}

// waitLine waits until the process prints a line starting with prefix and
// returns it.
func (p *proc) waitLine(ctx context.Context, prefix string, timeout time.Duration) (string, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		line, changed := p.out.find(prefix)
		if line != "" {
			return line, nil
		}
		select {
		case <-changed:
		case <-p.done:
			if line, _ := p.out.find(prefix); line != "" {
				return line, nil
			}
			return "", p.failure(fmt.Sprintf("exited before printing %q", prefix))
		case <-timer.C:
			return "", p.failure(fmt.Sprintf("did not print %q within %s", prefix, timeout))
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// stop asks the process group to stop, then kills it; it returns once the
// process is gone or the bounded waits are over.
func (p *proc) stop() {
	defer func() {
		p.owner.mu.Lock()
		delete(p.owner.live, p)
		p.owner.mu.Unlock()
	}()
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(stopGrace):
	}
	p.kill()
}

func (p *proc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(killWait):
	}
}

// killAll kills every child still running. It is the benchmark's last word,
// on success and failure alike.
func (ps *procs) killAll() {
	ps.mu.Lock()
	left := make([]*proc, 0, len(ps.live))
	for p := range ps.live {
		left = append(left, p)
	}
	ps.live = make(map[*proc]struct{})
	ps.mu.Unlock()
	for _, p := range left {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	for _, p := range left {
		p.kill()
	}
}

// runOnce runs a short-lived child (wrk, a load generator) to completion
// within timeout and returns its stdout and the CPU time it used. Its stderr
// goes to <name>.log.
func (ps *procs) runOnce(ctx context.Context, name string, timeout time.Duration, path string, args ...string) ([]byte, time.Duration, error) {
	logPath := filepath.Join(ps.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, 0, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "# %s %s\n", path, strings.Join(args, " "))
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = childEnv()
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, logf)
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = killWait
	if err := cmd.Run(); err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("did not finish within %s", timeout)
		}
		return out.Bytes(), 0, fmt.Errorf("%s: %w\n%s", name, err, tail(logPath, 1500))
	}
	return out.Bytes(), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// lineBuffer collects a process's output lines and wakes up waiters.
type lineBuffer struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	changed chan struct{}
}

func newLineBuffer() *lineBuffer { return &lineBuffer{changed: make(chan struct{})} }

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.partial = append(b.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		b.lines = append(b.lines, string(b.partial[:i]))
		b.partial = b.partial[i+1:]
		added = true
	}
	if added {
		close(b.changed)
		b.changed = make(chan struct{})
	}
	return len(p), nil
}

func (b *lineBuffer) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.partial) > 0 {
		b.lines = append(b.lines, string(b.partial))
		b.partial = nil
	}
}

// find returns the last line starting with prefix, or "" and a channel
// closed on the next line.
func (b *lineBuffer) find(prefix string) (string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := len(b.lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(b.lines[i], prefix) {
			return b.lines[i], nil
		}
	}
	return "", b.changed
}

// tail returns the end of a log file, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return indent(b)
}

func indent(b []byte) string {
	return "  | " + strings.ReplaceAll(strings.TrimRight(string(b), "\n"), "\n", "\n  | ")
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. They are free
// when it returns; a child binds them right after.
func freePorts(n int) ([]int, error) {
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("no free port on 127.0.0.1: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitTCP waits until addr accepts connections, while p is running.
func waitTCP(ctx context.Context, addr string, p *proc) error {
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if p.exited() {
			return p.failure("exited before listening on " + addr)
		}
		if time.Now().After(deadline) {
			return p.failure(fmt.Sprintf("not listening on %s after %s", addr, startTimeout))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// probeHTTP posts the callback until the answer is the decider's verdict:
// then every process on the path is ready. It returns how many probes were
// answered with the verdict (one), which the decider counted too.
func probeHTTP(ctx context.Context, url string, body []byte, watch ...*proc) (int64, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	deadline := time.Now().Add(startTimeout)
	var last string
	for {
		req.Reset()
		req.SetRequestURI(url)
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.SetContentType("application/json")
		req.SetBody(body)
		err := fasthttp.DoTimeout(req, resp, time.Second)
		if err == nil && resp.StatusCode() == fasthttp.StatusOK && bytes.Equal(resp.Body(), verdict) {
			return 1, nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("HTTP %d %s", resp.StatusCode(), resp.Body())
		}
		for _, p := range watch {
			if p.exited() {
				return 0, p.failure("exited while waiting for the first answer")
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no verdict from %s within %s; last answer: %s", url, startTimeout, last)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
