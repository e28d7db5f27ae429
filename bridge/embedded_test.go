package bridge

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"
)

// shippedEmbeddedConf is the permission set deploy/ ships for --nats-config.
const shippedEmbeddedConf = "../deploy/nats/embedded.conf"

const (
	testDeciderPassword = "decider-pw-for-tests"
	testAuditorPassword = "auditor-pw-for-tests"
)

// startEmbeddedBridge runs a bridge with its own embedded server on a free
// loopback port, configured by the shipped file.
func startEmbeddedBridge(t *testing.T) *Bridge {
	t.Helper()
	t.Setenv("DECIDER_PASSWORD", testDeciderPassword)
	t.Setenv("AUDITOR_PASSWORD", testAuditorPassword)
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSListen = "127.0.0.1:0"
	cfg.NATSConfig = shippedEmbeddedConf
	cfg.Apps = []App{{ID: testApp}}
	cfg.Logger = zerolog.New(&syncBuffer{})
	return runConfig(t, cfg)
}

// permClient is a NATS client that collects the permission violations the
// server reports to it.
type permClient struct {
	*nats.Conn
	mu         sync.Mutex
	violations []string
	seen       chan struct{}
}

func connectAs(t *testing.T, url, user, password string) *permClient {
	t.Helper()
	pc := &permClient{seen: make(chan struct{}, 16)}
	nc, err := nats.Connect(url, nats.UserInfo(user, password), nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				pc.mu.Lock()
				pc.violations = append(pc.violations, err.Error())
				pc.mu.Unlock()
				pc.seen <- struct{}{}
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	pc.Conn = nc
	return pc
}

// refused waits for the server to report a violation naming subject.
func (pc *permClient) refused(t *testing.T, what, subject string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		pc.mu.Lock()
		for _, v := range pc.violations {
			if strings.Contains(v, `"`+subject+`"`) {
				pc.mu.Unlock()
				return
			}
		}
		pc.mu.Unlock()
		select {
		case <-pc.seen:
		case <-deadline:
			t.Errorf("%s: no permission violation for %s (got %v)", what, subject, pc.violations)
			return
		}
	}
}

