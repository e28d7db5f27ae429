package bridge

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/internal/testpki"
)

// tlsBridge is a bridge serving HTTPS with a certificate from its own test CA.
type tlsBridge struct {
	*testBridge
	ca                *testpki.CA
	certFile, keyFile string
}

func startTLSBridge(t *testing.T, mutate func(*Config)) *tlsBridge {
	t.Helper()
	ca := testpki.NewCA(t, "timbus test CA")
	certFile, keyFile := ca.Server(t, 100, "timbus one").Files(t, t.TempDir())
	tb := startBridge(t, func(c *Config) {
		c.TLSCert, c.TLSKey = certFile, keyFile
		c.MetricsListen = "127.0.0.1:0"
		if mutate != nil {
			mutate(c)
		}
	})
	tb.base = "https://" + tb.Addr()
	return &tlsBridge{testBridge: tb, ca: ca, certFile: certFile, keyFile: keyFile}
}

// client is an HTTPS client trusting the test CA, presenting certs.
func (tb *tlsBridge) client(certs ...tls.Certificate) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: tb.ca.Pool(), Certificates: certs},
	}}
}

// postWith posts a callback and returns the answer and the serial number of
// the certificate the server showed.
func postWith(c *http.Client, url string, body []byte) (answer, int64, error) {
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return answer{}, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, 0, err
	}
	return answer{status: resp.StatusCode, body: string(b)}, resp.TLS.PeerCertificates[0].SerialNumber.Int64(), nil
}

