package bridge

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/internal/natstest"
)

// Hostile clients at the HTTP level: what they send is not a callback, or
// is one wrapped to mislead. Each case checks what the attacker gets, that
// nothing it smuggled reached a decider, and that a normal callback still
// gets its decider's verdict.

// echoDecider answers oaCreate with a deny whose ErrorInfo is the callback's
// Name, and counts the callbacks it was asked about by Name.
type echoDecider struct {
	mu    sync.Mutex
	asked map[string]int
}

func newEchoDecider(t *testing.T, tb *testBridge) *echoDecider {
	d := &echoDecider{asked: map[string]int{}}
	decider(t, tb.nc, decideOA, func(m *nats.Msg) *nats.Msg {
		name := nameIn(m.Data)
		d.mu.Lock()
		d.asked[name]++
		d.mu.Unlock()
		return &nats.Msg{Data: []byte(`{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"` + name + `"}`)}
	})
	return d
}

// expectEchoed sends a normal callback and fails unless the echo decider's
// verdict comes back.
func expectEchoed(t *testing.T, tb *testBridge) {
	t.Helper()
	if got := post(t, tb.callbackURL(oaCreate), oaBody("normal")); got.status != http.StatusOK || !strings.Contains(got.body, `"ErrorInfo":"normal"`) {
		t.Errorf("a normal callback after the attack: %d %s, want the decider's verdict", got.status, got.body)
	}
}

func (d *echoDecider) times(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.asked[name]
}

// rawRequest is a callback request for oaCreate with the given Name, as
// bytes, with extra header lines (each ending in \r\n).
func rawRequest(name, extra string) string {
	body := oaBody(name)
	return "POST /?SdkAppid=" + testApp + "&CallbackCommand=" + oaCreate + "&contenttype=json HTTP/1.1\r\n" +
		"Host: tencent\r\nContent-Type: application/json\r\n" + extra +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + string(body)
}

// dialFor opens a raw connection to the bridge that gives up after total.
func dialFor(t *testing.T, tb *testBridge, total time.Duration) *rawConn {
	t.Helper()
	c := dialRaw(t, &net.Dialer{Timeout: 2 * time.Second}, tb.Addr())
	_ = c.SetDeadline(time.Now().Add(total))
	return c
}

// readAnswers reads responses from r until the server closes the
// connection, it fails, or n have been read.
func readAnswers(r *bufio.Reader, n int) []answer {
	var out []answer
	for len(out) < n {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return out
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out = append(out, answer{status: resp.StatusCode, body: string(b)})
	}
	return out
}

// TestHostile_Pipelining: requests pipelined on one connection are answered
// in order, each with its own decider's verdict.
func TestHostile_Pipelining(t *testing.T) {
	tb := startBridge(t, nil)
	d := newEchoDecider(t, tb)
	conn := dialFor(t, tb, 10*time.Second)
	var batch strings.Builder
	const n = 20
	for i := 0; i < n; i++ {
		batch.WriteString(rawRequest("p"+strconv.Itoa(i), ""))
	}
	if _, err := io.WriteString(conn, batch.String()); err != nil {
		t.Fatal(err)
	}
	answers := readAnswers(conn.r, n)
	if len(answers) != n {
		t.Fatalf("%d answers to %d pipelined callbacks", len(answers), n)
	}
	for i, a := range answers {
		want := `"ErrorInfo":"p` + strconv.Itoa(i) + `"`
		if a.status != http.StatusOK || !strings.Contains(a.body, want) {
			t.Errorf("answer %d: %d %s, want one with %s", i, a.status, a.body, want)
		}
	}
	for i := 0; i < n; i++ {
		if got := d.times("p" + strconv.Itoa(i)); got != 1 {
			t.Errorf("the decider was asked about p%d %d times", i, got)
		}
	}
	expectEchoed(t, tb)
}

