package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/bridge"
	"github.com/timbus-dev/timbus/internal/natstest"
)

// natsAuthCase is a server wanting one kind of credential, the arguments
// (or environment, or config file) that pass, and ones it refuses.
type natsAuthCase struct {
	name      string
	setup     func(t *testing.T, dir string, o *server.Options) (good, wrong []string, client bridge.NATSAuth)
	env       bool   // the good credential comes from the environment
	checkSays string // timbus check's nats auth line
	secret    string // never printed
}

func natsAuthCases() []natsAuthCase {
	return []natsAuthCase{
		{name: "user and password", checkSays: "nats auth: user timbus with password", secret: "pa55-never-printed",
			setup: func(_ *testing.T, _ string, o *server.Options) ([]string, []string, bridge.NATSAuth) {
				o.Users = []*server.User{{Username: "timbus", Password: "pa55-never-printed"}}
				return []string{"--nats-user", "timbus", "--nats-password", "pa55-never-printed"},
					[]string{"--nats-user", "timbus", "--nats-password", "wr0ng-never-printed"},
					bridge.NATSAuth{User: "timbus", Password: "pa55-never-printed"}
			}},
		{name: "token from the environment", env: true, checkSays: "nats auth: token", secret: "t0ken-never-printed",
			setup: func(_ *testing.T, _ string, o *server.Options) ([]string, []string, bridge.NATSAuth) {
				o.Authorization = "t0ken-never-printed"
				return []string{"NATS_TOKEN=t0ken-never-printed"}, []string{"--nats-token", "wr0ng-never-printed"},
					bridge.NATSAuth{Token: "t0ken-never-printed"}
			}},
		{name: "nkey", checkSays: "nats auth: nkey ",
			setup: func(t *testing.T, dir string, o *server.Options) ([]string, []string, bridge.NATSAuth) {
				seed, pub := natstest.NKey(t, dir, "timbus")
				other, _ := natstest.NKey(t, dir, "stranger")
				o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
				return []string{"--nats-nkey", seed}, []string{"--nats-nkey", other}, bridge.NATSAuth{NKeyFile: seed}
			}},
		{name: "creds", checkSays: "nats auth: creds file ",
			setup: func(t *testing.T, dir string, o *server.Options) ([]string, []string, bridge.NATSAuth) {
				op := natstest.NewOperator(t)
				op.Serve(t, o)
				creds := op.Creds(t, dir, "timbus")
				stranger := natstest.NewOperator(t).Creds(t, dir, "stranger")
				return []string{"--nats-creds", creds}, []string{"--nats-creds", stranger}, bridge.NATSAuth{CredsFile: op.Creds(t, dir, "decider")}
			}},
		{name: "mutual tls", checkSays: "nats auth: tls: ca ",
			setup: func(t *testing.T, dir string, o *server.Options) ([]string, []string, bridge.NATSAuth) {
				pki := natstest.NewPKI(t, dir)
				pki.Serve(t, o, true)
				return []string{"--nats-tls-ca", pki.CA, "--nats-tls-cert", pki.ClientCert, "--nats-tls-key", pki.ClientKey},
					[]string{"--nats-tls-ca", pki.CA},
					bridge.NATSAuth{TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}
			}},
	}
}

