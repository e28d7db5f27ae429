package bridge

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// The default of Config.MaxConns comes from the process's open-file limit
// (RLIMIT_NOFILE, soft): the limit minus a reserve of max(64, limit/8), but
// never more than half the limit, and at most maxDefaultConns. The reserve
// keeps descriptors for what shares the limit with callback connections: the
// NATS connection, the embedded NATS server's listener and clients (deciders
// connecting to it), the ops listener and its scrapes, files, and the
// connections refused past the cap, which hold a descriptor for a moment.
//
//	limit 256 → 192, 1024 → 896, 65536 and above (unlimited) → 16384
const (
	connReserveMin = 64
	// maxDefaultConns bounds the default where descriptors are plentiful: an
	// idle keep-alive connection costs about 34 KB (buffers, goroutine), so
	// 16384 of them stay near half a gigabyte. Set MaxConns for more.
	maxDefaultConns = 16384
	// fallbackMaxConns is the default where the open-file limit cannot be
	// read (platforms without getrlimit).
	fallbackMaxConns = 4096
)

// OpenFileLimit returns the process's open-file limit (the soft
// RLIMIT_NOFILE, which Go raises to the hard limit at start-up), or false
// where there is none to read. An unlimited limit is math.MaxUint64.
func OpenFileLimit() (limit uint64, ok bool) { return openFileLimit() }

// defaultMaxConns is the MaxConns of DefaultConfig: see maxConnsFor.
func defaultMaxConns() int {
	limit, ok := OpenFileLimit()
	if !ok {
		return fallbackMaxConns
	}
	return maxConnsFor(limit)
}

// maxConnsFor derives a connection cap from an open-file limit.
func maxConnsFor(limit uint64) int {
	reserve := min(max(connReserveMin, limit/8), limit/2)
	return int(max(min(limit-reserve, maxDefaultConns), 1))
}

// Reasons, in timbus_rejected_total, for connections refused by the caps.
const (
	reasonTooManyConns      = "too_many_conns"
	reasonTooManyConnsPerIP = "too_many_conns_per_ip"
)

// Accept retries with a delay that doubles from acceptMinDelay up to
// acceptMaxDelay, as net/http does.
const (
	acceptMinDelay = 5 * time.Millisecond
	acceptMaxDelay = time.Second
	// acceptWarnEvery spaces the warnings of a listener that keeps failing.
	acceptWarnEvery = 5 * time.Second
	// refusedWarnEvery spaces the warnings about refused connections: each is
	// counted in the metrics, an attack must not flood the log.
	refusedWarnEvery = 10 * time.Second
)

// listener wraps a TCP listener for fasthttp. fasthttp's Serve returns for
// good on any accept error but a timeout, so running out of descriptors
// (EMFILE) once would leave the port dead; this Accept waits and tries
// again instead. With limits, it also caps the connections open at once.
type listener struct {
	net.Listener
	name   string // "callback" or "ops", in logs and metrics
	log    zerolog.Logger
	errors atomic.Uint64 // accept errors retried, for timbus_accept_errors_total
	warn   gate
	limits *connLimits // nil: every connection is served
	// deadlines, when set, enforces the connections' deadlines by sweeping
	// (see deadlineSweeper).
	deadlines *deadlineSweeper
	// wrap, when set, wraps each connection admitted (TLS), after the caps:
	// a refused connection costs no handshake.
	wrap func(net.Conn) net.Conn

	closeOnce sync.Once
	closed    chan struct{} // ends a retry wait when the listener closes
}

func newListener(ln net.Listener, name string, log zerolog.Logger, limits *connLimits) *listener {
	return &listener{Listener: ln, name: name, log: log, limits: limits, closed: make(chan struct{})}
}

// Accept returns the next connection within the limits. It returns an error
// only when the listener is closed or fails in a way waiting cannot mend.
func (l *listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !retryable(err) {
				return nil, err
			}
			delay = min(max(2*delay, acceptMinDelay), acceptMaxDelay)
			l.errors.Add(1)
			if l.warn.pass(acceptWarnEvery) {
				l.log.Warn().Err(err).Str("listener", l.name).Dur("retry_in", delay).
					Msg("cannot accept connections; retrying (see timbus_accept_errors_total)")
			}
			select {
			case <-time.After(delay):
			case <-l.closed:
				return nil, net.ErrClosed
			}
			continue
		}
		delay = 0
		if l.limits != nil {
			if c = l.limits.admit(c); c == nil {
				continue
			}
		}
		if l.deadlines != nil {
			c = l.deadlines.track(c)
		}
		if l.wrap != nil {
			c = l.wrap(c)
		}
		return c, nil
	}
}

