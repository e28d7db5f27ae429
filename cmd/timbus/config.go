package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/timbus-dev/timbus/bridge"
	"github.com/timbus-dev/timbus/deciders/catalog"
)

// serveConfig is everything "timbus serve" needs, resolved from its layers:
// flag, then environment, then config file, then default.
type serveConfig struct {
	bridge    bridge.Config
	appIDs    []string // --sdkappid; merged with the file's apps into bridge.Apps
	logLevel  string
	logFormat string

	// file is the config file's path, or "" when there is none.
	file string
	// from names where each setting given by the user came from, by option
	// name, so that an error the bridge finds later can point at it.
	from map[string]string
}

func defaultServeConfig() *serveConfig {
	return &serveConfig{
		bridge:    bridge.DefaultConfig(),
		logLevel:  "info",
		logFormat: "json",
		from:      map[string]string{},
	}
}

// option is one setting of "timbus serve". Its name is at once the flag, the
// config file key and, through envName, the environment variable, so the
// three can never drift apart.
//
// Why not github.com/peterbourgon/ff/v3 or github.com/knadh/koanf/v2: the
// layering is the easy part; what timbus needs is to know, after parsing,
// where each value came from, so that an error the bridge finds later names
// the flag, variable or file key to fix (serveConfig.from, explain in
// serve.go). ff.Parse (v3.4.0) applies env and file values with fs.Set and
// keeps no record of it: their origin appears only in an error during the
// parse ("error setting flag %q from config file", without the file or
// line). Its ffyaml flattens the file with gopkg.in/yaml.v2 (a second YAML
// library) into flag names, so the apps, commands and streams sections,
// which have no flag form, would still need the strict decoding below, and
// an unknown key gets no "did you mean". koanf's Load merges each provider's
// map into one, with no record of which provider set a key; finding the
// origin again means loading every layer on its own, which is what pick
// does in a dozen lines.
type option struct {
	name  string
	arg   string // the value's placeholder in help
	usage string
	// list options take comma-separated values, or a YAML list in the file;
	// a repeated flag adds to the list.
	list bool
	// boolean options may be given as a bare flag (--require-deciders).
	boolean bool
	set     func(*serveConfig, string) error
	get     func(*serveConfig) string // the value as text, to show defaults in help
}

// configOption names the config file. It has no file key of its own.
const configOption = "config"