// TestNATSCredentials: serve, check and audit authenticate with each kind
// of credential, a decider with its own decides a callback through serve,
// and wrong credentials end serve, audit, replay and conform at once with
// a clear error, never with the secret.
func TestNATSCredentials(t *testing.T) {
	for _, tc := range natsAuthCases() {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			dir := t.TempDir()
			opts := natstest.Options()
			good, wrong, client := tc.setup(t, dir, opts)
			ns := natstest.RunWith(t, opts)
			url := ns.ClientURL()
			if tc.env {
				for _, kv := range good {
					name, value, _ := strings.Cut(kv, "=")
					t.Setenv("TIMBUS_"+name, value)
				}
				good = nil
			}
			copts, err := client.Options()
			if err != nil {
				t.Fatal(err)
			}
			nc := natstest.Connect(t, ns, copts...)
			const verdict = `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"decided"}`
			sub, err := nc.Subscribe("timbus.decide.>", func(m *nats.Msg) { _ = m.Respond([]byte(verdict)) })
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}

			args := append([]string{"--listen", "127.0.0.1:0", "--nats-url", url, "--sdkappid", testApp}, good...)
			s := startServe(t, args...)

			// timbus audit, with the same credentials, sees the callback's record.
			auditDone := make(chan struct{})
			var auditCode int
			var auditOut, auditErr string
			go func() {
				defer close(auditDone)
				auditCode, auditOut, auditErr = runTimbus(t, context.Background(), append([]string{"audit", "--nats-url", url, "--json", "--limit", "1"}, good...)...)
			}()
			deadline := time.After(10 * time.Second)
		posting:
			for {
				status, answer := postCallback(t, s.bridge.Addr(), testApp, createAccount, `{"CallbackCommand":"`+createAccount+`"}`)
				if status != http.StatusOK || answer != verdict {
					t.Fatalf("answer %d %s, want the decider's %s", status, answer, verdict)
				}
				select {
				case <-auditDone:
					break posting
				case <-deadline:
					t.Fatal("timbus audit saw no record within 10s")
				case <-time.After(100 * time.Millisecond): // audit subscribes in its own time
				}
			}
			if auditCode != exitOK || !strings.Contains(auditOut, createAccount) {
				t.Errorf("timbus audit: exit %d, out %s, err %s", auditCode, auditOut, auditErr)
			}
			serveLog := s.stderr.String()
			if code := s.stop(t); code != exitOK {
				t.Errorf("serve exit code %d", code)
			}

			_, checkOut, checkErr := runTimbus(t, context.Background(), append([]string{"check"}, args...)...)
			if !strings.Contains(checkOut, tc.checkSays) {
				t.Errorf("timbus check does not say %q:\n%s%s", tc.checkSays, checkOut, checkErr)
			}

			// Wrong credentials: every command fails at once, saying why.
			outputs := []string{serveLog, checkOut, checkErr, auditOut, auditErr}
			for _, cmd := range [][]string{
				{"serve", "--listen", "127.0.0.1:0", "--sdkappid", testApp},
				{"audit"}, {"replay", "--stream", "AUDIT"}, {"conform"},
			} {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				start := time.Now()
				code, out, errOut := runTimbus(t, ctx, append(append(cmd, "--nats-url", url), wrong...)...)
				cancel()
				if code == exitOK || time.Since(start) > 5*time.Second {
					t.Errorf("%s with wrong credentials: exit %d after %v", cmd[0], code, time.Since(start))
				}
				if !strings.Contains(errOut, "refused") {
					t.Errorf("%s with wrong credentials does not say NATS refused them:\n%s", cmd[0], errOut)
				}
				outputs = append(outputs, out, errOut)
			}
			for _, text := range outputs {
				for _, secret := range []string{tc.secret, "wr0ng-never-printed"} {
					if secret != "" && strings.Contains(text, secret) {
						t.Errorf("output holds a secret: %s", text)
					}
				}
			}
		})
	}
}

// TestNATSCredentialsInConfigFile: the credential settings are keys of
// serve's file too, and a credential in the URL and one in a flag do not mix.
func TestNATSCredentialsInConfigFile(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	opts := natstest.Options()
	opts.Users = []*server.User{{Username: "timbus", Password: "fi1e-pass"}}
	ns := natstest.RunWith(t, opts)
	file := filepath.Join(dir, "timbus.yaml")
	if err := os.WriteFile(file, []byte("nats-url: "+ns.ClientURL()+"\nnats-user: timbus\nnats-password: fi1e-pass\nsdkappid: ["+testApp+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServe(t, "--config", file, "--listen", "127.0.0.1:0")
	if status, answer := postCallback(t, s.bridge.Addr(), testApp, memberJoined, `{"CallbackCommand":"`+memberJoined+`"}`); status != http.StatusOK {
		t.Errorf("answer %d %s", status, answer)
	}
	code, _, errOut := runTimbus(t, context.Background(), "check", "--nats-url", "nats://u:p@127.0.0.1:4222", "--nats-token", "t", "--sdkappid", testApp)
	if code == exitOK || !strings.Contains(errOut, "one way") {
		t.Errorf("URL and flag credentials together: exit %d: %s", code, errOut)
	}
}
