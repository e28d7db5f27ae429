package bridge

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfig_Validate(t *testing.T) {
	deny := Deny
	custom := Verdict{Code: 120005, Info: "busy"}
	groupCustom := Verdict{Code: 10150}
	tests := []struct {
		name   string
		mutate func(*Config)
		err    error
		field  string
	}{
		{"defaults with an app", func(*Config) {}, nil, ""},
		{"no app", func(c *Config) { c.Apps = nil }, ErrNoApps, "sdkappid"},
		{"SdkAppid not a number", func(c *Config) { c.Apps = []App{{ID: "abc"}} }, ErrInvalidValue, "sdkappid"},
		{"SdkAppid twice", func(c *Config) { c.Apps = []App{{ID: "1"}, {ID: "1"}} }, ErrInvalidValue, "sdkappid"},
		{"timeout at Tencent's deadline", func(c *Config) { c.Timeout = 2 * time.Second }, ErrInvalidTimeout, "timeout"},
		{"timeout past Tencent's deadline", func(c *Config) { c.Timeout = 5 * time.Second }, ErrInvalidTimeout, "timeout"},
		{"zero timeout", func(c *Config) { c.Timeout = 0 }, ErrInvalidTimeout, "timeout"},
		{"timeout just under", func(c *Config) { c.Timeout = 1999 * time.Millisecond }, nil, ""},
		{"per-command timeout too long", func(c *Config) {
			c.Commands = map[string]CommandConfig{"Group.CallbackBeforeSendMsg": {Timeout: 3 * time.Second}}
		}, ErrInvalidTimeout, "commands.Group.CallbackBeforeSendMsg.timeout"},
		{"path without slash", func(c *Config) { c.Path = "callback" }, ErrInvalidValue, "path"},
		{"empty listen", func(c *Config) { c.Listen = "" }, ErrMissing, "listen"},
		{"no NATS at all", func(c *Config) { c.NATSListen = "" }, ErrMissing, "nats-listen"},
		{"prefix with wildcard", func(c *Config) { c.SubjectPrefix = "tim.*" }, ErrInvalidValue, "subject-prefix"},
		{"prefix with empty token", func(c *Config) { c.SubjectPrefix = "a..b" }, ErrInvalidValue, "subject-prefix"},
		{"dotted prefix", func(c *Config) { c.SubjectPrefix = "prod.timbus" }, nil, ""},
		{"decide headers all", func(c *Config) { c.DecideHeaders = DecideHeadersAll }, nil, ""},
		{"decide headers unknown", func(c *Config) { c.DecideHeaders = "some" }, ErrInvalidValue, "decide-headers"},
		{"default deny", func(c *Config) { c.Default = Deny }, nil, ""},
		{"custom default valid for some commands only", func(c *Config) { c.Default = custom }, ErrInvalidVerdict, "default"},
		{"custom default for its command", func(c *Config) {
			c.Commands = map[string]CommandConfig{"OfficialAccount.CallbackBeforeCreateOfficialAccount": {Default: &custom}}
		}, nil, ""},
		{"group code for an OfficialAccount command", func(c *Config) {
			c.Commands = map[string]CommandConfig{"OfficialAccount.CallbackBeforeCreateOfficialAccount": {Default: &groupCustom}}
		}, ErrInvalidVerdict, "commands.OfficialAccount.CallbackBeforeCreateOfficialAccount.default"},
		{"app default", func(c *Config) { c.Apps = []App{{ID: "1", Default: &deny}} }, nil, ""},
		{"bad command name", func(c *Config) { c.Commands = map[string]CommandConfig{"Group.>": {}} }, ErrInvalidValue, "commands.Group.>"},
		{"zero body limit", func(c *Config) { c.MaxBodySize = 0 }, ErrInvalidValue, "max-body-size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Apps = []App{{ID: testApp}}
			tt.mutate(&cfg)
			err := cfg.Validate()
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err == nil {
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.field {
				t.Errorf("err = %v, want a ConfigError on %q", err, tt.field)
			}
			if _, err := New(cfg); err == nil {
				t.Error("New accepted a config Validate refuses")
			}
		})
	}
}

func TestConfig_TimeoutMessageNamesTencent(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Apps = []App{{ID: testApp}}
	cfg.Timeout = 2 * time.Second
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Tencent") {
		t.Errorf("err = %v, want it to explain Tencent's deadline", err)
	}
}

func TestParseVerdict(t *testing.T) {
	tests := []struct {
		in   string
		want Verdict
		err  bool
	}{
		{"allow", Allow, false},
		{"ALLOW", Allow, false},
		{" deny ", Deny, false},
		{"120005", Verdict{Code: 120005}, false},
		{"120005:name reserved", Verdict{Code: 120005, Info: "name reserved"}, false},
		{"10100:a:b", Verdict{Code: 10100, Info: "a:b"}, false},
		{"maybe", Verdict{}, true},
		{"", Verdict{}, true},
	}
	for _, tt := range tests {
		got, err := ParseVerdict(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseVerdict(%q) = %v, %v", tt.in, got, err)
		}
		if err == nil {
			back, _ := ParseVerdict(got.String())
			if back != got {
				t.Errorf("%v does not survive String and back: %v", got, back)
			}
		}
	}
}

func TestVerdict_Answer(t *testing.T) {
	got := string(Verdict{Code: 120005, Info: `say "no"`}.answer())
	if want := `{"ActionStatus":"OK","ErrorInfo":"say \"no\"","ErrorCode":120005}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
