package deciders

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/timbus-dev/timbus/deciders/catalog"
	"github.com/timbus-dev/timbus/deciders/protocol"
)

// Errors returned by New and Handle, and wrapped in those a Decider reports
// through Config.OnResult.
var (
	// ErrConfig is wrapped by every error Config.Validate returns.
	ErrConfig = errors.New("deciders: invalid config")
	// ErrCommand is wrapped by the errors Handle returns for a command or
	// pattern it cannot serve.
	ErrCommand = errors.New("deciders: invalid command")
	// ErrStopped is returned by Handle once Stop has been called.
	ErrStopped = errors.New("deciders: decider stopped")
	// ErrPanic is wrapped by the *PanicError of a handler that panicked.
	ErrPanic = errors.New("deciders: handler panicked")
)

// AllApps is the SdkAppID that serves every Tencent app.
const AllApps = "*"

// Config is a decider's identity and where it listens. Name and Version are
// required; the rest have defaults.
type Config struct {
	// Name identifies the service in $SRV.PING, INFO and STATS and in `nats
	// micro ls`: letters, digits, '-' and '_'.
	Name string
	// Version is the service's semantic version, e.g. "1.0.0".
	Version string
	// Description is shown by `nats micro info`.
	Description string
	// SubjectPrefix is the bridge's --subject-prefix; protocol.DefaultSubjectPrefix
	// ("timbus") if empty.
	SubjectPrefix string
	// SdkAppID is the Tencent app whose callbacks the decider answers; AllApps
	// ("*"), the default, answers every app.
	SdkAppID string
	// QueueGroup is shared by every copy of the decider, so that each
	// callback goes to one of them; Name if empty.
	QueueGroup string
	// NameReplies makes every reply carry the Timbus-Decider header,
	// "<Name>/<Version>/<instance id>", which timbus copies into the audit
	// record's decider field. Off by default: a header on every reply costs
	// the decider about a tenth of its CPU per callback, and timbus the
	// decoding. $SRV.INFO lists the instances either way.
	NameReplies bool
	// OnResult, if set, is called once for every callback, after the
	// decider has replied or decided not to. It runs on the callback's
	// goroutine, so it should be quick; it is the place to log decisions.
	OnResult func(Result)
}

var (
	// As micro checks them; checked here first for clearer errors.
	nameRegexp   = regexp.MustCompile(`^[A-Za-z0-9\-_]+$`)
	semVerRegexp = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
)

// Validate reports the first problem with c, wrapped in ErrConfig. Empty
// optional fields are valid: they take their defaults.
func (c Config) Validate() error {
	switch {
	case !nameRegexp.MatchString(c.Name):
		return fmt.Errorf("%w: Name %q: want letters, digits, '-' and '_'", ErrConfig, c.Name)
	case !semVerRegexp.MatchString(c.Version):
		return fmt.Errorf("%w: Version %q: want a semantic version such as 1.0.0", ErrConfig, c.Version)
	case c.SubjectPrefix != "" && !protocol.ValidPrefix(c.SubjectPrefix):
		return fmt.Errorf("%w: SubjectPrefix %q: want dot-separated tokens without spaces or wildcards", ErrConfig, c.SubjectPrefix)
	case c.SdkAppID != "" && c.SdkAppID != AllApps && !isDigits(c.SdkAppID):
		return fmt.Errorf("%w: SdkAppID %q: want a decimal SdkAppid or %q", ErrConfig, c.SdkAppID, AllApps)
	case strings.ContainsAny(c.QueueGroup, " \t\r\n*>"):
		return fmt.Errorf("%w: QueueGroup %q: want a name without spaces or wildcards", ErrConfig, c.QueueGroup)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = protocol.DefaultSubjectPrefix
	}
	if c.SdkAppID == "" {
		c.SdkAppID = AllApps
	}
	if c.QueueGroup == "" {
		c.QueueGroup = c.Name
	}
}

