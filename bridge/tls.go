package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// ErrTLSReload is returned by ReloadTLS when the certificate files cannot be
// used; the certificate served before stays in use.
var ErrTLSReload = errors.New("bridge: TLS certificate not reloaded")

// Reasons, in timbus_rejected_total, for connections whose TLS handshake
// failed. They carry no address: handshakes fail for strangers.
const (
	reasonClientCert   = "client_cert"   // no client certificate, or one the client CA did not sign
	reasonTLSHandshake = "tls_handshake" // any other failure: plain HTTP, old TLS versions, garbage
)

const (
	// certCheckEvery spaces the checks, on handshakes, of whether the
	// certificate files changed on disk.
	certCheckEvery = time.Second
	// tlsWarnEvery spaces the warnings about failed handshakes and reloads.
	tlsWarnEvery = 10 * time.Second
)

// errNoClientCert fails a handshake without a client certificate when one is
// required. Go's own error for it (under RequireAndVerifyClientCert) is a
// bare string; this one can be told apart from other handshake failures.
var errNoClientCert = errors.New("tls: client certificate required")

// plainHTTPAnswer goes to a client speaking plain HTTP to the TLS port, as
// net/http does, so that an http:// callback URL is easy to diagnose. No
// request is read: nothing is processed.
var plainHTTPAnswer = cannedResponse(fasthttp.StatusBadRequest, reasonTLSHandshake,
	"this port serves HTTPS: use an https:// callback URL")

// certStore serves the certificate of a pair of PEM files, and loads them
// again when they change: a new inode (cert-manager's symlink swap, certbot's
// renewed links, an atomic rename), modification time or size. Files checked
// half-written fail to load; the certificate loaded before stays, and the
// next check tries again.
type certStore struct {
	certFile, keyFile string
	log               zerolog.Logger

	cert      atomic.Pointer[tls.Certificate]
	nextCheck atomic.Int64 // unix nanos

	mu    sync.Mutex     // one load at a time
	stamp [2]os.FileInfo // of certFile and keyFile, when last loaded
	warn  gate
}

func newCertStore(certFile, keyFile string, log zerolog.Logger) (*certStore, error) {
	s := &certStore{certFile: certFile, keyFile: keyFile, log: log}
	if err := s.reload(true); err != nil {
		return nil, err
	}
	return s, nil
}

// getCertificate is tls.Config.GetCertificate: the current certificate,
// after at most one check of the files per certCheckEvery.
func (s *certStore) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := time.Now().UnixNano()
	if next := s.nextCheck.Load(); now >= next && s.nextCheck.CompareAndSwap(next, now+int64(certCheckEvery)) {
		if err := s.reload(false); err != nil && s.warn.pass(tlsWarnEvery) {
			s.log.Warn().Err(err).Msg("TLS certificate files changed but cannot be loaded (half-written during rotation?); still serving the previous certificate, retrying every second")
		}
	}
	return s.cert.Load(), nil
}

// reload loads the files if they changed since the last load, or always when
// forced. On failure the certificate in use stays.
func (s *certStore) reload(force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Stat before reading: a change after the stat shows at the next check.
	var stamp [2]os.FileInfo
	for i, name := range []string{s.certFile, s.keyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrTLSReload, err)
		}
		stamp[i] = fi
	}
	if !force && sameFile(s.stamp[0], stamp[0]) && sameFile(s.stamp[1], stamp[1]) {
		return nil
	}
	cert, err := loadKeyPair(s.certFile, s.keyFile)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTLSReload, err)
	}
	old := s.cert.Swap(cert)
	s.stamp = stamp
	if old != nil {
		// Serial and subject identify the certificate; nothing secret.
		s.log.Info().Str("subject", cert.Leaf.Subject.String()).Str("serial", cert.Leaf.SerialNumber.Text(16)).
			Time("not_after", cert.Leaf.NotAfter).Msg("TLS certificate reloaded; new connections get it")
	}
	return nil
}

func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

// loadKeyPair reads a certificate (with its chain) and its key, checking
// that they belong together. Errors name the files, never their contents.
func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certificate %s with key %s: %w", certFile, keyFile, err)
	}
	// Go 1.23+ fills Leaf; older ones do not.
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certificate %s: %w", certFile, err)
		}
	}
	return &cert, nil
}

