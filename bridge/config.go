package bridge

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/timbus-dev/timbus/deciders/catalog"
	"github.com/timbus-dev/timbus/deciders/protocol"
)

// TencentTimeout is how long Tencent waits for a callback's answer before it
// lets the action through. Every answer timbus gives must come before it.
const TencentTimeout = 2 * time.Second

// Config holds everything a Bridge needs. Start from DefaultConfig; New
// validates and copies it.
type Config struct {
	// Listen is the HTTP address Tencent calls, e.g. ":8080".
	Listen string
	// Path is the callback path, e.g. "/" or "/tencent/callback".
	Path string

	// NATSURL lists NATS servers, comma-separated. When empty the bridge runs
	// an embedded NATS server listening on NATSListen.
	NATSURL string
	// NATSAuth authenticates the bridge's NATS connection: credentials and
	// TLS. Credentials may instead be in NATSURL (user:password@), not both.
	NATSAuth NATSAuth
	// NATSListen is the embedded server's client address, so that deciders in
	// other processes can connect. Port 0 or -1 picks a free port.
	NATSListen string
	// NATSStoreDir turns on JetStream in the embedded server, storing streams
	// in this directory.
	NATSStoreDir string
	// NATSConfig is a nats-server configuration file for the embedded server
	// (users and permissions, accounts, TLS, JetStream...). Its listen wins
	// over NATSListen; see embeddedOptions for how the two combine.
	NATSConfig string

	// AuditStream, when named, makes the bridge create (or check) a JetStream
	// stream holding every audit record, and publish records with acks.
	AuditStream StreamConfig
	// EventsStream, when named, stores after callbacks in JetStream: Tencent
	// gets its OK only once the stream has acknowledged the event.
	EventsStream StreamConfig

	// Apps are the SdkAppids whose callbacks are accepted. At least one.
	Apps []App

	// Timeout is how long deciders have, counted from the callback's arrival.
	Timeout time.Duration
	// Default is the verdict sent when no valid decider answer comes in time.
	Default Verdict
	// Commands holds per-command overrides, keyed by CallbackCommand.
	Commands map[string]CommandConfig

	// SubjectPrefix is the first token (or tokens) of every NATS subject.
	SubjectPrefix string
	// ShadowPrefix, when set, also sends every decide request to
	// <ShadowPrefix>.decide.<SdkAppid>.<CallbackCommand>. The shadow's verdict
	// is never used, only recorded beside the real one in the audit record.
	ShadowPrefix string

	// Token turns on Tencent's callback authentication for every app without
	// a token of its own: requests must carry Sign and RequestTime.
	Token string
	// SignWindow is how far RequestTime may be from now, either way.
	SignWindow time.Duration
	// AllowCIDRs, when set, admits only requests from these networks (CIDRs
	// or single addresses), such as Tencent's callback egress ranges.
	AllowCIDRs []string
	// TrustedProxies are the networks of reverse proxies in front of timbus;
	// only for requests from them is the client address taken from
	// ProxyHeader.
	TrustedProxies []string
	// ProxyHeader carries the client address set by a trusted proxy.
	ProxyHeader string

	// TLSCert and TLSKey, both set, make the callback listener serve HTTPS
	// with this certificate (PEM, chain included) and key. The files are
	// read again when they change on disk (checked at most every second, on
	// handshakes) and on ReloadTLS.
	TLSCert string
	TLSKey  string
	// TLSClientCA, with TLSCert, requires every client to present a
	// certificate signed by one of these CAs (PEM): Tencent's mutual TLS.
	TLSClientCA string

	// MetricsListen, when set, serves /metrics, /healthz and /readyz on this
	// address instead of the callback listener.
	MetricsListen string
	// RequireDeciders makes /readyz report not ready while a before command
	// named in Commands has no live decider discoverable as a NATS service.
	RequireDeciders bool
	// RequiredCommands are more before commands that must have a live
	// decider for /readyz to report ready. Readiness never depends on what
	// callbacks arrive: anyone can send one.
	RequiredCommands []string
	// RegistryInterval is how often live deciders are counted.
	RegistryInterval time.Duration
	// DrainDelay is how long Shutdown reports not ready before it closes
	// the listener, so that load balancers stop sending first.
	DrainDelay time.Duration
	// MaxInflight caps the callbacks being decided at once; past it,
	// callbacks get their default verdict at once (outcome shed). 0: no cap.
	MaxInflight int
	// Breaker configures the per-command circuit breaker (off by default).
	Breaker BreakerConfig

	// Limits against oversized or slow clients. IdleTimeout's default, 90 s,
	// is above the 60 s after which common proxies and load balancers (nginx,
	// AWS ALB) drop an idle upstream connection, so that they close first and
	// never send on a connection timbus is closing. Idle connections count
	// against MaxConns, and a refused request closes its connection.
	MaxBodySize   int
	MaxHeaderSize int
	ReadTimeout   time.Duration
	WriteTimeout  time.Duration
	IdleTimeout   time.Duration

	// MaxConns caps the callback connections open at once; past it a new
	// connection gets 503 and is closed at once. It keeps them below the
	// open-file limit, which the embedded NATS server and the NATS
	// connection share. DefaultConfig derives it from that limit (see
	// OpenFileLimit). 0: no cap.
	MaxConns int
	// MaxConnsPerIP caps the callback connections open at once from one
	// client address (the TCP peer, not a proxy header); past it, 429. 0: no
	// cap. Behind a proxy every connection comes from the proxy.
	MaxConnsPerIP int

	// Logger receives the bridge's log lines; per-callback lines, at info,
	// as LogCallbacks says. Default: none.
	Logger zerolog.Logger
	// LogCallbacks says which callbacks get a log line of their own. The
	// audit records are the record of every callback; the default logs only
	// what an operator should look at. The zero value means
	// LogCallbacksFailures.
	LogCallbacks CallbackLog

	// DecideHeaders says which headers a decide request carries. The
	// deadline and the request id are always in its reply subject; the
	// default, DecideHeadersNone, sends nothing more, as every header costs
	// the bridge and each decider per callback. The zero value means
	// DecideHeadersNone.
	DecideHeaders DecideHeaders

	// now is the clock for signature checks; tests replace it.
	now func() time.Time
}