// Handler decides one callback. ctx ends at the callback's deadline,
// after which the bridge no longer waits. Returning an error says "I could not
// decide" rather than "deny": the decider replies with the NATS services
// error headers (code 500, or the Code of an Error in err's chain), and the
// bridge answers Tencent with its default verdict. A panic is recovered and
// treated as an error.
type Handler func(ctx context.Context, cb *Callback) (Verdict, error)

// Error is a handler error with a chosen code, sent in the
// Nats-Service-Error-Code header, for example 400 for a body the handler
// cannot read or 503 for a dependency that is down. Return it as
// Error{...} or &Error{...}, wrapped or not.
type Error struct {
	Code        int
	Description string
}

func (e Error) Error() string { return strconv.Itoa(e.Code) + ": " + e.Description }

// PanicError is the error of a handler that panicked.
type PanicError struct {
	Value any    // what the handler panicked with
	Stack []byte // the handler goroutine's stack when it panicked
}

func (e *PanicError) Error() string { return fmt.Sprintf("%v: %v", ErrPanic, e.Value) }

func (e *PanicError) Unwrap() error { return ErrPanic }

// Outcome says what a decider did with a callback.
type Outcome uint8

const (
	// Decided: the handler's verdict was sent.
	Decided Outcome = iota
	// Failed: the handler returned an error or panicked, or its verdict
	// broke the command's rules; the error headers were sent.
	Failed
	// Expired: the callback's deadline had passed when it came up, so the
	// handler was not called and nothing was sent.
	Expired
)

func (o Outcome) String() string {
	switch o {
	case Decided:
		return "decided"
	case Failed:
		return "failed"
	case Expired:
		return "expired"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// Result is what Config.OnResult hears about one callback.
type Result struct {
	Callback *Callback
	Outcome  Outcome
	// Verdict is the handler's verdict (for Decided, the one sent).
	Verdict Verdict
	// Err is why the callback Failed, or, for Decided, why the reply could
	// not be sent.
	Err error
	// Duration is the time from receiving the callback to replying.
	Duration time.Duration
	// Late is set when the reply went out after the callback's deadline:
	// the bridge had already answered Tencent with its default and only
	// records the reply in its audit.
	Late bool
}

// EndpointData is the Data of each endpoint in the decider's micro stats
// ($SRV.STATS, `nats micro stats`): what micro's counters do not show.
type EndpointData struct {
	Expired         int64 `json:"expired"`          // dropped unanswered: past their deadline
	Late            int64 `json:"late"`             // answered after their deadline
	Panics          int64 `json:"panics"`           // handler panics (also counted as errors)
	InvalidVerdicts int64 `json:"invalid_verdicts"` // verdicts the command does not accept (also errors)
}

// Decider is a NATS micro service answering timbus "before" callbacks. Its
// methods are safe for concurrent use.
//
// As in every micro service, each endpoint handles its callbacks one at a
// time, in order; a callback that waited past its deadline behind slower ones
// is dropped unanswered. Start more copies of the decider (they share the
// queue group) to decide more callbacks at once.
type Decider struct {
	nc  *nats.Conn
	cfg Config
	svc micro.Service
	// name is the Timbus-Decider header sent with every error reply, and
	// every reply with NameReplies:
	// "<name>/<version>/<micro instance id>", copied into the audit record.
	name string
	// named adds it to a reply. One header map serves every reply: micro
	// and the NATS client only read it.
	named micro.RespondOpt

	mu       sync.Mutex
	patterns []string
	stopped  bool

	endpoints sync.Map // endpoint name -> *endpoint
	active    tracker
	stopOnce  sync.Once
	stopErr   error
}

// endpoint is one registered command or pattern.
type endpoint struct {
	handler                        Handler
	expired, late, panics, invalid atomic.Int64
}

// New registers a micro service named cfg.Name on nc. It answers $SRV.PING,
// INFO and STATS at once, and callbacks once Handle adds endpoints. nc stays
// the caller's: Stop does not close it.
func New(nc *nats.Conn, cfg Config) (*Decider, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil NATS connection", ErrConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	d := &Decider{
		nc:  nc,
		cfg: cfg,
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        cfg.Name,
		Version:     cfg.Version,
		Description: cfg.Description,
		QueueGroup:  cfg.QueueGroup,
		Metadata: map[string]string{
			"timbus_protocol": protocol.Version,
			"subject_prefix":  cfg.SubjectPrefix,
			"sdkappid":        cfg.SdkAppID,
		},
		StatsHandler: d.endpointData,
	})
	if err != nil {
		return nil, fmt.Errorf("deciders: %w", err)
	}
	d.svc = svc
	d.name = cfg.Name + "/" + cfg.Version + "/" + svc.Info().ID
	d.named = micro.WithHeaders(micro.Headers{protocol.HeaderDecider: {d.name}})
	return d, nil
}