var serveOptions = []option{
	stringOption("listen", "ADDR", "HTTP address Tencent calls",
		func(c *serveConfig) *string { return &c.bridge.Listen }),
	stringOption("path", "PATH", "URL path Tencent posts callbacks to",
		func(c *serveConfig) *string { return &c.bridge.Path }),
	{
		name: "nats-url", arg: "URL[,URL...]", list: true,
		usage: "NATS servers to connect to; when empty, timbus runs an embedded NATS server on --nats-listen",
		set:   func(c *serveConfig, v string) error { c.bridge.NATSURL = strings.Join(splitList(v), ","); return nil },
		get:   func(c *serveConfig) string { return c.bridge.NATSURL },
	},
	stringOption("nats-creds", "FILE", "NATS .creds file (user JWT and NKey seed) timbus authenticates with",
		func(c *serveConfig) *string { return &c.bridge.NATSAuth.CredsFile }),
	stringOption("nats-nkey", "FILE", "file holding the NKey user seed timbus authenticates to NATS with",
		func(c *serveConfig) *string { return &c.bridge.NATSAuth.NKeyFile }),
	stringOption("nats-user", "USER", "NATS user name (with --nats-password)",
		func(c *serveConfig) *string { return &c.bridge.NATSAuth.User }),
	stringOption("nats-password", "PASSWORD", "NATS password of --nats-user (prefer "+envName("nats-password")+" or the file to keep it out of ps)",
		func(c *serveConfig) *string { return &c.bridge.NATSAuth.Password }),
	stringOption("nats-token", "TOKEN", "NATS authorization token (prefer "+envName("nats-token")+" or the file)",
		func(c *serveConfig) *string { return &c.bridge.NATSAuth.Token }),
	stringOption("nats-tls-ca", "FILE", "PEM CAs trusted for the NATS server's certificate, instead of the system's",
		func(c *serveConfig) *string { return &c.bridge.NATSAuth.TLSCA }),
	stringOption("nats-tls-cert", "FILE", "client certificate for NATS servers verifying clients (with --nats-tls-key)",
		func(c *serveConfig) *string { return &c.bridge.NATSAuth.TLSCert }),
	stringOption("nats-tls-key", "FILE", "key of --nats-tls-cert",
		func(c *serveConfig) *string { return &c.bridge.NATSAuth.TLSKey }),
	stringOption("nats-listen", "ADDR", "client address of the embedded NATS server, where deciders connect; port 0 picks a free port",
		func(c *serveConfig) *string { return &c.bridge.NATSListen }),
	{
		name: "sdkappid", arg: "ID[,ID...]", list: true,
		usage: "SdkAppids whose callbacks are accepted (required)",
		set:   func(c *serveConfig, v string) error { c.appIDs = splitList(v); return nil },
		get:   func(c *serveConfig) string { return strings.Join(c.appIDs, ",") },
	},
	durationOption("timeout", fmt.Sprintf("time deciders have to answer a callback Tencent waits on; must be under Tencent's %v deadline", bridge.TencentTimeout),
		func(c *serveConfig) *time.Duration { return &c.bridge.Timeout }),
	{
		name: "default", arg: "VERDICT",
		usage: "verdict sent when no decider answers in time: allow, deny, <code> or <code>:<info>",
		set:   func(c *serveConfig, v string) error { return c.bridge.Default.UnmarshalText([]byte(v)) },
		get:   func(c *serveConfig) string { return c.bridge.Default.String() },
	},
	stringOption("subject-prefix", "PREFIX", "first token(s) of every NATS subject",
		func(c *serveConfig) *string { return &c.bridge.SubjectPrefix }),
	stringOption("token", "TOKEN", "callback authentication token from Tencent's console: requests must then carry a valid Sign and RequestTime (prefer TIMBUS_TOKEN or the file to keep it out of ps; per-app tokens go in the file's apps list)",
		func(c *serveConfig) *string { return &c.bridge.Token }),
	durationOption("sign-window", "how far a signed request's RequestTime may be from now, either way",
		func(c *serveConfig) *time.Duration { return &c.bridge.SignWindow }),
	listOption("allow-cidr", "CIDR[,CIDR...]", "admit callbacks only from these networks, e.g. Tencent's callback egress ranges (default: any)",
		func(c *serveConfig) *[]string { return &c.bridge.AllowCIDRs }),
	listOption("trusted-proxy", "CIDR[,CIDR...]", "reverse proxies in front of timbus; only for requests from them is --proxy-header believed",
		func(c *serveConfig) *[]string { return &c.bridge.TrustedProxies }),
	stringOption("proxy-header", "HEADER", "header in which a trusted proxy reports the client address",
		func(c *serveConfig) *string { return &c.bridge.ProxyHeader }),
	stringOption("shadow-prefix", "PREFIX", "also send every decide request to <PREFIX>.decide.<SdkAppid>.<Command>; the shadow's verdict is only recorded in the audit (per command: commands.<name>.shadow_prefix)",
		func(c *serveConfig) *string { return &c.bridge.ShadowPrefix }),
	stringOption("nats-store", "DIR", "directory where the embedded NATS server keeps JetStream streams (turns JetStream on)",
		func(c *serveConfig) *string { return &c.bridge.NATSStoreDir }),
	stringOption("nats-config", "FILE", "nats-server configuration file for the embedded server: authorization users and permissions, accounts, TLS, JetStream (see deploy/nats/embedded.conf); its listen wins over --nats-listen",
		func(c *serveConfig) *string { return &c.bridge.NATSConfig }),
	stringOption("audit-stream", "NAME", "JetStream stream to create (or check) for the audit records; retention in the file's streams.audit section",
		func(c *serveConfig) *string { return &c.bridge.AuditStream.Name }),
	stringOption("events-stream", "NAME", "JetStream stream that must acknowledge each after callback before Tencent gets its OK; retention in streams.events",
		func(c *serveConfig) *string { return &c.bridge.EventsStream.Name }),
	stringOption("tls-cert", "FILE", "serve HTTPS with this certificate (PEM, chain included); needs --tls-key. Read again when the file changes and on SIGHUP",
		func(c *serveConfig) *string { return &c.bridge.TLSCert }),
	stringOption("tls-key", "FILE", "private key (PEM) of --tls-cert",
		func(c *serveConfig) *string { return &c.bridge.TLSKey }),
	stringOption("tls-client-ca", "FILE", "require HTTPS clients to present a certificate signed by a CA in this PEM file (Tencent's mutual TLS); needs --tls-cert",
		func(c *serveConfig) *string { return &c.bridge.TLSClientCA }),
	stringOption("metrics-listen", "ADDR", "serve /metrics, /healthz and /readyz on this address instead of --listen",
		func(c *serveConfig) *string { return &c.bridge.MetricsListen }),
	{
		// true names the commands of the file's commands section; a list
		// names commands outright. Readiness never follows what arrives from
		// the network.
		name: "require-deciders", arg: "true|CMD[,CMD...]", list: true, boolean: true,
		usage: "/readyz reports not ready while one of these before commands has no live decider (discovered as a NATS service); true means those of the file's commands section",
		set: func(c *serveConfig, v string) error {
			for _, part := range splitList(v) {
				if b, err := strconv.ParseBool(part); err == nil {
					c.bridge.RequireDeciders = b
					continue
				}
				if !catalog.ValidName(part) {
					return fmt.Errorf("want true, false or a list of commands (<Family>.<Command>), not %q", part)
				}
				c.bridge.RequiredCommands = append(c.bridge.RequiredCommands, part)
			}
			return nil
		},
		get: func(c *serveConfig) string {
			parts := slices.Clone(c.bridge.RequiredCommands)
			if c.bridge.RequireDeciders {
				parts = append([]string{"true"}, parts...)
			}
			if len(parts) == 0 {
				return "false"
			}
			return strings.Join(parts, ",")
		},
	},
	durationOption("drain-delay", "on SIGTERM, report not ready for this long before closing the listener, for load balancers",
		func(c *serveConfig) *time.Duration { return &c.bridge.DrainDelay }),
	intOption("max-inflight", "N", "callbacks decided at once; past it they get the default at once (outcome shed); 0 means no cap",
		func(c *serveConfig) *int { return &c.bridge.MaxInflight }),
	boolOption("breaker", "per-command circuit breaker: when deciders keep failing, answer the default at once for a cool-down",
		func(c *serveConfig) *bool { return &c.bridge.Breaker.Enabled }),
	durationOption("breaker-window", "window in which the breaker counts failures",
		func(c *serveConfig) *time.Duration { return &c.bridge.Breaker.Window }),
	intOption("breaker-min-requests", "N", "decisions in the window before the breaker may open",
		func(c *serveConfig) *int { return &c.bridge.Breaker.MinRequests }),
	floatOption("breaker-failure-ratio", "RATIO", "share of failed decisions (timeouts, no deciders, NATS errors; not a decider's error or invalid reply about one callback) that opens the breaker",
		func(c *serveConfig) *float64 { return &c.bridge.Breaker.FailureRatio }),
	durationOption("breaker-cooldown", "how long an open breaker answers the default before probing again",
		func(c *serveConfig) *time.Duration { return &c.bridge.Breaker.Cooldown }),
	choiceOption("log-level", "LEVEL", []string{"debug", "info", "warn", "error"},
		func(c *serveConfig) *string { return &c.logLevel }),
	choiceOption("log-format", "FORMAT", []string{"json", "console"},
		func(c *serveConfig) *string { return &c.logFormat }),
	withUsage(choiceOption("log-callbacks", "WHICH", []string{"failures", "all", "none"},
		func(c *serveConfig) *string { return (*string)(&c.bridge.LogCallbacks) }),
		"which callbacks get a log line (at info): failures (refusals, late replies, defaults answered, events not published), all (an access log), none; audit records and metrics have every one"),
	withUsage(choiceOption("decide-headers", "WHICH", []string{"none", "all"},
		func(c *serveConfig) *string { return (*string)(&c.bridge.DecideHeaders) }),
		"headers on decide requests: none (the deadline and request id ride in the reply subject), all (adds Timbus-Client-Ip, Timbus-Opt-Platform and traceparent, at a cost to every decider)"),
	intOption("max-body-size", "BYTES", "largest callback body accepted, in bytes; larger ones get 413",
		func(c *serveConfig) *int { return &c.bridge.MaxBodySize }),
	intOption("max-header-size", "BYTES", "largest request line and headers accepted, in bytes",
		func(c *serveConfig) *int { return &c.bridge.MaxHeaderSize }),
	durationOption("read-timeout", "time allowed to read a whole request",
		func(c *serveConfig) *time.Duration { return &c.bridge.ReadTimeout }),
	durationOption("write-timeout", "time allowed to write a response",
		func(c *serveConfig) *time.Duration { return &c.bridge.WriteTimeout }),
	durationOption("idle-timeout", "time a keep-alive connection may wait for its next request",
		func(c *serveConfig) *time.Duration { return &c.bridge.IdleTimeout }),
	intOption("max-conns", "N", "callback connections open at once; past it a new one gets 503 and is closed; 0 means no cap. The default is the open-file limit (ulimit -n) minus max(64, limit/8), at most 16384; under this process's limit",
		func(c *serveConfig) *int { return &c.bridge.MaxConns }),
	intOption("max-conns-per-ip", "N", "callback connections open at once from one client address; past it 429; 0 means no cap (behind a proxy, every connection comes from the proxy)",
		func(c *serveConfig) *int { return &c.bridge.MaxConnsPerIP }),
}

