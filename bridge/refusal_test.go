package bridge

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rawConn is an HTTP/1.1 client connection read and written by hand, to see
// what happens to the connection itself.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, d *net.Dialer, addr string) *rawConn {
	t.Helper()
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c, r: bufio.NewReader(c)}
}

// roundTrip sends a request and reads its response, within 5 s.
func (c *rawConn) roundTrip(t *testing.T, request string) *http.Response {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatalf("send: %v", err)
	}
	return c.response(t)
}

// response reads one response whole, within the connection's deadline.
func (c *rawConn) response(t *testing.T) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp
}

func bodyOf(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// closedByServer reports whether the server closed the connection: a read
// finds the end of the stream rather than waiting.
func (c *rawConn) closedByServer() bool {
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.r.ReadByte()
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

func postRequest(target, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: timbus\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", target, len(body), body)
}

// TestHostile_RefusalClosesConnection: every refused request closes its
// keep-alive connection, so that a client sending only refused requests
// holds no idle connection; a served callback keeps its connection.
func TestHostile_RefusalClosesConnection(t *testing.T) {
	tb := startBridge(t, func(c *Config) { c.MaxBodySize = 1024 })
	decider(t, tb.nc, decideOA, replyWith(oaCreateDeny))
	addr := tb.Addr()
	query := "/?SdkAppid=" + testApp + "&CallbackCommand=" + oaCreate
	for _, tc := range []struct {
		name    string
		request string
		status  int
		reason  string
	}{
		{"unknown SdkAppid", postRequest("/?SdkAppid=7&CallbackCommand="+oaCreate, `{}`), 403, "unknown_sdkappid"},
		{"wrong path", postRequest("/nowhere"+query[1:], `{}`), 404, "not_found"},
		{"wrong method", "PUT " + query + " HTTP/1.1\r\nHost: timbus\r\nContent-Length: 0\r\n\r\n", 405, "method_not_allowed"},
		{"body not JSON", postRequest(query, `not json`), 400, "invalid_body"},
		{"missing command", postRequest("/?SdkAppid="+testApp, `{}`), 400, "missing_command"},
		{"body too large", postRequest(query, `{"x":"`+strings.Repeat("a", 2048)+`"}`), 413, "body_too_large"},
		{"malformed request line", "FOO\r\n\r\n", 400, "bad_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, &net.Dialer{}, addr)
			resp := c.roundTrip(t, tc.request)
			if resp.StatusCode != tc.status || !strings.Contains(bodyOf(resp), `"Reason":"`+tc.reason+`"`) {
				t.Fatalf("answer %d, want %d with reason %s", resp.StatusCode, tc.status, tc.reason)
			}
			// ReadResponse turns "Connection: close" into Close.
			if !resp.Close {
				t.Error("the answer does not say Connection: close")
			}
			if !c.closedByServer() {
				t.Error("the server kept the connection open after refusing the request")
			}
		})
	}
	t.Run("served callback keeps its connection", func(t *testing.T) {
		c := dialRaw(t, &net.Dialer{}, addr)
		for i := 0; i < 2; i++ {
			resp := c.roundTrip(t, postRequest(query, string(sample(t, oaCreate))))
			if resp.StatusCode != 200 || bodyOf(resp) != oaCreateDeny || resp.Close {
				t.Fatalf("callback %d on one connection: %d, close %v", i, resp.StatusCode, resp.Close)
			}
		}
	})
}