// Handle answers command with h, on "<prefix>.decide.<SdkAppID>.<command>".
// command is a Tencent command such as "Group.CallbackBeforeSendMsg", or a
// NATS pattern over commands: "Group.>" (every group command), "*.CallbackBeforeSendMsg"
// (every family's), ">" (everything). A command Tencent sends as a
// notification is refused, as it never reaches a decider; so is a pattern
// overlapping one already handled, since each callback would go to one of the
// two at random.
func (d *Decider) Handle(command string, h Handler) error {
	if h == nil {
		return fmt.Errorf("%w: %q: nil handler", ErrCommand, command)
	}
	if err := checkPattern(command); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return ErrStopped
	}
	for _, p := range d.patterns {
		if overlap(p, command) {
			return fmt.Errorf("%w: %q overlaps %q, already handled", ErrCommand, command, p)
		}
	}
	ep := &endpoint{handler: h}
	name := endpointName(command)
	subject := protocol.Subject(d.cfg.SubjectPrefix, protocol.KindDecide, d.cfg.SdkAppID, command)
	d.endpoints.Store(name, ep)
	err := d.svc.AddEndpoint(name, micro.HandlerFunc(func(req micro.Request) { d.serve(ep, req) }),
		micro.WithEndpointSubject(subject),
		micro.WithEndpointMetadata(map[string]string{"command": command}))
	if err != nil {
		d.endpoints.Delete(name)
		return fmt.Errorf("deciders: %s: %w", command, err)
	}
	d.patterns = append(d.patterns, command)
	return nil
}

// Stop stops taking callbacks and returns once those already received are
// answered: NATS hands the callbacks of a stopped decider to the other copies
// in its queue group. It waits for the handlers of every subscription on the
// connection to catch up, so it must not be called from a handler, and it
// must come before the connection is drained or closed. Calling it again
// returns the first call's result.
func (d *Decider) Stop() error {
	d.stopOnce.Do(func() {
		d.mu.Lock()
		d.stopped = true
		d.mu.Unlock()
		// Unsubscribes (micro drains each endpoint) ...
		d.stopErr = d.svc.Stop()
		if d.nc.IsConnected() {
			// ... and a round trip later every callback the server sent
			// before the unsubscription is in the client's queues. A barrier
			// behind them says when they are done.
			_ = d.nc.FlushTimeout(stopFlushTimeout)
		}
		done := make(chan struct{})
		if d.nc.Barrier(func() { close(done) }) == nil {
			<-done
		}
		d.active.wait()
	})
	return d.stopErr
}

// stopFlushTimeout bounds Stop's round trip to the NATS server.
const stopFlushTimeout = 2 * time.Second

// Info returns the service's micro info: identity and endpoints.
func (d *Decider) Info() micro.Info { return d.svc.Info() }

// Stats returns the service's micro stats; each endpoint's Data holds its
// EndpointData.
func (d *Decider) Stats() micro.Stats { return d.svc.Stats() }