// TestHostile_Smuggling: requests whose framing two HTTP parsers could read
// differently are refused, and what they hide never reaches a decider.
func TestHostile_Smuggling(t *testing.T) {
	smuggled := rawRequest("smuggled", "")
	visible := oaBody("visible")
	chunked := func(body string) string {
		return fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	}
	head := "POST /?SdkAppid=" + testApp + "&CallbackCommand=" + oaCreate + "&contenttype=json HTTP/1.1\r\nHost: tencent\r\n"
	tests := []struct {
		name string
		raw  string
	}{
		// CL.TE: a front that believes Content-Length forwards the smuggled
		// request inside the body; one that believes Transfer-Encoding
		// reads it as a second request.
		{"content-length and chunked", head + "Content-Length: " + strconv.Itoa(len(chunked(string(visible)))+len(smuggled)) +
			"\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(string(visible)) + smuggled},
		{"chunked and content-length", head + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" + chunked(string(visible)) + smuggled},
		{"two content-lengths", head + "Content-Length: " + strconv.Itoa(len(visible)) + "\r\nContent-Length: " +
			strconv.Itoa(len(visible)+len(smuggled)) + "\r\n\r\n" + string(visible) + smuggled},
		{"obfuscated transfer-encoding", head + "Transfer-Encoding: xchunked\r\nContent-Length: " + strconv.Itoa(len(visible)) +
			"\r\n\r\n" + string(visible) + smuggled},
		{"header folding", head + "Content-Length: " + strconv.Itoa(len(visible)) + "\r\nX-Fold: a\r\n Transfer-Encoding: chunked\r\n\r\n" +
			string(visible) + smuggled},
	}
	tb := startBridge(t, nil)
	d := newEchoDecider(t, tb)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := d.times("smuggled")
			conn := dialFor(t, tb, 5*time.Second)
			if _, err := io.WriteString(conn, tt.raw); err != nil {
				t.Fatal(err)
			}
			answers := readAnswers(conn.r, 2)
			// Within a second, what is read as a second request would have
			// been asked about.
			time.Sleep(100 * time.Millisecond)
			if got := d.times("smuggled") - before; got > 0 {
				t.Errorf("the smuggled request reached the decider (%d times); answers %+v", got, answers)
			}
			for _, a := range answers {
				if a.status == http.StatusOK && strings.Contains(a.body, "smuggled") {
					t.Errorf("the smuggled request was answered: %s", a.body)
				}
			}
			if len(answers) > 1 {
				t.Errorf("%d answers to one request: %+v", len(answers), answers)
			}
			if len(answers) == 1 && answers[0].status >= 400 && !conn.closedByServer() {
				t.Errorf("the connection stayed open after a refusal %d; the rest of its bytes could be read as a request", answers[0].status)
			}
		})
	}
	expectEchoed(t, tb)
}

// TestHostile_Oversize: heads and bodies over the limits are refused with
// their own status, at once, without reading or waiting for what was
// announced.
func TestHostile_Oversize(t *testing.T) {
	tb := startBridge(t, func(c *Config) {
		c.MaxBodySize = 4 << 10
		c.MaxHeaderSize = 4 << 10
	})
	newEchoDecider(t, tb)
	head := "POST /?SdkAppid=" + testApp + "&CallbackCommand=" + oaCreate + "&contenttype=json HTTP/1.1\r\nHost: tencent\r\n"
	tests := []struct {
		name   string
		raw    string
		status int
		reason string
	}{
		{"long header", head + "X-Pad: " + strings.Repeat("a", 8<<10) + "\r\nContent-Length: 2\r\n\r\n{}", http.StatusRequestHeaderFieldsTooLarge, "header_too_large"},
		{"many headers", head + strings.Repeat("X-Pad: aaaaaaaaaaaaaaaa\r\n", 400) + "Content-Length: 2\r\n\r\n{}", http.StatusRequestHeaderFieldsTooLarge, "header_too_large"},
		{"long query", "POST /?SdkAppid=" + testApp + "&x=" + strings.Repeat("b", 8<<10) + " HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}", http.StatusRequestHeaderFieldsTooLarge, "header_too_large"},
		{"body sent", head + "Content-Length: 8192\r\n\r\n" + strings.Repeat(" ", 8192), http.StatusRequestEntityTooLarge, "body_too_large"},
		// Only announced: the refusal must not wait for a gigabyte.
		{"body announced", head + "Content-Length: 1073741824\r\n\r\n{", http.StatusRequestEntityTooLarge, "body_too_large"},
		{"chunked body", head + "Transfer-Encoding: chunked\r\n\r\n2000\r\n" + strings.Repeat(" ", 0x2000) + "\r\n0\r\n\r\n", http.StatusRequestEntityTooLarge, "body_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := dialFor(t, tb, 5*time.Second)
			start := time.Now()
			if _, err := io.WriteString(conn, tt.raw); err != nil {
				t.Fatal(err)
			}
			answers := readAnswers(conn.r, 1)
			if len(answers) != 1 || answers[0].status != tt.status || !strings.Contains(answers[0].body, tt.reason) {
				t.Fatalf("answers %+v, want %d %s", answers, tt.status, tt.reason)
			}
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("the refusal took %v", elapsed)
			}
		})
	}
	_, text := get(t, tb.base+PathMetrics)
	for _, reason := range []string{"header_too_large", "body_too_large"} {
		if got := metricValue(t, text, `timbus_rejected_total{reason="`+reason+`"}`); got == "0" || got == "" {
			t.Errorf("timbus_rejected_total{reason=%q} = %q", reason, got)
		}
	}
	expectEchoed(t, tb)
}

