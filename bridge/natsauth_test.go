package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/timbus-dev/timbus/internal/natstest"
)

// authCase is a NATS server wanting one kind of credential, the
// credentials that pass, and ones it refuses.
type authCase struct {
	name  string
	setup func(t *testing.T, dir string, opts *server.Options) (good, wrong NATSAuth)
}

func authCases() []authCase {
	return []authCase{
		{"user and password", func(_ *testing.T, _ string, o *server.Options) (NATSAuth, NATSAuth) {
			o.Users = []*server.User{{Username: "timbus", Password: "s3cret-pass"}}
			return NATSAuth{User: "timbus", Password: "s3cret-pass"}, NATSAuth{User: "timbus", Password: "wrong-pass"}
		}},
		{"token", func(_ *testing.T, _ string, o *server.Options) (NATSAuth, NATSAuth) {
			o.Authorization = "s3cret-token"
			return NATSAuth{Token: "s3cret-token"}, NATSAuth{Token: "wrong-token"}
		}},
		{"nkey", func(t *testing.T, dir string, o *server.Options) (NATSAuth, NATSAuth) {
			seed, pub := natstest.NKey(t, dir, "timbus")
			other, _ := natstest.NKey(t, dir, "stranger")
			o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
			return NATSAuth{NKeyFile: seed}, NATSAuth{NKeyFile: other}
		}},
		{"creds", func(t *testing.T, dir string, o *server.Options) (NATSAuth, NATSAuth) {
			op := natstest.NewOperator(t)
			op.Serve(t, o)
			stranger := natstest.NewOperator(t).Creds(t, dir, "stranger")
			return NATSAuth{CredsFile: op.Creds(t, dir, "timbus")}, NATSAuth{CredsFile: stranger}
		}},
		{"tls private CA", func(t *testing.T, dir string, o *server.Options) (NATSAuth, NATSAuth) {
			pki := natstest.NewPKI(t, dir)
			pki.Serve(t, o, false)
			other := natstest.NewPKI(t, t.TempDir())
			return NATSAuth{TLSCA: pki.CA}, NATSAuth{TLSCA: other.CA}
		}},
		{"mutual tls", func(t *testing.T, dir string, o *server.Options) (NATSAuth, NATSAuth) {
			pki := natstest.NewPKI(t, dir)
			pki.Serve(t, o, true)
			other := natstest.NewPKI(t, t.TempDir())
			return NATSAuth{TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey},
				NATSAuth{TLSCA: pki.CA, TLSCert: other.ClientCert, TLSKey: other.ClientKey}
		}},
	}
}

// TestNATSAuth_Kinds: the bridge authenticates with each kind of
// credential to a server demanding it, and a decider with the same kind
// decides a callback end to end; wrong credentials fail Start at once with
// the reason, instead of a bridge retrying for ever.
func TestNATSAuth_Kinds(t *testing.T) {
	for _, tc := range authCases() {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := natstest.Options()
			good, wrong := tc.setup(t, dir, opts)
			ns := natstest.RunWith(t, opts)
			url := ns.ClientURL()

			tb := startBridge(t, func(c *Config) { c.NATSURL = url; c.NATSAuth = good })
			dopts, err := good.Options()
			if err != nil {
				t.Fatal(err)
			}
			nc := natstest.Connect(t, ns, dopts...)
			const verdict = `{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":"no","SeenBy":"auth"}`
			decider(t, nc, decideOA, replyWith(verdict))
			waitFor(t, 5*time.Second, func() error {
				if got := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate)); got.status != http.StatusOK || got.body != verdict {
					return fmt.Errorf("answer %d %s, want the decider's", got.status, got.body)
				}
				return nil
			})

			cfg := DefaultConfig()
			cfg.Listen = "127.0.0.1:0"
			cfg.NATSURL = url
			cfg.Apps = []App{{ID: testApp}}
			cfg.NATSAuth = wrong
			logs := &syncBuffer{}
			cfg.Logger = zerolog.New(logs)
			b, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = b.Start(context.Background())
			if err == nil {
				_ = b.Shutdown(context.Background())
				t.Fatal("Start succeeded with wrong credentials")
			}
			if !errors.Is(err, ErrNATSAuth) || !errors.Is(err, ErrNATS) {
				t.Errorf("Start error %v does not wrap ErrNATSAuth and ErrNATS", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Start took %v to fail", d)
			}
			for _, secret := range []string{"wrong-pass", "wrong-token", "s3cret"} {
				if strings.Contains(err.Error()+strings.Join(logs.lines(), "\n"), secret) {
					t.Errorf("secret %q in %v / %s", secret, err, logs.lines())
				}
			}
			t.Logf("wrong credentials: %v", err)
		})
	}
}

// TestNATSAuth_UnreachableStillStarts: retrying for an unreachable server
// is kept, credentials or not.
func TestNATSAuth_UnreachableStillStarts(t *testing.T) {
	tb := startBridge(t, func(c *Config) {
		c.NATSURL = "nats://127.0.0.1:1"
		c.NATSAuth = NATSAuth{User: "timbus", Password: "x"}
	})
	if tb.nc == nil {
		t.Fatal("no bridge")
	}
}

func TestNATSAuth_Validate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		a    NATSAuth
		url  string
		want string // "" when valid
	}{
		{"none", NATSAuth{}, "", ""},
		{"user", NATSAuth{User: "u", Password: "p"}, "nats://h:4222", ""},
		{"two credentials", NATSAuth{Token: "t", CredsFile: file}, "", "only one"},
		{"password alone", NATSAuth{Password: "p"}, "", "nats-user"},
		{"user alone", NATSAuth{User: "u"}, "", "nats-password"},
		{"cert without key", NATSAuth{TLSCert: file}, "", "key"},
		{"key without cert", NATSAuth{TLSKey: file}, "", "certificate"},
		{"missing file", NATSAuth{CredsFile: filepath.Join(dir, "nope")}, "", "nope"},
		{"url credentials too", NATSAuth{Token: "t"}, "nats://u:pw@h:4222", "one way"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.a.Validate(tt.url)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want one saying %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "pw@") || strings.Contains(err.Error(), `"p"`) {
				t.Errorf("secret in %v", err)
			}
		})
	}
}
