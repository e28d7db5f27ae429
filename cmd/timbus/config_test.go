package main

import (
	"context"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/timbus-dev/timbus/bridge"
)

// settings is the part of a resolved configuration the precedence tests
// compare.
type settings struct {
	Listen, Path, NATSURL, NATSListen, Apps, Default, Prefix, LogLevel, LogFormat string
	Timeout, ReadTimeout, WriteTimeout, IdleTimeout                               time.Duration
	MaxBodySize                                                                   int
}

func settingsOf(c *serveConfig) settings {
	ids := make([]string, len(c.bridge.Apps))
	for i, app := range c.bridge.Apps {
		ids[i] = app.ID
	}
	return settings{
		Listen: c.bridge.Listen, Path: c.bridge.Path, NATSURL: c.bridge.NATSURL, NATSListen: c.bridge.NATSListen,
		Apps: strings.Join(ids, ","), Default: c.bridge.Default.String(), Prefix: c.bridge.SubjectPrefix,
		LogLevel: c.logLevel, LogFormat: c.logFormat,
		Timeout: c.bridge.Timeout, ReadTimeout: c.bridge.ReadTimeout, WriteTimeout: c.bridge.WriteTimeout, IdleTimeout: c.bridge.IdleTimeout,
		MaxBodySize: c.bridge.MaxBodySize,
	}
}

// defaults are the documented defaults, spelt out rather than read from the
// code under test.
func defaults() settings {
	d := bridge.DefaultConfig()
	return settings{
		Listen: ":8080", Path: "/", NATSURL: "", NATSListen: "127.0.0.1:4222",
		Default: "allow", Prefix: "timbus", LogLevel: "info", LogFormat: "json",
		Timeout: 1500 * time.Millisecond, MaxBodySize: 1 << 20,
		ReadTimeout: d.ReadTimeout, WriteTimeout: d.WriteTimeout, IdleTimeout: d.IdleTimeout,
	}
}