func listOption(name, arg, usage string, field func(*serveConfig) *[]string) option {
	return option{
		name: name, arg: arg, usage: usage, list: true,
		set: func(c *serveConfig, v string) error { *field(c) = splitList(v); return nil },
		get: func(c *serveConfig) string { return strings.Join(*field(c), ",") },
	}
}

func stringOption(name, arg, usage string, field func(*serveConfig) *string) option {
	return option{
		name: name, arg: arg, usage: usage,
		set: func(c *serveConfig, v string) error { *field(c) = v; return nil },
		get: func(c *serveConfig) string { return *field(c) },
	}
}

func boolOption(name, usage string, field func(*serveConfig) *bool) option {
	return option{
		name: name, usage: usage, boolean: true,
		set: func(c *serveConfig, v string) error {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return errors.New("want true or false")
			}
			*field(c) = b
			return nil
		},
		get: func(c *serveConfig) string { return strconv.FormatBool(*field(c)) },
	}
}

func intOption(name, arg, usage string, field func(*serveConfig) *int) option {
	return option{
		name: name, arg: arg, usage: usage,
		set: func(c *serveConfig, v string) error {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return errors.New("want a whole number")
			}
			*field(c) = n
			return nil
		},
		get: func(c *serveConfig) string { return strconv.Itoa(*field(c)) },
	}
}