// TestTLS_CallbackOverHTTPS: a callback over HTTPS, checked against the test
// CA, is decided end to end; TLS 1.1 and HTTP/2 are not offered.
func TestTLS_CallbackOverHTTPS(t *testing.T) {
	tb := startTLSBridge(t, nil)
	decider(t, tb.nc, decideOA, replyWith(oaCreateDeny))
	a, serial, err := postWith(tb.client(), tb.callbackURL(oaCreate), sample(t, oaCreate))
	if err != nil || a.status != 200 || a.body != oaCreateDeny || serial != 100 {
		t.Fatalf("callback over HTTPS: %v %d %s, certificate serial %d", err, a.status, a.body, serial)
	}
	if c, err := tls.Dial("tcp", tb.Addr(), &tls.Config{RootCAs: tb.ca.Pool(), MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Error("TLS 1.1 handshake succeeded")
	}
	c, err := tls.Dial("tcp", tb.Addr(), &tls.Config{RootCAs: tb.ca.Pool(), NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("ALPN chose %q, want http/1.1", p)
	}
}

// TestTLS_PlainHTTPNotServed: plain HTTP to the HTTPS port reaches no decider;
// it gets a 400 that says why, and is counted.
func TestTLS_PlainHTTPNotServed(t *testing.T) {
	tb := startTLSBridge(t, nil)
	var asked atomic.Int64
	decider(t, tb.nc, decideOA, func(*nats.Msg) *nats.Msg { asked.Add(1); return &nats.Msg{Data: []byte(oaCreateDeny)} })
	resp, err := httpClient.Post("http://"+tb.Addr()+"/?SdkAppid="+testApp+"&CallbackCommand="+oaCreate, "application/json", bytes.NewReader(sample(t, oaCreate)))
	if err != nil {
		t.Fatalf("plain HTTP: %v, want a 400", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "https://") {
		t.Errorf("plain HTTP: %d %s, want 400 asking for https", resp.StatusCode, body)
	}
	checkMetrics(t, tb.testBridge, map[string]string{`timbus_rejected_total{reason="tls_handshake"}`: "1"})
	// A decider would have answered by now; make sure with a real callback.
	if a, _, err := postWith(tb.client(), tb.callbackURL(oaCreate), sample(t, oaCreate)); err != nil || a.status != 200 {
		t.Fatalf("HTTPS callback: %v %d", err, a.status)
	}
	if n := asked.Load(); n != 1 {
		t.Errorf("deciders asked %d times, want 1 (the HTTPS callback only)", n)
	}
}

// TestTLS_ClientCertRequired: with a client CA, only clients presenting a
// certificate it signed are served; the others fail the handshake, counted as
// client_cert.
func TestTLS_ClientCertRequired(t *testing.T) {
	tencent := testpki.NewCA(t, "Tencent callback client CA")
	caFile := filepath.Join(t.TempDir(), "client-ca.pem")
	if err := os.WriteFile(caFile, tencent.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	tb := startTLSBridge(t, func(c *Config) { c.TLSClientCA = caFile })
	decider(t, tb.nc, decideOA, replyWith(oaCreateDeny))
	audited := subscribe(t, tb.nc, "timbus.audit.rejected.client_cert")
	stranger := testpki.NewCA(t, "some other CA")
	refused := 0
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"cert from the client CA", []tls.Certificate{tencent.Client(t, 7, "tencent").TLS(t)}, true},
		{"no cert", nil, false},
		{"cert from another CA", []tls.Certificate{stranger.Client(t, 8, "mallory").TLS(t)}, false},
		{"cert from the server's CA", []tls.Certificate{tb.ca.Client(t, 9, "not tencent").TLS(t)}, false},
	} {
		a, _, err := postWith(tb.client(tc.certs...), tb.callbackURL(oaCreate), sample(t, oaCreate))
		switch {
		case tc.ok && (err != nil || a.status != 200 || a.body != oaCreateDeny):
			t.Errorf("%s: %v %d %s, want 200", tc.name, err, a.status, a.body)
		case !tc.ok && err == nil:
			t.Errorf("%s: served %d %s, want the handshake to fail", tc.name, a.status, a.body)
		case !tc.ok:
			refused++
		}
	}
	want := fmt.Sprint(refused)
	waitFor(t, 5*time.Second, func() error {
		_, text := get(t, "http://"+tb.OpsAddr()+PathMetrics)
		if got := metricValue(t, text, `timbus_rejected_total{reason="client_cert"}`); got != want {
			return fmt.Errorf("client_cert rejections %s, want %s", got, want)
		}
		return nil
	})
	checkMetrics(t, tb.testBridge, map[string]string{`timbus_rejected_total{reason="tls_handshake"}`: "0"})
	// Each refused certificate is audited like any refusal.
	waitFor(t, 5*time.Second, func() error {
		if got := len(audited.all()); got != refused {
			return fmt.Errorf("%d client_cert audit records, want %d", got, refused)
		}
		return nil
	})
	for _, m := range audited.all() {
		var rec map[string]any
		if err := json.Unmarshal(m.Data, &rec); err != nil || rec["outcome"] != "rejected" || rec["remote"] == nil ||
			!strings.Contains(fmt.Sprint(rec["reason"]), "TLS handshake refused") {
			t.Errorf("client_cert audit record %s (%v)", m.Data, err)
		}
	}
	// One warning for three failures: strangers do not flood the log.
	if n := strings.Count(strings.Join(tb.logs.lines(), "\n"), "TLS handshake failed"); n != 1 {
		t.Errorf("%d handshake warnings logged, want 1", n)
	}
}

// TestTLS_CertificateRotation: a certificate replaced on disk is served on new
// connections without a restart; half-written files leave the old one in
// place; connections open before keep working.
func TestTLS_CertificateRotation(t *testing.T) {
	tb := startTLSBridge(t, nil)
	decider(t, tb.nc, decideOA, replyWith(oaCreateDeny))
	old := tb.client()
	if _, serial, err := postWith(old, tb.callbackURL(oaCreate), sample(t, oaCreate)); err != nil || serial != 100 {
		t.Fatalf("first callback: %v, serial %d", err, serial)
	}
	fresh := func() int64 {
		c := tb.client()
		defer c.CloseIdleConnections()
		a, serial, err := postWith(c, tb.callbackURL(oaCreate), sample(t, oaCreate))
		if err != nil || a.status != 200 {
			t.Fatalf("callback on a new connection: %v %d", err, a.status)
		}
		return serial
	}
	waitSerial := func(want int64) {
		t.Helper()
		waitFor(t, 10*time.Second, func() error {
			if got := fresh(); got != want {
				return fmt.Errorf("new connections get serial %d, want %d", got, want)
			}
			return nil
		})
	}

	// Rotation caught halfway: the new certificate without its key.
	next := tb.ca.Server(t, 200, "timbus two")
	testpki.WriteAtomic(t, tb.certFile, next.CertPEM)
	// Files are checked on handshakes: keep connecting until the check ran.
	waitFor(t, 10*time.Second, func() error {
		if got := fresh(); got != 100 {
			t.Fatalf("with a mismatched pair on disk new connections get serial %d, want the old 100", got)
		}
		if !strings.Contains(strings.Join(tb.logs.lines(), "\n"), "cannot be loaded") {
			return errors.New("no warning about the mismatched files yet")
		}
		return nil
	})
	// The key arrives: the new certificate is served.
	testpki.WriteAtomic(t, tb.keyFile, next.KeyPEM)
	waitSerial(200)
	// The connection opened before keeps its certificate and is served.
	if a, serial, err := postWith(old, tb.callbackURL(oaCreate), sample(t, oaCreate)); err != nil || a.status != 200 || serial != 100 {
		t.Errorf("old connection after rotation: %v %d, serial %d (want the old connection, 100)", err, a.status, serial)
	}

	// cert-manager's layout: the files are symlinks into a directory that a
	// symlink swap replaces.
	if err := os.Remove(tb.certFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(tb.keyFile); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(tb.certFile)
	third := tb.ca.Server(t, 300, "timbus three")
	thirdDir := t.TempDir()
	third.Files(t, thirdDir)
	for _, name := range []string{"cert.pem", "key.pem"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(thirdDir, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	waitSerial(300)
	fourthDir := t.TempDir()
	tb.ca.Server(t, 400, "timbus four").Files(t, fourthDir)
	if err := os.Symlink(fourthDir, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	waitSerial(400)
}

// TestTLS_ReloadTLS: what SIGHUP calls loads the files at once, and refuses
// files that do not load, keeping the certificate in use.
func TestTLS_ReloadTLS(t *testing.T) {
	tb := startTLSBridge(t, nil)
	decider(t, tb.nc, decideOA, replyWith(oaCreateDeny))
	serial := func() int64 {
		c, err := tls.Dial("tcp", tb.Addr(), &tls.Config{RootCAs: tb.ca.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	testpki.WriteAtomic(t, tb.certFile, []byte("-----BEGIN CERTIFICATE-----\ntruncated"))
	if err := tb.ReloadTLS(); !errors.Is(err, ErrTLSReload) {
		t.Errorf("ReloadTLS with a broken certificate file = %v, want ErrTLSReload", err)
	}
	if got := serial(); got != 100 {
		t.Errorf("after a failed reload the server shows serial %d, want 100", got)
	}
	tb.ca.Server(t, 500, "timbus five").Files(t, filepath.Dir(tb.certFile))
	if err := tb.ReloadTLS(); err != nil {
		t.Fatalf("ReloadTLS: %v", err)
	}
	if got := serial(); got != 500 {
		t.Errorf("right after ReloadTLS the server shows serial %d, want 500", got)
	}
	for _, l := range tb.logs.lines() {
		if strings.Contains(l, "PRIVATE KEY") || strings.Contains(l, "BEGIN CERTIFICATE") {
			t.Errorf("PEM in the log: %s", l)
		}
	}
}

// TestTLS_ConnectionCaps: over MaxConns, a TLS connection is closed before
// any handshake and counted; the connections within the cap are served.
func TestTLS_ConnectionCaps(t *testing.T) {
	tb := startTLSBridge(t, func(c *Config) { c.MaxConns = 1 })
	decider(t, tb.nc, decideOA, replyWith(oaCreateDeny))
	held, err := tls.Dial("tcp", tb.Addr(), &tls.Config{RootCAs: tb.ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	r := bufio.NewReader(held)
	if _, err := io.WriteString(held, afterCallback(t)); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(r, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("callback within the cap: %v", err)
	}
	over, err := net.Dial("tcp", tb.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	_ = over.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := over.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("connection over the cap: read %d bytes, %v; want it closed without a word", n, err)
	}
	checkMetrics(t, tb.testBridge, map[string]string{
		`timbus_rejected_total{reason="too_many_conns"}`: "1",
		`timbus_rejected_total{reason="tls_handshake"}`:  "0",
		`timbus_connections`:                             "1",
	})
}

func TestConfig_TLS(t *testing.T) {
	ca := testpki.NewCA(t, "test CA")
	dir := t.TempDir()
	certFile, keyFile := ca.Server(t, 1, "timbus").Files(t, dir)
	otherKey := filepath.Join(dir, "other-key.pem")
	if err := os.WriteFile(otherKey, ca.Server(t, 2, "x").KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	caFile, notPEM := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "not.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name, cert, key, ca string
		field               string // "" for valid
		sentinel            error
	}{
		{"plain HTTP", "", "", "", "", nil},
		{"HTTPS", certFile, keyFile, "", "", nil},
		{"mutual TLS", certFile, keyFile, caFile, "", nil},
		{"cert without key", certFile, "", "", "tls-key", ErrMissing},
		{"key without cert", "", keyFile, "", "tls-cert", ErrMissing},
		{"client CA without HTTPS", "", "", caFile, "tls-client-ca", ErrMissing},
		{"unreadable cert", missing, keyFile, "", "tls-cert", ErrInvalidValue},
		{"key of another cert", certFile, otherKey, "", "tls-cert", ErrInvalidValue},
		{"client CA not PEM", certFile, keyFile, notPEM, "tls-client-ca", ErrInvalidValue},
		{"client CA missing", certFile, keyFile, missing, "tls-client-ca", ErrInvalidValue},
	} {
		cfg := DefaultConfig()
		cfg.Apps = []App{{ID: testApp}}
		cfg.TLSCert, cfg.TLSKey, cfg.TLSClientCA = tc.cert, tc.key, tc.ca
		err := cfg.Validate()
		var ce *ConfigError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.field != "" && (!errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, tc.sentinel)):
			t.Errorf("%s: Validate() = %v, want a ConfigError for %s wrapping %v", tc.name, err, tc.field, tc.sentinel)
		case err != nil && strings.Contains(err.Error(), "BEGIN"):
			t.Errorf("%s: file contents in the error: %v", tc.name, err)
		}
	}
}