func TestServeConfigPrecedence(t *testing.T) {
	const layered = "listen: 127.0.0.1:9000\ntimeout: 800ms\nlog-level: warn\nsdkappid: 1\n"
	tests := []struct {
		name    string
		file    string // given by --config when not empty
		envFile string // given by TIMBUS_CONFIG when not empty
		env     map[string]string
		args    []string
		want    func(*settings)
	}{
		{
			name: "defaults",
			args: []string{"--sdkappid", "1"},
			want: func(s *settings) { s.Apps = "1" },
		},
		{
			name: "file beats default",
			file: "listen: 127.0.0.1:9000\npath: /im\nnats-url: nats://n1:4222\nnats-listen: 127.0.0.1:4333\nsdkappid: 1\n" +
				"timeout: 800ms\ndefault: deny\nsubject-prefix: acme.im\nlog-level: debug\nlog-format: console\n" +
				"max-body-size: 4096\nread-timeout: 1s\nwrite-timeout: 2s\nidle-timeout: 3s\n",
			want: func(s *settings) {
				*s = settings{
					Listen: "127.0.0.1:9000", Path: "/im", NATSURL: "nats://n1:4222", NATSListen: "127.0.0.1:4333", Apps: "1",
					Timeout: 800 * time.Millisecond, Default: "deny", Prefix: "acme.im", LogLevel: "debug", LogFormat: "console",
					MaxBodySize: 4096, ReadTimeout: time.Second, WriteTimeout: 2 * time.Second, IdleTimeout: 3 * time.Second,
				}
			},
		},
		{
			name: "env beats file",
			file: layered,
			env:  map[string]string{"TIMBUS_LISTEN": "127.0.0.1:9001", "TIMBUS_TIMEOUT": "900ms", "TIMBUS_SDKAPPID": "2", "TIMBUS_DEFAULT": "1:closed"},
			want: func(s *settings) {
				s.Listen, s.Timeout, s.LogLevel, s.Apps, s.Default = "127.0.0.1:9001", 900*time.Millisecond, "warn", "2", "1:closed"
			},
		},
		{
			name: "flag beats env",
			file: layered,
			env:  map[string]string{"TIMBUS_LISTEN": "127.0.0.1:9001", "TIMBUS_TIMEOUT": "900ms", "TIMBUS_LOG_LEVEL": "error"},
			args: []string{"--listen", "127.0.0.1:9002", "--timeout=1s", "-log-level", "debug"},
			want: func(s *settings) {
				s.Listen, s.Timeout, s.LogLevel, s.Apps = "127.0.0.1:9002", time.Second, "debug", "1"
			},
		},
		{
			name: "each setting from its highest layer",
			file: "listen: 127.0.0.1:9000\npath: /file\nsubject-prefix: file\nsdkappid: 1\n",
			env:  map[string]string{"TIMBUS_LISTEN": "127.0.0.1:9001", "TIMBUS_PATH": "/env"},
			args: []string{"--listen", "127.0.0.1:9002"},
			want: func(s *settings) { s.Listen, s.Path, s.Prefix, s.Apps = "127.0.0.1:9002", "/env", "file", "1" },
		},
		{
			name: "empty env variable is unset",
			file: "log-format: console\nsdkappid: 1\n",
			env:  map[string]string{"TIMBUS_LOG_FORMAT": ""},
			want: func(s *settings) { s.LogFormat, s.Apps = "console", "1" },
		},
		{
			name:    "config file from the environment",
			envFile: "listen: 127.0.0.1:9003\nsdkappid: 1\n",
			want:    func(s *settings) { s.Listen, s.Apps = "127.0.0.1:9003", "1" },
		},
		{
			name:    "--config beats TIMBUS_CONFIG",
			file:    "listen: 127.0.0.1:9004\nsdkappid: 1\n",
			envFile: "listen: 127.0.0.1:9003\npath: /ignored\nsdkappid: 1\n",
			want:    func(s *settings) { s.Listen, s.Apps = "127.0.0.1:9004", "1" },
		},
		{
			name: "comma lists",
			args: []string{"--sdkappid", " 1, 2,,3 ", "--nats-url", "nats://a:4222, nats://b:4222"},
			want: func(s *settings) { s.Apps, s.NATSURL = "1,2,3", "nats://a:4222,nats://b:4222" },
		},
		{
			name: "repeated list flag adds",
			args: []string{"--sdkappid", "1", "--sdkappid", "2,3"},
			want: func(s *settings) { s.Apps = "1,2,3" },
		},
		{
			name: "comma list from env",
			env:  map[string]string{"TIMBUS_SDKAPPID": "1,2"},
			want: func(s *settings) { s.Apps = "1,2" },
		},
		{
			name: "YAML lists",
			file: "sdkappid: [1, 2]\nnats-url:\n  - nats://a:4222\n  - nats://b:4222\n",
			want: func(s *settings) { s.Apps, s.NATSURL = "1,2", "nats://a:4222,nats://b:4222" },
		},
		{
			name: "comma-separated string in YAML",
			file: "sdkappid: \"1, 2\"\nnats-url: nats://a:4222,nats://b:4222\n",
			want: func(s *settings) { s.Apps, s.NATSURL = "1,2", "nats://a:4222,nats://b:4222" },
		},
		{
			name: "flag list replaces file list",
			file: "sdkappid: [1, 2]\n",
			args: []string{"--sdkappid", "3"},
			want: func(s *settings) { s.Apps = "3" },
		},
		{
			name: "null in the file sets empty",
			file: "nats-url:\nsdkappid: 1\n",
			env:  map[string]string{},
			want: func(s *settings) { s.Apps = "1" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeFile(t, "timbus.yaml", tt.file)}, args...)
			}
			if tt.envFile != "" {
				t.Setenv("TIMBUS_CONFIG", writeFile(t, "env.yaml", tt.envFile))
			}
			cfg, err := loadServeConfig(args, os.LookupEnv)
			if err != nil {
				t.Fatalf("loadServeConfig: %v", err)
			}
			want := defaults()
			tt.want(&want)
			if got := settingsOf(cfg); got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
			if _, err := bridge.New(cfg.bridge); err != nil {
				t.Errorf("the bridge refuses the configuration: %v", err)
			}
		})
	}
}