func floatOption(name, arg, usage string, field func(*serveConfig) *float64) option {
	return option{
		name: name, arg: arg, usage: usage,
		set: func(c *serveConfig, v string) error {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return errors.New("want a number")
			}
			*field(c) = f
			return nil
		},
		get: func(c *serveConfig) string { return strconv.FormatFloat(*field(c), 'g', -1, 64) },
	}
}

func durationOption(name, usage string, field func(*serveConfig) *time.Duration) option {
	return option{
		name: name, arg: "DURATION", usage: usage,
		set: func(c *serveConfig, v string) error {
			d, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil {
				return errors.New("want a Go duration such as 1500ms or 2m")
			}
			*field(c) = d
			return nil
		},
		get: func(c *serveConfig) string { return field(c).String() },
	}
}

func choiceOption(name, arg string, choices []string, field func(*serveConfig) *string) option {
	want := strings.Join(choices, ", ")
	return option{
		name: name, arg: arg, usage: "one of " + want,
		set: func(c *serveConfig, v string) error {
			v = strings.ToLower(strings.TrimSpace(v))
			for _, choice := range choices {
				if v == choice {
					*field(c) = v
					return nil
				}
			}
			return fmt.Errorf("want one of %s", want)
		},
		get: func(c *serveConfig) string { return *field(c) },
	}
}