// CallbackLog says which callbacks get a log line of their own.
type CallbackLog string

const (
	// LogCallbacksFailures logs refusals, late replies and callbacks answered
	// by the default (timeout, no deciders, invalid reply, decider error,
	// NATS error, shed, circuit open) or not published; a decided or
	// published callback gets no line.
	LogCallbacksFailures CallbackLog = "failures"
	// LogCallbacksAll logs every callback, like a proxy's access log.
	LogCallbacksAll CallbackLog = "all"
	// LogCallbacksNone logs no callback; metrics and audit records still
	// count and record every one.
	LogCallbacksNone CallbackLog = "none"
)

// DecideHeaders says which headers decide requests carry.
type DecideHeaders string

const (
	// DecideHeadersNone sends decide requests without headers.
	DecideHeadersNone DecideHeaders = "none"
	// DecideHeadersAll adds Timbus-Client-Ip and Timbus-Opt-Platform (when
	// Tencent sent them) and a W3C traceparent, as events always carry.
	DecideHeadersAll DecideHeaders = "all"
)

// App is one Tencent Cloud Chat application the bridge serves.
type App struct {
	// ID is the SdkAppid, a decimal number.
	ID string `yaml:"sdkappid"`
	// Token overrides Config.Token for this app.
	Token string `yaml:"token"`
	// Default overrides Config.Default for this app.
	Default *Verdict `yaml:"default"`
}

// StreamConfig describes a JetStream stream the bridge writes to.
type StreamConfig struct {
	Name            string        `yaml:"name"`
	MaxAge          time.Duration `yaml:"max_age"`          // 0: keep forever
	MaxBytes        int64         `yaml:"max_bytes"`        // 0: unlimited
	Replicas        int           `yaml:"replicas"`         // 0 or 1: one copy
	DuplicateWindow time.Duration `yaml:"duplicate_window"` // 0: the server's default (2m)
}

// CommandConfig overrides the bridge-wide settings for one command.
type CommandConfig struct {
	// Timeout overrides Config.Timeout.
	Timeout time.Duration `yaml:"timeout"`
	// Default overrides the app's and the bridge's default verdict. It must be
	// valid for the command.
	Default *Verdict `yaml:"default"`
	// FireAndForget publishes a before command as an event and answers the
	// default verdict at once, without asking a decider.
	FireAndForget bool `yaml:"fire_and_forget"`
	// ShadowPrefix overrides Config.ShadowPrefix for this command.
	ShadowPrefix string `yaml:"shadow_prefix"`
}