func TestServeConfigFileSections(t *testing.T) {
	clearEnv(t)
	file := writeFile(t, "timbus.yaml", `
sdkappid: 1400000009
apps:
  - sdkappid: 1400000001
    default: deny
  - sdkappid: 1400000002
commands:
  Group.CallbackBeforeSendMsg:
    timeout: 300ms
    default: "10101:spam"
    fire_and_forget: true
  C2C.CallbackBeforeSendMsg:
    default: allow
`)
	// --sdkappid replaces the file's sdkappid key, but the apps section is
	// merged with it: 1400000001 keeps its default and is not listed twice.
	cfg, err := loadServeConfig([]string{"--config", file, "--sdkappid", "1400000001,1400000003"}, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	deny := bridge.Deny
	wantApps := []bridge.App{{ID: "1400000001", Default: &deny}, {ID: "1400000002"}, {ID: "1400000003"}}
	if !reflect.DeepEqual(cfg.bridge.Apps, wantApps) {
		t.Errorf("apps = %+v, want %+v", cfg.bridge.Apps, wantApps)
	}
	spam, allow := bridge.Verdict{Code: 10101, Info: "spam"}, bridge.Allow
	wantCommands := map[string]bridge.CommandConfig{
		"Group.CallbackBeforeSendMsg": {Timeout: 300 * time.Millisecond, Default: &spam, FireAndForget: true},
		"C2C.CallbackBeforeSendMsg":   {Default: &allow},
	}
	if !reflect.DeepEqual(cfg.bridge.Commands, wantCommands) {
		t.Errorf("commands = %+v, want %+v", cfg.bridge.Commands, wantCommands)
	}
	if _, err := bridge.New(cfg.bridge); err != nil {
		t.Errorf("the bridge refuses the configuration: %v", err)
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		args []string
		want []string // all must appear in stderr
	}{
		{
			name: "no sdkappid",
			want: []string{"--sdkappid", "TIMBUS_SDKAPPID", "sdkappid key", "--config"},
		},
		{
			name: "empty sdkappid list",
			args: []string{"--sdkappid", " , "},
			want: []string{"--sdkappid", "TIMBUS_SDKAPPID", "sdkappid key"},
		},
		{
			name: "sdkappid not a number",
			args: []string{"--sdkappid", "1400000001,app"},
			want: []string{"sdkappid=app", "decimal number"},
		},
		{
			name: "timeout at Tencent's deadline, by flag",
			args: []string{"--sdkappid", "1", "--timeout", "2s"},
			want: []string{"timeout=2s", "--timeout", "Tencent's own 2s deadline"},
		},
		{
			name: "timeout past Tencent's deadline, by env",
			env:  map[string]string{"TIMBUS_TIMEOUT": "3s"},
			args: []string{"--sdkappid", "1"},
			want: []string{"timeout=3s", "TIMBUS_TIMEOUT", "2s deadline"},
		},
		{
			name: "timeout past Tencent's deadline, in the file",
			file: "timeout: 5s\nsdkappid: 1\n",
			want: []string{"timeout=5s", `key "timeout" in`, "2s deadline"},
		},
		{
			name: "command timeout past Tencent's deadline",
			file: "sdkappid: 1\ncommands:\n  Group.CallbackBeforeSendMsg:\n    timeout: 2500ms\n",
			want: []string{"commands.Group.CallbackBeforeSendMsg.timeout=2.5s", "timbus.yaml", "2s deadline"},
		},
		{
			name: "timeout without unit",
			args: []string{"--sdkappid", "1", "--timeout", "1500"},
			want: []string{`invalid timeout "1500" (from --timeout)`, "Go duration"},
		},
		{
			name: "default not a verdict",
			args: []string{"--sdkappid", "1", "--default", "maybe"},
			want: []string{`invalid default "maybe" (from --default)`, "allow, deny, <code> or <code>:<info>"},
		},
		{
			name: "default some command cannot answer",
			args: []string{"--sdkappid", "1", "--default", "120005"},
			want: []string{"default=120005 (from --default)", "accepts ErrorCode"},
		},
		{
			name: "app default in the file not a verdict",
			file: "apps:\n  - sdkappid: 1\n    default: perhaps\n",
			want: []string{"timbus.yaml", `"perhaps"`},
		},
		{
			name: "bad log level",
			args: []string{"--sdkappid", "1", "--log-level", "verbose"},
			want: []string{`invalid log-level "verbose"`, "debug, info, warn, error"},
		},
		{
			name: "bad log format",
			env:  map[string]string{"TIMBUS_LOG_FORMAT": "text"},
			args: []string{"--sdkappid", "1"},
			want: []string{`invalid log-format "text" (from TIMBUS_LOG_FORMAT)`},
		},
		{
			name: "body size not a number",
			args: []string{"--sdkappid", "1", "--max-body-size", "1MiB"},
			want: []string{`invalid max-body-size "1MiB"`},
		},
		{
			name: "unknown key in the file",
			file: "sdkappid: 1\nnats_url: nats://a:4222\ncolour: blue\n",
			want: []string{`unknown key "nats_url" (did you mean "nats-url"?)`, `unknown key "colour"`},
		},
		{
			name: "unknown key inside commands",
			file: "sdkappid: 1\ncommands:\n  Group.CallbackBeforeSendMsg:\n    fire-and-forget: true\n",
			want: []string{"fire-and-forget"},
		},
		{
			name: "list for a single value",
			file: "sdkappid: 1\ntimeout: [1s]\n",
			want: []string{`key "timeout"`, "single value"},
		},
		{
			name: "nested list item",
			file: "sdkappid: [[1]]\n",
			want: []string{`key "sdkappid"`, "single value"},
		},
		{
			name: "file is not YAML",
			file: "sdkappid: [1\n",
			want: []string{"config file", "timbus.yaml"},
		},
		{
			name: "missing file",
			args: []string{"--config", "/nonexistent/timbus.yaml", "--sdkappid", "1"},
			want: []string{"/nonexistent/timbus.yaml"},
		},
		{
			name: "unknown flag",
			args: []string{"--sdkappid", "1", "--colour", "blue"},
			want: []string{"-colour"},
		},
		{
			name: "positional argument",
			args: []string{"--sdkappid", "1", "now"},
			want: []string{`unexpected argument "now"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			args := append([]string{"serve", "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0"}, tt.args...)
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, "timbus.yaml", tt.file))
			}
			// Cancelled, so that a configuration wrongly accepted fails Start
			// (exit 1) instead of serving.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			code, stdout, stderr := runTimbus(t, ctx, args...)
			if code != exitUsage {
				t.Errorf("exit code = %d, want %d", code, exitUsage)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, stderr)
				}
			}
		})
	}
}

func TestServeHelp(t *testing.T) {
	clearEnv(t)
	code, stdout, stderr := runTimbus(t, context.Background(), "serve", "--help")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	for _, name := range append([]string{configOption}, optionNames()...) {
		if !strings.Contains(stdout, "--"+name+" ") || !strings.Contains(stdout, "["+envName(name)+"]") {
			t.Errorf("help does not document --%s with %s", name, envName(name))
		}
	}
	for _, w := range []string{"flag beats the environment variable, which beats the file, which beats the", "apps:", "commands:", "fire_and_forget"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("help does not mention %q", w)
		}
	}
}

// optionNames are the flags other tools rely on; renaming one breaks them.
func optionNames() []string {
	return []string{
		"listen", "path", "nats-url",
		"nats-creds", "nats-nkey", "nats-user", "nats-password", "nats-token", "nats-tls-ca", "nats-tls-cert", "nats-tls-key",
		"nats-listen", "sdkappid", "timeout", "default",
		"subject-prefix", "token", "sign-window", "allow-cidr", "trusted-proxy", "proxy-header", "shadow-prefix", "nats-store", "nats-config", "audit-stream", "events-stream", "tls-cert", "tls-key", "tls-client-ca", "metrics-listen", "require-deciders", "drain-delay", "max-inflight", "breaker", "breaker-window", "breaker-min-requests", "breaker-failure-ratio", "breaker-cooldown", "log-level", "log-format", "log-callbacks", "decide-headers", "max-body-size", "max-header-size", "read-timeout", "write-timeout", "idle-timeout", "max-conns", "max-conns-per-ip",
	}
}

func TestServeOptionsAreTheDocumentedFlags(t *testing.T) {
	var got []string
	for _, opt := range serveOptions {
		got = append(got, opt.name)
	}
	if !reflect.DeepEqual(got, optionNames()) {
		t.Errorf("serve options = %q, want %q", got, optionNames())
	}
	if got := envName("nats-url"); got != "TIMBUS_NATS_URL" {
		t.Errorf("envName(nats-url) = %q", got)
	}
}

// TestServeConfigOperations covers the production settings: bare boolean
// flags, numbers and durations from each layer, and the streams section.
func TestServeConfigOperations(t *testing.T) {
	clearEnv(t)
	t.Setenv("TIMBUS_MAX_INFLIGHT", "500")
	t.Setenv("TIMBUS_BREAKER", "true")
	file := writeFile(t, "timbus.yaml", "sdkappid: 1\nbreaker-cooldown: 7s\nrequire-deciders: false\n"+
		"nats-url: nats://n:4222\naudit-stream: AUDIT\nstreams:\n  audit: {max_age: 48h, replicas: 3}\n")
	cfg, err := loadServeConfig([]string{"--config", file, "--require-deciders", "--drain-delay", "3s",
		"--breaker-failure-ratio", "0.25", "--metrics-listen", "127.0.0.1:9100", "--shadow-prefix", "v2"}, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.bridge
	if !b.RequireDeciders || b.DrainDelay != 3*time.Second || b.MaxInflight != 500 || !b.Breaker.Enabled ||
		b.Breaker.Cooldown != 7*time.Second || b.Breaker.FailureRatio != 0.25 || b.Breaker.Window != 10*time.Second ||
		b.MetricsListen != "127.0.0.1:9100" || b.ShadowPrefix != "v2" {
		t.Errorf("settings: %+v", b)
	}
	if b.AuditStream.Name != "AUDIT" || b.AuditStream.MaxAge != 48*time.Hour || b.AuditStream.Replicas != 3 {
		t.Errorf("audit stream: %+v", b.AuditStream)
	}
	if _, err := bridge.New(b); err != nil {
		t.Errorf("the bridge refuses the configuration: %v", err)
	}
	for _, bad := range [][]string{
		{"--sdkappid", "1", "--max-inflight", "many"},
		{"--sdkappid", "1", "--require-deciders=maybe"},
		{"--sdkappid", "1", "--breaker-failure-ratio", "x"},
	} {
		if _, err := loadServeConfig(bad, os.LookupEnv); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestServeConfigRequireDeciders: --require-deciders takes true, false or
// commands by name; the bridge refuses names no decider can answer.
func TestServeConfigRequireDeciders(t *testing.T) {
	clearEnv(t)
	tests := []struct {
		args     []string
		env      string
		all      bool
		commands []string
		bridgeOK bool
	}{
		{args: []string{"--require-deciders"}, all: true, bridgeOK: true},
		{args: []string{"--require-deciders=false"}, bridgeOK: true},
		{args: []string{"--require-deciders=Group.CallbackBeforeSendMsg,C2C.CallbackBeforeSendMsg"},
			commands: []string{"Group.CallbackBeforeSendMsg", "C2C.CallbackBeforeSendMsg"}, bridgeOK: true},
		{env: "true,Group.CallbackBeforeSendMsg", all: true, commands: []string{"Group.CallbackBeforeSendMsg"}, bridgeOK: true},
		// An after command has no decider; an invented one is not the operator's.
		{args: []string{"--require-deciders=Group.CallbackAfterSendMsg"}, commands: []string{"Group.CallbackAfterSendMsg"}},
		{args: []string{"--require-deciders=Fam.CallbackBeforeX"}, commands: []string{"Fam.CallbackBeforeX"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " ")+tt.env, func(t *testing.T) {
			t.Setenv("TIMBUS_REQUIRE_DECIDERS", tt.env)
			cfg, err := loadServeConfig(append([]string{"--sdkappid", "1"}, tt.args...), os.LookupEnv)
			if err != nil {
				t.Fatal(err)
			}
			b := cfg.bridge
			if b.RequireDeciders != tt.all || !slices.Equal(b.RequiredCommands, tt.commands) {
				t.Errorf("RequireDeciders %v, RequiredCommands %q", b.RequireDeciders, b.RequiredCommands)
			}
			if _, err := bridge.New(b); (err == nil) != tt.bridgeOK {
				t.Errorf("bridge.New: %v", err)
			}
		})
	}
}