// withUsage replaces an option's generated usage text.
func withUsage(o option, usage string) option {
	o.usage = usage + " (" + o.usage + ")"
	return o
}

func findOption(name string) (option, bool) {
	for _, opt := range serveOptions {
		if opt.name == name {
			return opt, true
		}
	}
	return option{}, false
}

// envName is the environment variable of a setting: --nats-url is
// TIMBUS_NATS_URL.
func envName(name string) string {
	return "TIMBUS_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// splitList reads a comma-separated list, forgiving spaces and stray commas.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// loadServeConfig resolves the settings of "timbus serve". It returns
// flag.ErrHelp when help was asked for; any other error is the user's to fix.
func loadServeConfig(args []string, lookupEnv func(string) (string, bool)) (*serveConfig, error) {
	flags, err := parseServeFlags(args)
	if err != nil {
		return nil, err
	}
	cfg := defaultServeConfig()
	var file *fileConfig
	if path, _, ok := pick(configOption, flags, lookupEnv, nil, ""); ok {
		if file, err = readConfigFile(path); err != nil {
			return nil, err
		}
		cfg.file = path
	}
	fileValues, err := file.settings()
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", cfg.file, err)
	}
	for _, opt := range serveOptions {
		v, from, ok := pick(opt.name, flags, lookupEnv, fileValues, cfg.file)
		if !ok {
			continue
		}
		if err := opt.set(cfg, v); err != nil {
			return nil, fmt.Errorf("invalid %s %q (from %s): %w", opt.name, v, from, err)
		}
		cfg.from[opt.name] = from
	}
	if file != nil {
		cfg.bridge.Apps = file.Apps
		cfg.bridge.Commands = file.Commands
		// The stream names come from their flags (or keys); the file's
		// streams section adds retention.
		cfg.bridge.AuditStream = withName(file.Streams.Audit, cfg.bridge.AuditStream.Name)
		cfg.bridge.EventsStream = withName(file.Streams.Events, cfg.bridge.EventsStream.Name)
	}
	cfg.bridge.Apps = mergeApps(cfg.bridge.Apps, cfg.appIDs)
	if len(cfg.bridge.Apps) == 0 {
		return nil, fmt.Errorf("no SdkAppid to serve: set --sdkappid, the %s environment variable, or the sdkappid key (or an apps list) in the --%s file",
			envName("sdkappid"), configOption)
	}
	return cfg, nil
}

