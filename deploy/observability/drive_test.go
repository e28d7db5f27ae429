package observability

// The real system TestAgainstPrometheus watches: a NATS server, deciders
// built with the Go SDK, the timbus binary, and a client sending it
// callbacks over HTTP on loopback.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/timbus-dev/timbus/deciders"
)

// The app and callback token of the timbus under test.
const (
	testAppID = "1400000001"
	testToken = "observability-test-token"
)

// Commands and what answers them.
const (
	cmdDecided  = "C2C.CallbackBeforeSendMsg"          // a decider (deny for mallory), and a shadow (deny for bob)
	cmdSlow     = "Group.CallbackBeforeSendMsg"        // a decider: slow for "slow", an error for "fail"
	cmdInvalid  = "Group.CallbackBeforeApplyJoinGroup" // a plain subscriber replying what is not JSON
	cmdNobody   = "Group.CallbackBeforeCreateGroup"    // nobody: no_deciders, then its breaker opens
	cmdAfter    = "Group.CallbackAfterSendMsg"         // an after callback: published
	shadowPrefx = "shadow"
)

// natsServer is a NATS server in the test process that can be stopped and
// started again on the same port, for an outage.
type natsServer struct {
	t    *testing.T
	port int
	srv  *server.Server
}

func startNATS(t *testing.T) *natsServer {
	t.Helper()
	n := &natsServer{t: t, port: server.RANDOM_PORT}
	n.start()
	n.port = n.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(n.stop)
	return n
}

func (n *natsServer) start() {
	n.t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: n.port, NoSigs: true, NoLog: true})
	if err != nil {
		n.t.Fatalf("NATS server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		n.t.Fatal("NATS server not ready within 15s")
	}
	n.srv = s
}

func (n *natsServer) stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

