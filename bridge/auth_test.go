package bridge

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The example from Tencent's documentation.
const (
	docToken = "xxxxyyyy"
	docTime  = 1669872112
	docSign  = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
)

func TestSigner_Check(t *testing.T) {
	at := func(d time.Duration) func() time.Time {
		return func() time.Time { return time.Unix(docTime, 0).Add(d) }
	}
	tests := []struct {
		name   string
		token  string
		now    func() time.Time
		sign   string
		time   string
		reason string // "" when accepted
	}{
		{"documented example", docToken, at(0), docSign, "1669872112", ""},
		{"upper-case hex", docToken, at(0), strings.ToUpper(docSign), "1669872112", ""},
		{"59s later", docToken, at(59 * time.Second), docSign, "1669872112", ""},
		{"replayed 61s later", docToken, at(61 * time.Second), docSign, "1669872112", "stale_request_time"},
		{"replayed a day later", docToken, at(24 * time.Hour), docSign, "1669872112", "stale_request_time"},
		{"from the future", docToken, at(-61 * time.Second), docSign, "1669872112", "stale_request_time"},
		{"the old docs' typo token", "xxxyyy", at(0), docSign, "1669872112", "bad_signature"},
		{"other time, same sign", docToken, at(0), docSign, "1669872113", "bad_signature"},
		{"truncated sign", docToken, at(0), docSign[:63], "1669872112", "bad_signature"},
		{"no sign", docToken, at(0), "", "1669872112", "missing_signature"},
		{"no time", docToken, at(0), docSign, "", "missing_signature"},
		{"time not a number", docToken, at(0), docSign, "2022-12-01", "bad_request_time"},
		{"time in milliseconds", docToken, at(0), docSign, "1669872112000", "stale_request_time"},
		{"huge time", docToken, at(0), docSign, "99999999999999999999999", "bad_request_time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &signer{token: []byte(tt.token), window: time.Minute, now: tt.now}
			err := s.check([]byte(tt.sign), []byte(tt.time))
			switch {
			case tt.reason == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.reason != "" && (err == nil || err.reason != tt.reason):
				t.Errorf("err = %v, want %s", err, tt.reason)
			}
		})
	}
}

func TestSigner_CheckDoesNotAllocate(t *testing.T) {
	s := &signer{token: []byte(docToken), window: time.Minute, now: func() time.Time { return time.Unix(docTime, 0) }}
	sign, rt := []byte(docSign), []byte("1669872112")
	if n := testing.AllocsPerRun(100, func() { _ = s.check(sign, rt) }); n != 0 {
		t.Errorf("%v allocations per check", n)
	}
}

// TestBridge_Authentication: through the real bridge, a signed request is
// decided and every unsigned, stale or forged one gets 401 and reaches no one.
func TestBridge_Authentication(t *testing.T) {
	tb := startBridge(t, func(c *Config) {
		c.Token = docToken
		c.Apps = []App{{ID: testApp}, {ID: "1400000002", Token: "other-token"}, {ID: "1400000003"}}
		c.now = func() time.Time { return time.Unix(docTime+5, 0) }
	})
	decider(t, tb.nc, "timbus.decide.*."+oaCreate, replyWith(oaCreateDeny))
	body := sample(t, oaCreate)
	signed := func(app, sign, rt string) string {
		return tb.base + "/?SdkAppid=" + app + "&CallbackCommand=" + oaCreate + "&contenttype=json&Sign=" + sign + "&RequestTime=" + rt
	}
	if got := post(t, signed(testApp, docSign, "1669872112"), body); got.status != 200 || got.body != oaCreateDeny {
		t.Fatalf("signed request: %d %s", got.status, got.body)
	}
	all := subscribe(t, tb.nc, "timbus.>")
	for _, tt := range []struct {
		name, url, reason string
	}{
		{"unsigned", tb.callbackURL(oaCreate), "missing_signature"},
		{"forged", signed(testApp, strings.Repeat("0", 64), "1669872112"), "bad_signature"},
		{"replayed", signed(testApp, "a8b3d1b1f0f4c1f3fbc5c62fb8a38bd2d8c6ad1a8d46e6df1f0a55a5a3b1d6f1", "1669870000"), "stale_request_time"},
		{"another app's token", signed("1400000002", docSign, "1669872112"), "bad_signature"},
	} {
		got := post(t, tt.url, body)
		if got.status != http.StatusUnauthorized || !strings.Contains(got.body, `"Reason":"`+tt.reason+`"`) {
			t.Errorf("%s: %d %s, want 401 %s", tt.name, got.status, got.body, tt.reason)
		}
	}
	all.quiet(t, tb.nc, "timbus.marker")

	// 1400000003 has no token of its own, so the bridge-wide one applies.
	if got := post(t, signed("1400000003", docSign, "1669872112"), body); got.body != oaCreateDeny {
		t.Errorf("app under the shared token: %d %s", got.status, got.body)
	}
}

