package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// timbusProcess is the timbus binary serving in a process of its own, for
// tests that measure the process (memory, descriptors) rather than the
// bridge inside the test binary, which the race detector inflates.
type timbusProcess struct {
	cmd *exec.Cmd
	// listen, ops and nats are the addresses the started lines report.
	listen, ops, natsURL string
	stderr               *syncBuffer
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// timbusBinary builds cmd/timbus once per test run, without the race
// detector, and returns its path.
func timbusBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "timbus-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "timbus")
		out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = &buildError{err, string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("go build ./cmd/timbus: %v", buildErr)
	}
	return builtBin
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// startProcess runs "timbus serve args..." and waits for its started line.
// The process is killed when the test ends.
func startProcess(t *testing.T, args ...string) *timbusProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, timbusBinary(t), append([]string{"serve"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	p := &timbusProcess{cmd: cmd, stderr: &syncBuffer{}}
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		scan := bufio.NewScanner(pipe)
		scan.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for scan.Scan() {
			line := scan.Bytes()
			_, _ = p.stderr.Write(append(line, '\n'))
			var rec map[string]any
			if json.Unmarshal(line, &rec) != nil {
				continue
			}
			switch rec["message"] {
			case "embedded NATS server started":
				p.natsURL, _ = rec["url"].(string)
			case "timbus bridge started":
				p.listen, _ = rec["listen"].(string)
				p.ops, _ = rec["metrics_listen"].(string)
				once.Do(func() { close(started) })
			}
		}
		_, _ = io.Copy(io.Discard, pipe)
	}()
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	select {
	case <-started:
	case <-time.After(15 * time.Second):
		t.Fatalf("timbus did not start within 15s:\n%s", p.stderr)
	}
	return p
}

// residentBytes is the process's resident set size, from /proc.
func (p *timbusProcess) residentBytes(t *testing.T) int64 {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("measuring a process's memory needs Linux's /proc")
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/<pid>/status")
	return 0
}