func TestEmbeddedNATSConfigPermissions(t *testing.T) {
	b := startEmbeddedBridge(t)
	url := b.NATSURL()

	t.Run("anonymous client refused", func(t *testing.T) {
		nc, err := nats.Connect(url, nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
			t.Fatal("an anonymous client connected")
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("err = %v, want an authorization violation", err)
		}
	})

	t.Run("wrong password refused", func(t *testing.T) {
		nc, err := nats.Connect(url, nats.UserInfo("decider", "guess"), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
			t.Fatal("a wrong password was accepted")
		}
	})

	t.Run("timbus's own user cannot be logged into", func(t *testing.T) {
		conns, err := b.ns.Connz(&server.ConnzOptions{Username: true})
		if err != nil {
			t.Fatal(err)
		}
		var pub string
		for _, c := range conns.Conns {
			if c.Name == "timbus" {
				pub = c.AuthorizedUser
			}
		}
		if !strings.HasPrefix(pub, "U") {
			t.Fatalf("timbus's connection is not an NKey user: %q", pub)
		}
		// Someone who knows the public key but not the seed signs with a
		// key of their own.
		other, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(url, nats.Nkey(pub, other.Sign), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
			t.Fatal("logged in as timbus without its seed")
		}
	})

	decider := connectAs(t, url, "decider", testDeciderPassword)
	auditor := connectAs(t, url, "auditor", testAuditorPassword)
	audits, err := auditor.SubscribeSync("timbus.audit." + testApp + ".>")
	if err != nil {
		t.Fatal(err)
	}
	fakes, err := auditor.SubscribeSync("timbus.*.fake.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := auditor.Flush(); err != nil {
		t.Fatal(err)
	}

	t.Run("decider decides a callback", func(t *testing.T) {
		var got sync.Map
		sub, err := decider.QueueSubscribe("timbus.decide.>", "deciders", func(m *nats.Msg) {
			got.Store("reply", m.Reply)
			_ = m.Respond([]byte(oaCreateDeny))
		})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := decider.Flush(); err != nil {
			t.Fatal(err)
		}
		ans := post(t, "http://"+b.Addr()+"/?SdkAppid="+testApp+"&CallbackCommand="+oaCreate+"&contenttype=json", sample(t, oaCreate))
		if ans.status != 200 || ans.body != oaCreateDeny {
			t.Fatalf("answer = %d %s, want the decider's %s", ans.status, ans.body, oaCreateDeny)
		}
		if _, ok := got.Load("reply"); !ok {
			t.Fatal("the decider was not asked")
		}
	})

	t.Run("auditor reads audit records", func(t *testing.T) {
		m, err := audits.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no audit record: %v", err)
		}
		if !strings.Contains(string(m.Data), oaCreate) {
			t.Errorf("audit record = %s", m.Data)
		}
	})

	t.Run("decider cannot publish events, audit records or foreign replies", func(t *testing.T) {
		// A subscriber (the auditor, on its own test subjects) sees nothing.
		victim, err := auditor.SubscribeSync("_INBOX.victim")
		if err != nil {
			t.Fatal(err)
		}
		if err := auditor.Flush(); err != nil {
			t.Fatal(err)
		}
		for _, subject := range []string{"timbus.event.fake." + testApp, "timbus.audit.fake." + testApp, "_INBOX.victim"} {
			if err := decider.Publish(subject, []byte(allowAnswer)); err != nil {
				t.Fatal(err)
			}
			decider.refused(t, "decider publish", subject)
		}
		if err := auditor.Flush(); err != nil {
			t.Fatal(err)
		}
		for _, sub := range []*nats.Subscription{fakes, victim} {
			if m, err := sub.NextMsg(0); err == nil {
				t.Errorf("a forged message got through on %s", m.Subject)
			}
		}
	})

	t.Run("auditor cannot hear requests nor ask deciders", func(t *testing.T) {
		if _, err := auditor.SubscribeSync("timbus.decide.>"); err != nil {
			t.Fatal(err)
		}
		auditor.refused(t, "auditor subscribe", "timbus.decide.>")
		if err := auditor.PublishRequest(decideOA, "_INBOX.auditor", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		auditor.refused(t, "auditor request", decideOA)
	})
}

func TestEmbeddedNATSSafeByDefault(t *testing.T) {
	dir := t.TempDir()
	withUsers := filepath.Join(dir, "users.conf")
	if err := os.WriteFile(withUsers, []byte("authorization { users: [{user: a, password: b}] }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fileListen := filepath.Join(dir, "listen.conf")
	if err := os.WriteFile(fileListen, []byte("listen: 0.0.0.0:4333\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		listen, config string
		want           error
	}{
		{"127.0.0.1:0", "", nil},
		{"localhost:4222", "", nil},
		{"[::1]:0", "", nil},
		{"0.0.0.0:0", "", ErrUnsafe},
		{"[::]:4222", "", ErrUnsafe},
		{":4222", "", ErrUnsafe},
		{"192.168.1.10:4222", "", ErrUnsafe},
		{"0.0.0.0:0", withUsers, nil},
		// The file's listen counts, and it has no users.
		{"", fileListen, ErrUnsafe},
		// Two different addresses for the same server.
		{"127.0.0.1:5000", fileListen, ErrInvalidValue},
	}
	for _, tt := range tests {
		t.Run(tt.listen+" "+filepath.Base(tt.config), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Apps = []App{{ID: testApp}}
			cfg.NATSListen = tt.listen
			cfg.NATSConfig = tt.config
			err := cfg.Validate()
			if !errors.Is(err, tt.want) {
				t.Fatalf("Validate = %v, want %v", err, tt.want)
			}
			if errors.Is(err, ErrUnsafe) && !strings.Contains(err.Error(), "127.0.0.1") {
				t.Errorf("the error does not name the fix: %v", err)
			}
		})
	}
}