// Close closes the listener. Closing it again is no error: Shutdown closes
// it after fasthttp has, and a failed one may be closed already.
func (l *listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	if err := l.Listener.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// retryErrnos are the accept errors that mean "not now": out of descriptors
// (per process or system-wide) or of kernel memory. They pass once
// connections close.
var retryErrnos = []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM}

func retryable(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	for _, errno := range retryErrnos {
		if errors.Is(err, errno) {
			return true
		}
	}
	// ECONNABORTED, EINTR and timeouts say so themselves.
	var temp interface{ Temporary() bool }
	return errors.As(err, &temp) && temp.Temporary()
}

// connLimits caps the callback connections open at once, in all and per
// client address. A connection past a cap gets a canned answer written
// straight to the socket, then is closed: no request is read, nothing is
// audited; it is counted in timbus_rejected_total.
type connLimits struct {
	max   int64 // 0: no cap
	perIP int   // 0: no cap
	open  atomic.Int64

	mu   sync.Mutex
	byIP map[netip.Addr]int

	refused func(reason string) // counts a refusal
	log     zerolog.Logger
	warn    gate
	// The whole HTTP responses of the two refusals, built once; nil on a
	// TLS listener, where plain HTTP would mean nothing to the client and a
	// handshake would cost what the cap saves.
	tooMany, tooManyPerIP []byte
}

func newConnLimits(maxConns, perIP int, refused func(string), log zerolog.Logger) *connLimits {
	return &connLimits{
		max:     int64(maxConns),
		perIP:   perIP,
		byIP:    map[netip.Addr]int{},
		refused: refused,
		log:     log,
		tooMany: cannedResponse(fasthttp.StatusServiceUnavailable, reasonTooManyConns,
			fmt.Sprintf("too many open connections (max-conns %d); try again", maxConns)),
		tooManyPerIP: cannedResponse(fasthttp.StatusTooManyRequests, reasonTooManyConnsPerIP,
			fmt.Sprintf("too many open connections from your address (max-conns-per-ip %d)", perIP)),
	}
}

// cannedResponse is a complete HTTP response refusing a connection, with the
// JSON body of every refusal.
func cannedResponse(status int, reason, msg string) []byte {
	body := errorAnswer(reason, msg)
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nServer: timbus\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		status, fasthttp.StatusMessage(status), len(body), body)
}

// admit returns c, counted, or nil after refusing it.
func (cl *connLimits) admit(c net.Conn) net.Conn {
	if n := cl.open.Add(1); cl.max > 0 && n > cl.max {
		cl.open.Add(-1)
		cl.refuse(c, reasonTooManyConns, cl.tooMany)
		return nil
	}
	var ip netip.Addr
	if cl.perIP > 0 {
		if ip = remoteAddr(c); ip.IsValid() && !cl.takeIP(ip) {
			cl.open.Add(-1)
			cl.refuse(c, reasonTooManyConnsPerIP, cl.tooManyPerIP)
			return nil
		}
	}
	return &trackedConn{Conn: c, limits: cl, ip: ip}
}

// refuse answers c with response and closes it. The write cannot block: a
// new connection's send buffer is empty and far larger than the response.
func (cl *connLimits) refuse(c net.Conn, reason string, response []byte) {
	if response != nil {
		_, _ = c.Write(response)
	}
	_ = c.Close()
	cl.refused(reason)
	if cl.warn.pass(refusedWarnEvery) {
		cl.log.Warn().Str(logKeyReason, reason).Int64("max_conns", cl.max).Int("max_conns_per_ip", cl.perIP).
			Int64("open", cl.open.Load()).
			Msg("refusing callback connections over the cap (counted in timbus_rejected_total; this warning comes at most every 10s)")
	}
}

func (cl *connLimits) takeIP(ip netip.Addr) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.byIP[ip] >= cl.perIP {
		return false
	}
	cl.byIP[ip]++
	return true
}

func (cl *connLimits) release(ip netip.Addr) {
	cl.open.Add(-1)
	if !ip.IsValid() {
		return
	}
	cl.mu.Lock()
	if n := cl.byIP[ip] - 1; n > 0 {
		cl.byIP[ip] = n
	} else {
		delete(cl.byIP, ip)
	}
	cl.mu.Unlock()
}

func remoteAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// trackedConn gives its place back when closed.
type trackedConn struct {
	net.Conn
	limits *connLimits
	ip     netip.Addr // valid when counted per address
	closed atomic.Bool
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.limits.release(c.ip)
	}
	return err
}

// unlimited is what OpenFileLimit reports for no limit.
const unlimited = math.MaxUint64