// DefaultConfig returns the settings timbus uses unless told otherwise.
func DefaultConfig() Config {
	return Config{
		Listen:           ":8080",
		Path:             "/",
		NATSListen:       "127.0.0.1:4222",
		Timeout:          1500 * time.Millisecond,
		Default:          Allow,
		SubjectPrefix:    protocol.DefaultSubjectPrefix,
		SignWindow:       time.Minute,
		RegistryInterval: 10 * time.Second,
		ProxyHeader:      "X-Forwarded-For",
		MaxBodySize:      1 << 20,
		MaxHeaderSize:    8 << 10,
		ReadTimeout:      5 * time.Second,
		WriteTimeout:     5 * time.Second,
		IdleTimeout:      90 * time.Second,
		MaxConns:         defaultMaxConns(),
		Logger:           zerolog.Nop(),
		LogCallbacks:     LogCallbacksFailures,
		DecideHeaders:    DecideHeadersNone,
		Breaker:          DefaultBreakerConfig(),
	}
}

// Verdict is an answer to a before callback: ErrorCode 0 allows, 1 denies,
// other codes are command-specific (see the catalog).
type Verdict struct {
	Code int
	Info string
}

// The two verdicts every before command understands.
var (
	Allow = Verdict{Code: 0}
	Deny  = Verdict{Code: 1}
)

// ParseVerdict reads "allow", "deny", "<code>" or "<code>:<info>", e.g.
// "120005:name reserved".
func ParseVerdict(s string) (Verdict, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "allow":
		return Allow, nil
	case "deny":
		return Deny, nil
	}
	codeText, info, _ := strings.Cut(s, ":")
	code, err := strconv.Atoi(strings.TrimSpace(codeText))
	if err != nil {
		return Verdict{}, fmt.Errorf("%w: %q: want allow, deny, <code> or <code>:<info>", ErrInvalidVerdict, s)
	}
	return Verdict{Code: code, Info: info}, nil
}

func (v Verdict) String() string {
	switch {
	case v == Allow:
		return "allow"
	case v == Deny:
		return "deny"
	case v.Info == "":
		return strconv.Itoa(v.Code)
	default:
		return strconv.Itoa(v.Code) + ":" + v.Info
	}
}

// MarshalText and UnmarshalText let a Verdict be a flag or a YAML scalar.
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

func (v *Verdict) UnmarshalText(b []byte) error {
	parsed, err := ParseVerdict(string(b))
	if err != nil {
		return err
	}
	*v = parsed
	return nil
}

// answer renders the verdict as Tencent's reply JSON.
func (v Verdict) answer() []byte {
	info, _ := json.Marshal(v.Info)
	return fmt.Appendf(nil, `{"ActionStatus":"OK","ErrorInfo":%s,"ErrorCode":%d}`, info, v.Code)
}

