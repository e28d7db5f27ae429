package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/internal/natstest"
)

// TestHostileSecretsNeverPrinted runs timbus with every secret it can be given — a
// NATS password in --nats-url, a Tencent token — at debug level, drives
// signed, badly signed and malformed requests through it, and then looks
// for each secret in everything the run printed: the log, the answers'
// refusal texts, /metrics, the audit records and `timbus check`.
func TestHostileSecretsNeverPrinted(t *testing.T) {
	clearEnv(t)
	const (
		natsUser     = "timbus"
		natsPassword = "n4ts-pa55word-never-printed"
		token        = "t0ken-never-printed"
	)
	opts := natstest.Options()
	opts.Username, opts.Password = natsUser, natsPassword
	ns := natstest.RunWith(t, opts)
	nc := natstest.Connect(t, ns, nats.UserInfo(natsUser, natsPassword))
	const verdict = `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`
	if _, err := nc.Subscribe("timbus.decide.>", func(m *nats.Msg) { _ = m.Respond([]byte(verdict)) }); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		records []string
	)
	if _, err := nc.Subscribe("timbus.audit.>", func(m *nats.Msg) {
		mu.Lock()
		records = append(records, string(m.Data))
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	natsURL := fmt.Sprintf("nats://%s:%s@%s", natsUser, natsPassword, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	args := []string{"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--nats-url", natsURL,
		"--sdkappid", testApp, "--token", token, "--log-level", "debug", "--log-callbacks", "all"}

	s := startServe(t, args...)
	addr := s.bridge.Addr()
	now := strconv.FormatInt(time.Now().Unix(), 10)
	sum := sha256.Sum256([]byte(token + now))
	sign := hex.EncodeToString(sum[:])
	// A signature made for another time: as secret, to whoever captures it,
	// as a good one until its RequestTime leaves the window.
	otherSum := sha256.Sum256([]byte(token + "1669872112"))
	otherSign := hex.EncodeToString(otherSum[:])
	secrets := []string{natsPassword, token, sign, otherSign}

	query := func(app, sign string) string {
		return url.Values{"SdkAppid": {app}, "CallbackCommand": {createAccount}, "RequestTime": {now}, "Sign": {sign},
			"contenttype": {"json"}, "ClientIP": {"127.0.0.1"}, "OptPlatform": {"RESTAPI"}}.Encode()
	}
	body := `{"CallbackCommand":"` + createAccount + `","Name":"x"}`
	var answers []string
	send := func(wantStatus int, q string) {
		t.Helper()
		resp, err := http.Post("http://"+addr+"/?"+q, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		text, _ := io.ReadAll(resp.Body)
		answers = append(answers, string(text))
		if resp.StatusCode != wantStatus {
			t.Errorf("status %d, want %d: %s", resp.StatusCode, wantStatus, text)
		}
	}
	send(http.StatusOK, query(testApp, sign))
	send(http.StatusUnauthorized, query(testApp, otherSign))
	send(http.StatusForbidden, query("1400000999", sign))
	// Requests fasthttp cannot parse: its errors quote what it read, query
	// and all.
	for _, raw := range []string{
		"BREW /?" + query(testApp, sign) + " HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /?" + query(testApp, sign) + " HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 16<<10) + "\r\n\r\n",
		"POST /?" + query(testApp, otherSign) + " HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
	} {
		answers = append(answers, rawExchange(t, addr, raw))
	}

	resp, err := http.Get("http://" + s.bridge.OpsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// Every refusal is audited; wait for their records.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(records)
		mu.Unlock()
		if n >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := s.stop(t); code != exitOK {
		t.Errorf("exit code %d", code)
	}
	code, checkOut, checkErr := runTimbus(t, context.Background(), append([]string{"check"}, args...)...)
	if code != exitOK {
		t.Errorf("timbus check: exit code %d: %s", code, checkErr)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(records) < 6 {
		t.Errorf("%d audit records, want at least 6", len(records))
	}
	outputs := map[string]string{
		"serve's log":     s.stderr.String(),
		"answers":         strings.Join(answers, "\n"),
		"/metrics":        string(metrics),
		"audit records":   strings.Join(records, "\n"),
		"timbus check":    checkOut + checkErr,
		"check's summary": checkOut,
	}
	if !strings.Contains(s.stderr.String(), "REDACTED") {
		t.Errorf("serve's log does not show the redacted NATS URL:\n%s", s.stderr)
	}
	for where, text := range outputs {
		for _, secret := range secrets {
			if i := strings.Index(strings.ToLower(text), strings.ToLower(secret)); i >= 0 {
				t.Errorf("%s holds a secret: …%s…", where, text[max(0, i-80):min(len(text), i+len(secret)+20)])
			}
		}
	}
}

// TestHostileSecretsNotInConnectErrors: a NATS password refused by the server, or a
// URL that does not parse, must not come back in timbus's own errors.
func TestHostileSecretsNotInConnectErrors(t *testing.T) {
	clearEnv(t)
	const secret = "s3cret-in-a-url"
	opts := natstest.Options()
	opts.Username, opts.Password = "timbus", "the-right-one"
	ns := natstest.RunWith(t, opts)
	hostPort := strings.TrimPrefix(ns.ClientURL(), "nats://")
	for _, u := range []string{
		"nats://timbus:" + secret + "@" + hostPort,
		"nats://" + secret + "@" + hostPort,
		"nats://timbus:" + secret + "%zz@" + hostPort, // does not parse
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		_, out, errOut := runTimbus(t, ctx, "serve", "--listen", "127.0.0.1:0", "--nats-url", u, "--sdkappid", testApp, "--log-level", "debug")
		cancel()
		_, checkOut, checkErr := runTimbus(t, context.Background(), "check", "--nats-url", u, "--sdkappid", testApp)
		for _, text := range []string{out, errOut, checkOut, checkErr} {
			if strings.Contains(text, secret) {
				t.Errorf("%s: the output holds the secret:\n%s", u, text)
			}
		}
	}
}

// rawExchange writes raw to addr and returns what comes back until the
// server closes the connection or a second passes.
func rawExchange(t *testing.T, addr, raw string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	return resp.Status + " " + string(text)
}