// TestHostile_SlowClients: clients that trickle a request one byte at a
// time hold a connection no longer than the read timeout, and callbacks
// meanwhile are decided as usual.
func TestHostile_SlowClients(t *testing.T) {
	const readTimeout = 500 * time.Millisecond
	tb := startBridge(t, func(c *Config) { c.ReadTimeout = readTimeout })
	d := newEchoDecider(t, tb)
	const slow = 30
	var closed atomic.Int32
	var wg sync.WaitGroup
	stop := make(chan struct{})
	raw := rawRequest("slow", "")
	for i := 0; i < slow; i++ {
		conn := dialFor(t, tb, 10*time.Second)
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for j := 0; j < len(raw); j++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := conn.Write([]byte{raw[j]}); err != nil {
					closed.Add(1) // the server hung up on the trickle
					return
				}
			}
		}()
	}
	// While they trickle, callbacks are answered as usual.
	for i := 0; i < 5; i++ {
		if got := post(t, tb.callbackURL(oaCreate), oaBody("fast")); !strings.Contains(got.body, `"ErrorInfo":"fast"`) || got.elapsed > time.Second {
			t.Errorf("a callback beside slow clients: %d %s after %v", got.status, got.body, got.elapsed)
		}
	}
	waitFor(t, 10*readTimeout, func() error {
		if closed.Load() < slow {
			return errNotYet
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if d.times("slow") != 0 {
		t.Error("a trickled request was completed and decided")
	}
	_, text := get(t, tb.base+PathMetrics)
	if got, _ := strconv.Atoi(metricValue(t, text, `timbus_rejected_total{reason="read_timeout"}`)); got < slow {
		t.Errorf("read_timeout refusals %d, want at least %d", got, slow)
	}
}

// TestHostile_ForgedReplies: whoever can publish on NATS and guesses reply
// subjects cannot answer a callback: replies to a wrong key are dropped.
func TestHostile_ForgedReplies(t *testing.T) {
	tb := startBridge(t, nil)
	release := make(chan struct{})
	var subject atomic.Value
	decider(t, tb.nc, decideOA, func(m *nats.Msg) *nats.Msg {
		subject.Store(m.Reply)
		<-release
		return &nats.Msg{Data: []byte(oaCreateDeny)}
	})
	done := make(chan answer, 1)
	go func() { done <- post(t, tb.callbackURL(oaCreate), oaBody("forged")) }()
	waitFor(t, 2*time.Second, func() error {
		if subject.Load() == nil {
			return errNotYet
		}
		return nil
	})
	// The forger knows the inbox and the call's id, not its random key.
	reply := subject.Load().(string)
	prefix := reply[:strings.LastIndexByte(reply, '_')]
	forger := natstest.Connect(t, tb.ns)
	forged := []byte(`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"forged"}`)
	for k := 0; k < 1000; k++ {
		_ = forger.Publish(prefix+"_"+strconv.FormatUint(uint64(k), 36), forged)
	}
	_ = forger.Publish(prefix, forged)
	_ = forger.Publish(reply+"x", forged)
	if err := forger.Flush(); err != nil {
		t.Fatal(err)
	}
	close(release)
	if got := <-done; got.body != oaCreateDeny {
		t.Errorf("the callback got %s, want the decider's %s", got.body, oaCreateDeny)
	}
	if strings.Contains(strings.Join(tb.logs.lines(), "\n"), `"forged"`) {
		t.Error("a forged reply reached the log")
	}
}