func (n *natsServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// startDeciders starts the deciders of the commands above; they reconnect
// on their own after an outage.
func startDeciders(t *testing.T, natsURL string) {
	t.Helper()
	connect := func(name string) *nats.Conn {
		nc, err := nats.Connect(natsURL, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond))
		if err != nil {
			t.Fatalf("decider %s: %v", name, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	from := func(cb *deciders.Callback) string {
		f, err := cb.Fields()
		if err != nil {
			return ""
		}
		return f.FromAccount
	}
	newDecider := func(nc *nats.Conn, cfg deciders.Config, handlers map[string]deciders.Handler) {
		d, err := deciders.New(nc, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Stop() })
		for cmd, h := range handlers {
			if err := d.Handle(cmd, h); err != nil {
				t.Fatal(err)
			}
		}
	}

	newDecider(connect("observability"), deciders.Config{Name: "observability", Version: "1.0.0"}, map[string]deciders.Handler{
		cmdDecided: func(_ context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
			if from(cb) == "mallory" {
				return deciders.Deny(), nil
			}
			return deciders.Allow(), nil
		},
		cmdSlow: func(ctx context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
			switch from(cb) {
			case "slow": // answers only once the bridge has stopped waiting
				<-ctx.Done()
				return deciders.Verdict{}, ctx.Err()
			case "fail":
				return deciders.Verdict{}, deciders.Error{Code: 503, Description: "backend down"}
			}
			return deciders.Allow(), nil
		},
	})
	newDecider(connect("observability-shadow"), deciders.Config{Name: "observability-shadow", Version: "1.0.0", SubjectPrefix: shadowPrefx},
		map[string]deciders.Handler{
			cmdDecided: func(_ context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
				if from(cb) == "bob" {
					return deciders.Deny(), nil
				}
				return deciders.Allow(), nil
			},
		})
	// Not a NATS service (not discovered), and its replies break the rules.
	nc := connect("observability-invalid")
	if _, err := nc.Subscribe("timbus.decide."+testAppID+"."+cmdInvalid, func(m *nats.Msg) { _ = m.Respond([]byte("not json")) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// timbusProcess is `timbus serve` in a process of its own.
type timbusProcess struct {
	listen, ops string
	stderr      *tail
}

// buildTimbus builds cmd/timbus, without the race detector.
func buildTimbus(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "timbus")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/timbus-dev/timbus/cmd/timbus").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/timbus: %v\n%s", err, out)
	}
	return bin
}

// startTimbus runs timbus with callback authentication, a shadow for
// cmdDecided, an in-flight cap of 3 and a breaker that opens after 5
// failing decisions and stays open: every outcome can be provoked.
func startTimbus(t *testing.T, natsURL string) *timbusProcess {
	t.Helper()
	bin := buildTimbus(t)
	config := filepath.Join(t.TempDir(), "timbus.yaml")
	err := os.WriteFile(config, []byte(`listen: "127.0.0.1:0"
metrics-listen: "127.0.0.1:0"
nats-url: [`+natsURL+`]
sdkappid: [`+testAppID+`]
max-inflight: 3
breaker: true
breaker-window: 1m
breaker-min-requests: 5
breaker-failure-ratio: 0.9
breaker-cooldown: 10m
log-format: json
commands:
  `+cmdDecided+`:
    shadow_prefix: `+shadowPrefx+`
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "serve", "--config", config)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TIMBUS_TOKEN=" + testToken}
	cmd.WaitDelay = 10 * time.Second
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &timbusProcess{stderr: newTail()}
	started, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		scan := bufio.NewScanner(pipe)
		scan.Buffer(make([]byte, 64<<10), 1<<20)
		seen := false
		for scan.Scan() {
			line := scan.Bytes()
			p.stderr.add(line)
			if seen || !bytes.Contains(line, []byte("timbus bridge started")) {
				continue
			}
			var rec struct {
				Message       string `json:"message"`
				Listen        string `json:"listen"`
				MetricsListen string `json:"metrics_listen"`
			}
			if json.Unmarshal(line, &rec) == nil && rec.Message == "timbus bridge started" {
				p.listen, p.ops = rec.Listen, rec.MetricsListen
				seen = true
				close(started)
			}
		}
		_, _ = io.Copy(io.Discard, pipe)
	}()
	t.Cleanup(func() {
		cancel()
		select { // Wait closes the pipe: read it to the end first
		case <-exited:
		case <-time.After(10 * time.Second):
		}
		_ = cmd.Wait()
	})
	select {
	case <-started:
	case <-exited:
		t.Fatalf("timbus exited before it started:\n%s", p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("timbus did not start within 30s:\n%s", p.stderr)
	}
	if p.listen == "" || p.ops == "" {
		t.Fatalf("timbus started without a listen and a metrics-listen address:\n%s", p.stderr)
	}
	return p
}

// tail keeps the last lines of a child's output, for failure messages.
type tail struct {
	mu    sync.Mutex
	lines []string
}

const tailLines = 40

func newTail() *tail { return &tail{} }

func (t *tail) add(line []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, string(line))
	if len(t.lines) > 2*tailLines {
		t.lines = append(t.lines[:0], t.lines[len(t.lines)-tailLines:]...)
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines[max(0, len(t.lines)-tailLines):], "\n")
}

// Write lets a tail take an io.Writer's output, line by line.
func (t *tail) Write(b []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n")) {
		t.add(line)
	}
	return len(b), nil
}

// caller sends callbacks to timbus as Tencent would, signed.
type caller struct {
	base   string
	client *http.Client
	dials  atomic.Int64
}

func newCaller(t *testing.T, listen string) *caller {
	c := &caller{base: "http://" + listen}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c.dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 8,
		DisableCompression:  true,
	}
	c.client = &http.Client{Transport: transport, Timeout: 10 * time.Second}
	t.Cleanup(transport.CloseIdleConnections)
	return c
}

// query is a callback's URL query: the app, command, and a valid signature.
func query(command string) url.Values {
	now := strconv.FormatInt(time.Now().Unix(), 10)
	sum := sha256.Sum256([]byte(testToken + now))
	return url.Values{
		"SdkAppid": {testAppID}, "CallbackCommand": {command}, "contenttype": {"json"},
		"ClientIP": {"127.0.0.1"}, "OptPlatform": {"RESTAPI"},
		"RequestTime": {now}, "Sign": {hex.EncodeToString(sum[:])},
	}
}

func body(command, from string) string {
	return fmt.Sprintf(`{"CallbackCommand":%q,"From_Account":%q,"To_Account":"carol","GroupId":"@TGS#1","MsgBody":[]}`, command, from)
}

// do sends one request and returns its status.
func (c *caller) do(method, path string, q url.Values, body string) (int, error) {
	req, err := http.NewRequest(method, c.base+path+"?"+q.Encode(), strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// callback sends a signed callback from the account from.
func (c *caller) callback(command, from string) (int, error) {
	return c.do(http.MethodPost, "/", query(command), body(command, from))
}

// times sends n requests, concurrency at a time, and fails the test on a
// transport error or a status other than want.
func (c *caller) times(t *testing.T, n, concurrency, want int, send func(i int) (int, error)) {
	t.Helper()
	var (
		next   atomic.Int64
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed error
	)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				status, err := send(i)
				if err == nil && status != want {
					err = fmt.Errorf("status %d, want %d", status, want)
				}
				if err != nil {
					mu.Lock()
					failed = fmt.Errorf("request %d: %w", i, err)
					mu.Unlock()
					next.Store(int64(n)) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	if failed != nil {
		t.Fatal(failed)
	}
}

// sample is one sample of a Prometheus text exposition.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var (
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)`)
	labelPair  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
	typeLine   = regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)`)
)

// scrape reads timbus's /metrics: its samples, and the names it exports
// (a histogram's with their _bucket, _sum and _count).
func scrape(ops string) (samples []sample, names map[string]bool, err error) {
	resp, err := http.Get("http://" + ops + "/metrics")
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	names = map[string]bool{}
	scan := bufio.NewScanner(resp.Body)
	scan.Buffer(make([]byte, 64<<10), 1<<20)
	for scan.Scan() {
		line := scan.Text()
		if m := typeLine.FindStringSubmatch(line); m != nil {
			names[m[1]] = true
			switch m[2] {
			case "histogram":
				names[m[1]+"_bucket"], names[m[1]+"_sum"], names[m[1]+"_count"] = true, true, true
			case "summary":
				names[m[1]+"_sum"], names[m[1]+"_count"] = true, true
			}
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return nil, nil, fmt.Errorf("/metrics line %q: %w", line, err)
		}
		s := sample{name: m[1], labels: map[string]string{}, value: v}
		for _, l := range labelPair.FindAllStringSubmatch(m[2], -1) {
			s.labels[l[1]] = l[2]
		}
		names[s.name] = true
		samples = append(samples, s)
	}
	return samples, names, scan.Err()
}

// value sums the samples of name whose labels include match.
func value(samples []sample, name string, match map[string]string) float64 {
	var sum float64
next:
	for _, s := range samples {
		if s.name != name {
			continue
		}
		for k, v := range match {
			if s.labels[k] != v {
				continue next
			}
		}
		sum += s.value
	}
	return sum
}

// waitMetric polls timbus's /metrics until cond holds, for at most limit.
func waitMetric(t *testing.T, ops, what string, limit time.Duration, cond func([]sample) bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		samples, _, err := scrape(ops)
		if err == nil && cond(samples) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timbus's /metrics did not show %s within %v (last error: %v)", what, limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