// parseServeFlags returns the raw value of every flag given, by name.
func parseServeFlags(args []string) (map[string]string, error) {
	fs := newFlagSet("timbus serve")
	given := map[string]string{}
	fs.Func(configOption, "", func(v string) error { given[configOption] = v; return nil })
	for _, opt := range serveOptions {
		record := func(v string) error {
			if prev, ok := given[opt.name]; ok && opt.list {
				v = prev + "," + v
			}
			given[opt.name] = v
			return nil
		}
		if opt.boolean {
			fs.BoolFunc(opt.name, opt.usage, record)
		} else {
			fs.Func(opt.name, opt.usage, record)
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return given, nil
}

// pick applies the precedence: flag, then environment, then file. It returns
// the value and a description of where it came from. An empty environment
// variable counts as unset, as container tooling often sets variables empty
// rather than leaving them out.
func pick(name string, flags map[string]string, lookupEnv func(string) (string, bool), file map[string]string, path string) (value, from string, ok bool) {
	if v, ok := flags[name]; ok {
		return v, "--" + name, true
	}
	if v, ok := lookupEnv(envName(name)); ok && v != "" {
		return v, envName(name), true
	}
	if v, ok := file[name]; ok {
		return v, fmt.Sprintf("key %q in %s", name, path), true
	}
	return "", "", false
}

// mergeApps adds the --sdkappid IDs that the file's apps section does not
// list already, so that an app can have its own default in the file and be
// switched on from the command line. An ID given twice on the command line is
// kept twice, for the bridge to refuse.
func mergeApps(apps []bridge.App, ids []string) []bridge.App {
	out := append([]bridge.App(nil), apps...)
	listed := make(map[string]bool, len(apps))
	for _, app := range apps {
		listed[app.ID] = true
	}
	for _, id := range ids {
		if !listed[id] {
			out = append(out, bridge.App{ID: id})
		}
	}
	return out
}

func withName(s bridge.StreamConfig, name string) bridge.StreamConfig {
	if name != "" {
		s.Name = name
	}
	return s
}

// fileConfig is the YAML config file. Keys named after flags land in
// Settings and go through the same parsing as flags; the structured sections
// have no flag form.
type fileConfig struct {
	Apps     []bridge.App                    `yaml:"apps"`
	Commands map[string]bridge.CommandConfig `yaml:"commands"`
	Streams  struct {
		Audit  bridge.StreamConfig `yaml:"audit"`
		Events bridge.StreamConfig `yaml:"events"`
	} `yaml:"streams"`
	Settings map[string]yaml.Node `yaml:",inline"`
}

func readConfigFile(path string) (*fileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	// Strict, so that a misspelt key inside apps or commands is an error
	// rather than a setting silently ignored.
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return &fc, nil
}

// settings returns the flag-named keys of the file as flag-style text. Any
// other key is an error: a typo must not leave a setting at its default
// unnoticed.
func (fc *fileConfig) settings() (map[string]string, error) {
	if fc == nil {
		return nil, nil
	}
	values := make(map[string]string, len(fc.Settings))
	var unknown []string
	for _, key := range sortedKeys(fc.Settings) {
		node := fc.Settings[key]
		opt, ok := findOption(key)
		if !ok {
			unknown = append(unknown, unknownKey(key))
			continue
		}
		v, err := nodeText(&node, opt.list)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		values[key] = v
	}
	if len(unknown) > 0 {
		return nil, errors.New(strings.Join(unknown, "; "))
	}
	return values, nil
}

func sortedKeys(m map[string]yaml.Node) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// unknownKey describes a key no setting has, suggesting the one meant when
// only case, dashes or underscores differ (nats_url for nats-url).
func unknownKey(key string) string {
	msg := fmt.Sprintf("unknown key %q", key)
	norm := func(s string) string {
		return strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(s))
	}
	candidates := []string{"apps", "commands", "streams"}
	for _, opt := range serveOptions {
		candidates = append(candidates, opt.name)
	}
	for _, c := range candidates {
		if norm(c) == norm(key) {
			return msg + fmt.Sprintf(" (did you mean %q?)", c)
		}
	}
	return msg
}

// nodeText renders a YAML value as a flag would be written: a scalar as is,
// a list as comma-separated text.
func nodeText(n *yaml.Node, list bool) (string, error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch {
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return "", nil
	case n.Kind == yaml.ScalarNode:
		return n.Value, nil
	case n.Kind == yaml.SequenceNode && list:
		items := make([]string, 0, len(n.Content))
		for _, item := range n.Content {
			if item.Kind == yaml.AliasNode {
				item = item.Alias
			}
			if item.Kind != yaml.ScalarNode {
				return "", fmt.Errorf("line %d: a list item must be a single value", item.Line)
			}
			items = append(items, item.Value)
		}
		return strings.Join(items, ","), nil
	case list:
		return "", fmt.Errorf("line %d: want a value, a comma-separated string or a list", n.Line)
	default:
		return "", fmt.Errorf("line %d: want a single value", n.Line)
	}
}