// endpointData is the micro StatsHandler. micro calls it under its own lock,
// so it reads only atomics.
func (d *Decider) endpointData(e *micro.Endpoint) any {
	v, ok := d.endpoints.Load(e.Name)
	if !ok {
		return nil
	}
	ep := v.(*endpoint)
	return EndpointData{
		Expired:         ep.expired.Load(),
		Late:            ep.late.Load(),
		Panics:          ep.panics.Load(),
		InvalidVerdicts: ep.invalid.Load(),
	}
}

// serve answers one callback.
func (d *Decider) serve(ep *endpoint, req micro.Request) {
	d.active.enter()
	defer d.active.leave()
	start := time.Now()
	// One allocation for the callback and its context.
	sv := &served{}
	cb := &sv.cb
	d.read(cb, req)
	if !cb.Deadline.IsZero() && !start.Before(cb.Deadline) {
		// The bridge has answered Tencent already; a reply would be wasted.
		ep.expired.Add(1)
		d.report(Result{Callback: cb, Outcome: Expired})
		return
	}

	var v Verdict
	var err error
	if cb.Deadline.IsZero() {
		v, err = call(context.Background(), ep.handler, cb)
	} else {
		ctx := &sv.ctx
		ctx.deadline = cb.Deadline
		v, err = call(ctx, ep.handler, cb)
		ctx.cancel()
	}
	var reply []byte
	buf := replyBuffers.Get().(*[]byte)
	defer replyBuffers.Put(buf)
	if err == nil {
		if reply, err = v.appendReply((*buf)[:0], cb.Command); err != nil {
			ep.invalid.Add(1)
		}
		if cap(reply) <= 4<<10 {
			*buf = reply[:0] // keep a grown buffer, not a huge one
		}
	} else if errors.Is(err, ErrPanic) {
		ep.panics.Add(1)
	}

	res := Result{Callback: cb, Outcome: Decided, Verdict: v, Err: err}
	if err != nil {
		res.Outcome = Failed
		code, desc := errorReply(err)
		if serr := req.Error(code, desc, nil, d.named); serr != nil {
			res.Err = errors.Join(err, fmt.Errorf("deciders: error reply not sent: %w", serr))
		}
	} else if serr := d.respond(req, reply); serr != nil {
		res.Err = fmt.Errorf("deciders: reply not sent: %w", serr)
	}
	// The monotonic clock alone is half the price of time.Now, and start
	// carries the wall time the deadline is compared with.
	res.Duration = time.Since(start)
	if !cb.Deadline.IsZero() && !start.Add(res.Duration).Before(cb.Deadline) {
		res.Late = true
		ep.late.Add(1)
	}
	d.report(res)
}

// served is what serve allocates per callback.
type served struct {
	cb  Callback
	ctx deadlineContext
}

// replyBuffers hold encoded verdicts until they are published: the NATS
// client copies a message before Publish returns.
var replyBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 128); return &b }}

// read fills cb from a request: the app and command from its subject, the
// deadline and request id from its reply subject, the rest from its headers.
func (d *Decider) read(cb *Callback, req micro.Request) {
	h := nats.Header(req.Headers())
	*cb = Callback{Request: protocol.ParseRequest(req.Subject(), req.Reply(), h), Header: h, Body: req.Data()}
}

// respond sends a verdict. Without NameReplies it publishes the bare
// reply itself: no headers to encode, and no message to allocate as micro's
// Respond does.
func (d *Decider) respond(req micro.Request, reply []byte) error {
	if d.cfg.NameReplies {
		return req.Respond(reply, d.named)
	}
	if req.Reply() == "" {
		return micro.ErrRespond
	}
	return d.nc.Publish(req.Reply(), reply)
}

func (d *Decider) report(r Result) {
	if d.cfg.OnResult != nil {
		d.cfg.OnResult(r)
	}
}

// call runs h, turning a panic into a *PanicError.
func call(ctx context.Context, h Handler, cb *Callback) (v Verdict, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = Verdict{}, &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return h(ctx, cb)
}

