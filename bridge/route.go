package bridge

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/timbus-dev/timbus/deciders/catalog"
	"github.com/timbus-dev/timbus/deciders/protocol"
)

// route is everything the request path needs to know about one command of
// one app, computed once so that a callback costs no lookups beyond a map read.
type route struct {
	app     string
	command *catalog.Command
	// decide is true when a decider is asked; otherwise the callback is
	// published as an event.
	decide  bool
	subject string
	// audit is the subject of the callback's audit record.
	audit string
	// shadow is the shadow decider's subject, or "".
	shadow   string
	timeout  time.Duration
	fallback []byte // the default verdict as Tencent's reply JSON
	code     int    // the default verdict's ErrorCode, for logs
	// perUser is set when the default refuses users of a per-user command,
	// whose answer names each user of the request and so is built per callback.
	perUser bool
	info    string

	metrics routeMetrics
	breaker *breaker // nil unless the breaker is on
	// heard is whether anyone subscribes to audit, on a server timbus does
	// not embed; transient routes (built per callback past maxUnlisted)
	// keep no such state and always send their records.
	heard heard
	// local caches what the embedded server said of the same.
	local     atomic.Pointer[localHearing]
	transient bool
}

// fallbackResult is the answer with the route's default verdict.
func (r *route) fallbackResult(body []byte, o protocol.Outcome, err error) result {
	return result{status: fasthttp.StatusOK, answer: r.fallbackFor(body), outcome: o, code: r.code, err: err}
}

// fallbackFor returns the default answer to a callback with this body.
func (r *route) fallbackFor(body []byte) []byte {
	if r.perUser {
		return r.command.PerUserAnswer(body, r.code, r.info)
	}
	return r.fallback
}

// maxUnlisted bounds how many unknown command names an app remembers, so that
// a caller inventing names cannot grow memory without end. Past it, a route
// is built for each such callback and forgotten after it.
const maxUnlisted = 256

// OtherCommand is the command label in metrics of every command that neither
// the catalogue nor the configuration names. Such names come from the
// network, so each cannot have series of its own: a caller inventing names
// would grow the bridge's memory and every scrape without end.
const OtherCommand = "_other"

// appRoutes holds the routes of one app.
type appRoutes struct {
	id      string
	signer  *signer // nil when callback authentication is off
	metrics *metrics
	known   map[string]*route // read-only after New
	config  *Config
	log     *zerolog.Logger

	unlisted      sync.Map // command name -> *route
	unlistedCount atomic.Int32

	// other holds what every command named neither in the catalogue nor in
	// the configuration shares: its metrics, and its breaker (nil unless on).
	other struct {
		metrics routeMetrics
		breaker *breaker
	}
}

func newAppRoutes(cfg *Config, app App, log *zerolog.Logger, m *metrics) *appRoutes {
	a := &appRoutes{id: app.ID, known: map[string]*route{}, config: cfg, log: log, metrics: m}
	token := cfg.Token
	if app.Token != "" {
		token = app.Token
	}
	if token != "" {
		now := cfg.now
		if now == nil {
			now = time.Now
		}
		a.signer = &signer{token: []byte(token), window: cfg.SignWindow, now: now}
	}
	a.other.metrics = m.forRoute(app.ID, OtherCommand)
	if cfg.Breaker.Enabled {
		a.other.breaker = a.newBreaker(app.ID, OtherCommand, a.other.metrics.breakerOpen)
	}
	for _, cmd := range catalog.All() {
		a.known[cmd.Name] = a.build(app, cmd)
	}
	// Commands the catalogue lacks but the configuration names are the
	// operator's: they get routes, series and breakers of their own.
	for name := range cfg.Commands {
		if _, ok := a.known[name]; !ok {
			a.known[name] = a.build(app, catalog.Unlisted(name))
		}
	}
	return a
}

// build makes the route of a command. A command that neither the catalogue
// nor the configuration names shares the app's OtherCommand metrics and
// breaker.
func (a *appRoutes) build(app App, cmd *catalog.Command) *route {
	verdict, _ := a.config.defaultFor(app, cmd.Name)
	r := &route{
		app:      app.ID,
		command:  cmd,
		decide:   cmd.Kind.NeedsReply() && !a.config.Commands[cmd.Name].FireAndForget,
		timeout:  a.config.timeoutFor(cmd.Name),
		fallback: verdict.answer(),
		code:     verdict.Code,
		perUser:  cmd.PerUser != "" && verdict.Code != 0,
		info:     verdict.Info,
	}
	if !cmd.Kind.NeedsReply() {
		r.fallback, r.code = okAnswer, 0
	}
	_, configured := a.config.Commands[cmd.Name]
	switch {
	case cmd.Unlisted && !configured:
		r.metrics = a.other.metrics
		if r.decide {
			r.breaker = a.other.breaker
		}
	default:
		r.metrics = a.metrics.forRoute(app.ID, cmd.Name)
		if a.config.Breaker.Enabled && r.decide {
			r.breaker = a.newBreaker(app.ID, cmd.Name, r.metrics.breakerOpen)
		}
	}
	kind := protocol.KindEvent
	if r.decide {
		kind = protocol.KindDecide
	}
	r.subject = protocol.Subject(a.config.SubjectPrefix, kind, app.ID, cmd.Name)
	r.audit = protocol.Subject(a.config.SubjectPrefix, protocol.KindAudit, app.ID, cmd.Name)
	shadow := a.config.ShadowPrefix
	if p := a.config.Commands[cmd.Name].ShadowPrefix; p != "" {
		shadow = p
	}
	if shadow != "" && r.decide {
		r.shadow = protocol.Subject(shadow, protocol.KindDecide, app.ID, cmd.Name)
	}
	return r
}

// lookup returns the route of a command, building one for a command the
// catalog does not list. It returns nil if the name is not a valid command.
func (a *appRoutes) lookup(name []byte) *route {
	if r, ok := a.known[string(name)]; ok {
		return r
	}
	key := string(name)
	if r, ok := a.unlisted.Load(key); ok {
		return r.(*route)
	}
	if !catalog.ValidName(key) {
		return nil
	}
	cmd := catalog.Unlisted(key)
	r := a.build(App{ID: a.id, Default: a.appDefault()}, cmd)
	if a.unlistedCount.Load() >= maxUnlisted {
		r.transient = true
		return r
	}
	if _, loaded := a.unlisted.LoadOrStore(key, r); !loaded {
		a.unlistedCount.Add(1)
		a.log.Warn().Str(logKeySdkAppID, a.id).Str(logKeyCommand, key).Str("treated_as", cmd.Kind.String()).
			Msg("command not in the catalog: forwarding it by its name")
	}
	return r
}

// newBreaker returns a breaker that reports its state in open and the log,
// under the command label given.
func (a *appRoutes) newBreaker(app, label string, open prometheus.Gauge) *breaker {
	return &breaker{cfg: a.config.Breaker, onChange: func(isOpen bool) {
		if isOpen {
			open.Set(1)
			a.log.Warn().Str(logKeySdkAppID, app).Str(logKeyCommand, label).Msg("circuit breaker open: answering the default without asking deciders")
		} else {
			open.Set(0)
			a.log.Info().Str(logKeySdkAppID, app).Str(logKeyCommand, label).Msg("circuit breaker closed")
		}
	}}
}

func (a *appRoutes) appDefault() *Verdict {
	for _, app := range a.config.Apps {
		if app.ID == a.id {
			return app.Default
		}
	}
	return nil
}