// loadClientCAs reads the PEM certificates client certificates must chain to.
func loadClientCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// validateTLS checks the TLS settings, reading the files, so that a bad
// certificate stops timbus at start (and timbus check) rather than at the
// first handshake.
func (c *Config) validateTLS() error {
	bad := func(field string, value any, err error) error {
		return &ConfigError{Field: field, Value: value, Err: err}
	}
	switch {
	case c.TLSCert == "" && c.TLSKey == "" && c.TLSClientCA != "":
		return bad("tls-client-ca", c.TLSClientCA, fmt.Errorf("%w: client certificates need HTTPS: set tls-cert and tls-key", ErrMissing))
	case c.TLSCert == "" && c.TLSKey == "":
		return nil
	case c.TLSCert == "":
		return bad("tls-cert", c.TLSCert, fmt.Errorf("%w: tls-key is set; HTTPS needs both tls-cert and tls-key", ErrMissing))
	case c.TLSKey == "":
		return bad("tls-key", c.TLSKey, fmt.Errorf("%w: tls-cert is set; HTTPS needs both tls-cert and tls-key", ErrMissing))
	}
	if _, err := loadKeyPair(c.TLSCert, c.TLSKey); err != nil {
		return bad("tls-cert", c.TLSCert, fmt.Errorf("%w: %w", ErrInvalidValue, err))
	}
	if c.TLSClientCA != "" {
		if _, err := loadClientCAs(c.TLSClientCA); err != nil {
			return bad("tls-client-ca", c.TLSClientCA, fmt.Errorf("%w: %w", ErrInvalidValue, err))
		}
	}
	return nil
}

// newTLSConfig builds the callback listener's TLS settings: TLS 1.2 at
// least, Go's default cipher suites, HTTP/1.1 only (fasthttp has no HTTP/2).
func newTLSConfig(certs *certStore, clientCAs *x509.CertPool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: certs.getCertificate,
		NextProtos:     []string{"http/1.1"},
	}
	if clientCAs != nil {
		// Equivalent to RequireAndVerifyClientCert, but a missing
		// certificate fails with an error of ours, so that it is counted as
		// client_cert rather than as any handshake failure.
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		cfg.ClientCAs = clientCAs
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errNoClientCert
			}
			return nil
		}
	}
	return cfg
}

// tlsConn shakes hands on its first Read, which fasthttp makes under its
// ReadTimeout, so that a failure is counted and logged. It stays a *tls.Conn
// for fasthttp's RequestCtx.IsTLS.
type tlsConn struct {
	*tls.Conn
	failed func(net.Addr, error)
	shook  bool // only fasthttp's serving goroutine reads
}

func (c *tlsConn) Read(p []byte) (int, error) {
	if !c.shook {
		c.shook = true
		if err := c.Handshake(); err != nil {
			c.failed(c.RemoteAddr(), err)
			var rhe tls.RecordHeaderError
			if errors.As(err, &rhe) && rhe.Conn != nil && looksLikeHTTP(rhe.RecordHeader[:]) {
				_, _ = rhe.Conn.Write(plainHTTPAnswer)
			}
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

func looksLikeHTTP(hdr []byte) bool {
	for _, m := range []string{"GET ", "HEAD ", "POST ", "PUT ", "OPTIO", "DELET", "PATCH"} {
		if n := min(len(m), len(hdr)); string(hdr[:n]) == m[:n] {
			return true
		}
	}
	return false
}

// wrapTLS returns the listener's connection wrapper for HTTPS. It comes
// after the connection caps: a connection over them is closed before any
// handshake, which is the costly part.
func (b *Bridge) wrapTLS(cfg *tls.Config) func(net.Conn) net.Conn {
	return func(c net.Conn) net.Conn {
		return &tlsConn{Conn: tls.Server(c, cfg), failed: b.handshakeFailed}
	}
}

// handshakeFailed counts a failed handshake and warns, at most every
// tlsWarnEvery: strangers cause them, and must not flood the log. A client
// refused for its certificate is audited like any refusal (with no request,
// the record holds only the address and why); other failures — plain HTTP,
// old TLS versions, port scans — are only counted, like read timeouts.
func (b *Bridge) handshakeFailed(remote net.Addr, err error) {
	if errors.Is(err, io.EOF) {
		// A connection closed without a word: a TCP health check or port
		// probe, not a refusal.
		return
	}
	reason := reasonTLSHandshake
	var cve *tls.CertificateVerificationError
	if errors.Is(err, errNoClientCert) || errors.As(err, &cve) {
		reason = reasonClientCert
	}
	b.metrics.reject(reason)
	if reason == reasonClientCert {
		b.auditRefusal(reason, fasthttp.StatusForbidden, "TLS handshake refused: "+err.Error(), remote)
	}
	if b.tlsWarn.pass(tlsWarnEvery) {
		b.log.Warn().Err(err).Str(logKeyReason, reason).
			Msg("TLS handshake failed; connection closed (counted in timbus_rejected_total; this warning comes at most every 10s)")
	}
}

// ReloadTLS reads the certificate and key files again, as SIGHUP asks. New
// connections get the new certificate; open ones keep theirs. When the files
// cannot be used, the certificate in use stays and the error, wrapping
// ErrTLSReload, says why. Without HTTPS it does nothing.
func (b *Bridge) ReloadTLS() error {
	if b.certs == nil {
		return nil
	}
	return b.certs.reload(true)
}

// TLS reports whether the callback listener serves HTTPS.
func (b *Bridge) TLS() bool { return b.certs != nil }