// ConfigError names the setting that is wrong. It wraps a sentinel such as
// ErrInvalidTimeout.
type ConfigError struct {
	Field string
	Value any
	Err   error
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%v (%s=%v)", e.Err, e.Field, e.Value)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	bad := func(field string, value any, err error) error {
		return &ConfigError{Field: field, Value: value, Err: err}
	}
	if c.Listen == "" {
		return bad("listen", c.Listen, ErrMissing)
	}
	if !strings.HasPrefix(c.Path, "/") {
		return bad("path", c.Path, fmt.Errorf("%w: must start with /", ErrInvalidValue))
	}
	for _, u := range strings.Split(c.NATSURL, ",") {
		// url.Parse's error quotes the URL, password and all.
		if _, err := url.Parse(strings.TrimSpace(u)); err != nil && c.NATSURL != "" {
			return bad("nats-url", RedactURLs(c.NATSURL), fmt.Errorf("%w: a URL does not parse (is a character of its password not escaped?)", ErrInvalidValue))
		}
	}
	if err := c.NATSAuth.Validate(c.NATSURL); err != nil {
		return err
	}
	if c.NATSURL == "" && c.NATSListen == "" && c.NATSConfig == "" {
		return bad("nats-listen", c.NATSListen, fmt.Errorf("%w: needed when nats-url is empty", ErrMissing))
	}
	if c.NATSURL != "" && c.NATSConfig != "" {
		return bad("nats-config", c.NATSConfig, fmt.Errorf("%w: configures the embedded server, which does not run with nats-url", ErrInvalidValue))
	}
	// The embedded server keeps streams when NATSStoreDir or the file turns
	// JetStream on.
	embeddedJetStream := false
	if c.NATSURL == "" {
		e, err := c.embeddedOptions()
		if err != nil {
			return err
		}
		embeddedJetStream = e.opts.JetStream
	}
	if len(c.Apps) == 0 {
		return bad("sdkappid", "", fmt.Errorf("%w: name at least one SdkAppid whose callbacks to accept", ErrNoApps))
	}
	seen := map[string]bool{}
	for _, app := range c.Apps {
		if _, err := strconv.ParseUint(app.ID, 10, 64); err != nil {
			return bad("sdkappid", app.ID, fmt.Errorf("%w: an SdkAppid is a decimal number", ErrInvalidValue))
		}
		if seen[app.ID] {
			return bad("sdkappid", app.ID, fmt.Errorf("%w: listed twice", ErrInvalidValue))
		}
		seen[app.ID] = true
		if len(app.Token) > maxTokenLen {
			return bad("apps."+app.ID+".token", "(secret)", fmt.Errorf("%w: at most %d characters, as in Tencent's console", ErrInvalidValue, maxTokenLen))
		}
	}
	if len(c.Token) > maxTokenLen {
		return bad("token", "(secret)", fmt.Errorf("%w: at most %d characters, as in Tencent's console", ErrInvalidValue, maxTokenLen))
	}
	if c.SignWindow <= 0 {
		return bad("sign-window", c.SignWindow, fmt.Errorf("%w: must be positive", ErrInvalidValue))
	}
	for _, list := range []struct {
		field  string
		values []string
	}{{"allow-cidr", c.AllowCIDRs}, {"trusted-proxy", c.TrustedProxies}} {
		if _, err := parsePrefixes(list.values); err != nil {
			return bad(list.field, list.values, fmt.Errorf("%w: %w", ErrInvalidValue, err))
		}
	}
	for _, st := range []struct {
		field string
		cfg   StreamConfig
	}{{"audit-stream", c.AuditStream}, {"events-stream", c.EventsStream}} {
		if st.cfg.Name == "" {
			continue
		}
		if strings.ContainsAny(st.cfg.Name, " \t\r\n.*>/\\") {
			return bad(st.field, st.cfg.Name, fmt.Errorf("%w: a stream name has no spaces, dots, wildcards or slashes", ErrInvalidValue))
		}
		if st.cfg.Replicas < 0 || st.cfg.Replicas > 5 || st.cfg.MaxAge < 0 || st.cfg.MaxBytes < 0 || st.cfg.DuplicateWindow < 0 {
			return bad(st.field, st.cfg.Name, fmt.Errorf("%w: replicas 0-5, max_age, max_bytes and duplicate_window not negative", ErrInvalidValue))
		}
		if c.NATSURL == "" && !embeddedJetStream {
			return bad(st.field, st.cfg.Name, fmt.Errorf("%w: the embedded NATS server needs nats-store (a directory) to keep streams", ErrMissing))
		}
		if c.NATSURL == "" && st.cfg.Replicas > 1 {
			return bad(st.field, st.cfg.Name, fmt.Errorf("%w: the embedded NATS server holds one replica; use a cluster via nats-url", ErrInvalidValue))
		}
	}
	if c.AuditStream.Name != "" && c.AuditStream.Name == c.EventsStream.Name {
		return bad("events-stream", c.EventsStream.Name, fmt.Errorf("%w: must differ from audit-stream", ErrInvalidValue))
	}
	if err := c.validateTLS(); err != nil {
		return err
	}
	if len(c.TrustedProxies) > 0 && c.ProxyHeader == "" {
		return bad("proxy-header", c.ProxyHeader, fmt.Errorf("%w: needed with trusted-proxy", ErrMissing))
	}
	if err := validTimeout(c.Timeout); err != nil {
		return bad("timeout", c.Timeout, err)
	}
	if !protocol.ValidPrefix(c.SubjectPrefix) {
		return bad("subject-prefix", c.SubjectPrefix, fmt.Errorf("%w: want dot-separated tokens without spaces or wildcards", ErrInvalidValue))
	}
	if c.ShadowPrefix != "" && (!protocol.ValidPrefix(c.ShadowPrefix) || c.ShadowPrefix == c.SubjectPrefix) {
		return bad("shadow-prefix", c.ShadowPrefix, fmt.Errorf("%w: want valid tokens, different from subject-prefix", ErrInvalidValue))
	}
	for name, cc := range c.Commands {
		field := "commands." + name
		if cc.ShadowPrefix != "" && (!protocol.ValidPrefix(cc.ShadowPrefix) || cc.ShadowPrefix == c.SubjectPrefix) {
			return bad(field+".shadow_prefix", cc.ShadowPrefix, fmt.Errorf("%w: want valid tokens, different from subject-prefix", ErrInvalidValue))
		}
		if !catalog.ValidName(name) {
			return bad(field, name, fmt.Errorf("%w: a command is <Family>.<Command>", ErrInvalidValue))
		}
		if cc.Timeout != 0 {
			if err := validTimeout(cc.Timeout); err != nil {
				return bad(field+".timeout", cc.Timeout, err)
			}
		}
	}
	// Every default a command can end up with must be a verdict it accepts.
	for _, app := range c.Apps {
		for _, cmd := range catalog.All() {
			if !cmd.Kind.NeedsReply() {
				continue
			}
			v, field := c.defaultFor(app, cmd.Name)
			if !cmd.ValidCode(v.Code) {
				return bad(field, v, fmt.Errorf("%w: %s accepts ErrorCode %s", ErrInvalidVerdict, cmd.Name, cmd.CodesString()))
			}
		}
	}
	for _, name := range c.RequiredCommands {
		cmd, listed := catalog.Lookup(name)
		_, configured := c.Commands[name]
		switch {
		case !listed && !configured:
			return bad("require-deciders", name, fmt.Errorf("%w: not a command of the catalogue or of the commands section", ErrInvalidValue))
		case listed && !cmd.Kind.NeedsReply(), c.Commands[name].FireAndForget:
			return bad("require-deciders", name, fmt.Errorf("%w: deciders answer before commands only; this one is published as an event", ErrInvalidValue))
		}
	}
	switch c.LogCallbacks {
	case "", LogCallbacksFailures, LogCallbacksAll, LogCallbacksNone:
	default:
		return bad("log-callbacks", c.LogCallbacks, fmt.Errorf("%w: want failures, all or none", ErrInvalidValue))
	}
	switch c.DecideHeaders {
	case "", DecideHeadersNone, DecideHeadersAll:
	default:
		return bad("decide-headers", c.DecideHeaders, fmt.Errorf("%w: want none or all", ErrInvalidValue))
	}
	if c.MaxInflight < 0 {
		return bad("max-inflight", c.MaxInflight, fmt.Errorf("%w: 0 (no cap) or more", ErrInvalidValue))
	}
	for _, limit := range []struct {
		field string
		value int
	}{{"max-conns", c.MaxConns}, {"max-conns-per-ip", c.MaxConnsPerIP}} {
		if limit.value < 0 {
			return bad(limit.field, limit.value, fmt.Errorf("%w: 0 (no cap) or more", ErrInvalidValue))
		}
	}
	if c.DrainDelay < 0 || c.RegistryInterval <= 0 {
		return bad("drain-delay", c.DrainDelay, fmt.Errorf("%w: drain-delay not negative, registry interval positive", ErrInvalidValue))
	}
	if br := c.Breaker; br.Enabled && (br.Window <= 0 || br.Cooldown <= 0 || br.MinRequests < 1 || br.FailureRatio <= 0 || br.FailureRatio > 1) {
		return bad("breaker", br, fmt.Errorf("%w: window and cooldown positive, min_requests at least 1, failure_ratio in (0, 1]", ErrInvalidValue))
	}
	for _, limit := range []struct {
		field string
		value int
	}{{"max-body-size", c.MaxBodySize}, {"max-header-size", c.MaxHeaderSize}} {
		if limit.value <= 0 {
			return bad(limit.field, limit.value, fmt.Errorf("%w: must be positive", ErrInvalidValue))
		}
	}
	return nil
}

// defaultFor returns the default verdict for a command of an app and the
// setting it comes from.
func (c *Config) defaultFor(app App, command string) (Verdict, string) {
	if cc, ok := c.Commands[command]; ok && cc.Default != nil {
		return *cc.Default, "commands." + command + ".default"
	}
	if app.Default != nil {
		return *app.Default, "apps." + app.ID + ".default"
	}
	return c.Default, "default"
}

// timeoutFor returns the decider timeout of a command.
func (c *Config) timeoutFor(command string) time.Duration {
	if cc, ok := c.Commands[command]; ok && cc.Timeout != 0 {
		return cc.Timeout
	}
	return c.Timeout
}

func validTimeout(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%w: must be positive", ErrInvalidTimeout)
	}
	if d >= TencentTimeout {
		return fmt.Errorf("%w: must be under Tencent's own %v deadline, after which Tencent lets the action through anyway", ErrInvalidTimeout, TencentTimeout)
	}
	return nil
}