// maxDescription bounds the Nats-Service-Error header.
const maxDescription = 1024

// errorReply returns the micro error code and description for err.
func errorReply(err error) (code, desc string) {
	code, desc = "500", err.Error()
	var e Error
	var pe *Error
	switch {
	case errors.As(err, &e):
	case errors.As(err, &pe) && pe != nil:
		e = *pe
	default:
		return code, sanitize(desc)
	}
	if e.Code > 0 {
		code = strconv.Itoa(e.Code)
	}
	if e.Description != "" {
		desc = e.Description
	}
	return code, sanitize(desc)
}

// sanitize makes s a header value: one line, bounded, never empty.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxDescription {
		cut := maxDescription
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	if strings.TrimSpace(s) == "" {
		s = "decider failed"
	}
	return s
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// checkPattern reports whether p is a command or a pattern over commands.
func checkPattern(p string) error {
	toks := strings.Split(p, ".")
	wild := false
	for i, t := range toks {
		switch {
		case t == ">":
			if i != len(toks)-1 {
				return fmt.Errorf("%w: %q: '>' must come last", ErrCommand, p)
			}
			wild = true
		case t == "*":
			wild = true
		case !catalog.ValidToken(t):
			return fmt.Errorf("%w: %q: want <Family>.<Command> of letters, digits and '_', or a pattern with * and >", ErrCommand, p)
		}
	}
	switch {
	case len(toks) > 2 || (len(toks) == 1 && p != ">"):
		return fmt.Errorf("%w: %q: want <Family>.<Command>, e.g. Group.CallbackBeforeSendMsg, or a pattern such as Group.>", ErrCommand, p)
	case wild:
		return nil
	}
	cmd, ok := catalog.Lookup(p)
	if !ok {
		cmd = catalog.Unlisted(p)
	}
	if !cmd.Kind.NeedsReply() {
		return fmt.Errorf("%w: %q is a notification: timbus publishes it as an event and never asks for a verdict", ErrCommand, p)
	}
	return nil
}

// overlap reports whether some subject matches both patterns.
func overlap(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		switch {
		case at[i] == ">" || bt[i] == ">":
			return true
		case at[i] != bt[i] && at[i] != "*" && bt[i] != "*":
			return false
		}
	}
	return len(at) == len(bt)
}

// endpointName turns a pattern into a micro endpoint name, which allows only
// letters, digits, '-' and '_': "Group.CallbackBeforeSendMsg" becomes
// "Group-CallbackBeforeSendMsg", "Group.>" "Group-all", "*.X" "any-X".
func endpointName(pattern string) string {
	toks := strings.Split(pattern, ".")
	for i, t := range toks {
		switch t {
		case ">":
			toks[i] = "all"
		case "*":
			toks[i] = "any"
		}
	}
	return strings.Join(toks, "-")
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// tracker counts the callbacks being served, so that Stop can wait for them.
// Entering and leaving are an atomic add each; the lock is taken only once
// someone waits.
type tracker struct {
	n       atomic.Int64
	waiting atomic.Bool
	mu      sync.Mutex
	idle    chan struct{} // closed when n drops to 0; nil when nobody waits
}

func (t *tracker) enter() { t.n.Add(1) }

func (t *tracker) leave() {
	// A waiter stores waiting before it reads n: either this sees it, or the
	// waiter sees the count this leaves.
	if t.n.Add(-1) != 0 || !t.waiting.Load() {
		return
	}
	t.mu.Lock()
	if t.idle != nil && t.n.Load() == 0 {
		close(t.idle)
		t.idle = nil
	}
	t.mu.Unlock()
}

func (t *tracker) wait() {
	t.waiting.Store(true)
	t.mu.Lock()
	if t.n.Load() == 0 {
		t.mu.Unlock()
		return
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle := t.idle
	t.mu.Unlock()
	<-idle
}