func TestSourceFilter_Client(t *testing.T) {
	allow, _ := parsePrefixes([]string{"10.0.0.0/8"})
	proxies, _ := parsePrefixes([]string{"192.168.1.10", "192.168.2.0/24"})
	f := &sourceFilter{allow: allow, proxies: proxies, header: []byte("X-Forwarded-For")}
	tests := []struct {
		peer, header, client string
	}{
		{"10.1.1.1", "", "10.1.1.1"},
		{"10.1.1.1", "203.0.113.9", "10.1.1.1"},               // not a proxy: header ignored
		{"203.0.113.9", "10.1.1.1", "203.0.113.9"},            // forged header from outside
		{"192.168.1.10", "10.1.1.1", "10.1.1.1"},              // one trusted proxy
		{"192.168.1.10", "1.2.3.4, 10.1.1.1", "10.1.1.1"},     // client-supplied left part ignored
		{"192.168.1.10", "10.1.1.1, 192.168.2.5", "10.1.1.1"}, // two proxies
		{"192.168.1.10", "", "192.168.1.10"},
		{"192.168.1.10", "garbage", "invalid IP"},
		{"::ffff:10.1.1.1", "", "10.1.1.1"},
	}
	for _, tt := range tests {
		got := f.client(net.ParseIP(tt.peer), func([]byte) []byte { return []byte(tt.header) })
		if got.String() != tt.client {
			t.Errorf("peer %s header %q: client %s, want %s", tt.peer, tt.header, got, tt.client)
		}
	}
}

func TestBridge_SourceAllowlist(t *testing.T) {
	tests := []struct {
		name    string
		proxies []string
		header  string
		status  int
	}{
		{"loopback not allowed", nil, "", 403},
		{"header from an untrusted peer is ignored", nil, "10.9.9.9", 403},
		{"trusted proxy reports an allowed client", []string{"127.0.0.1"}, "10.9.9.9", 200},
		{"trusted proxy reports another client", []string{"127.0.0.1"}, "203.0.113.1", 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := startBridge(t, func(c *Config) {
				c.AllowCIDRs = []string{"10.0.0.0/8"}
				c.TrustedProxies = tt.proxies
			})
			req, _ := http.NewRequest("POST", tb.callbackURL(oaCreate), strings.NewReader(string(sample(t, oaCreate))))
			if tt.header != "" {
				req.Header.Set("X-Forwarded-For", tt.header)
			}
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
}

func TestBridge_HeaderTooLarge(t *testing.T) {
	tb := startBridge(t, func(c *Config) { c.MaxHeaderSize = 4096 })
	req, _ := http.NewRequest("POST", tb.callbackURL(oaCreate), strings.NewReader("{}"))
	req.Header.Set("X-Padding", strings.Repeat("p", 8000))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", resp.StatusCode)
	}
}
