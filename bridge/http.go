package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"

	"github.com/timbus-dev/timbus/bridge/catalog"
	"github.com/timbus-dev/timbus/bridge/internal/jsonscan"
	"github.com/timbus-dev/timbus/deciders/protocol"
)

// Outcome says what became of a callback. It appears in logs, metrics and
// audit records.
type Outcome string

const (
	OutcomeDecided      Outcome = "decided"       // a decider's valid verdict was sent
	OutcomeTimeout      Outcome = "timeout"       // no answer in time: default sent
	OutcomeNoDeciders   Outcome = "no_deciders"   // nobody listens: default sent at once
	OutcomeInvalidReply Outcome = "invalid_reply" // the answer broke the command's rules: default sent
	OutcomeDeciderError Outcome = "decider_error" // the decider reported a failure: default sent
	OutcomeNATSError    Outcome = "nats_error"    // NATS unreachable: default sent
	OutcomePublished    Outcome = "published"     // an after callback was published as an event
	OutcomeRejected     Outcome = "rejected"      // the request was refused and nothing was published
	OutcomeLate         Outcome = "late"          // a reply came after the default was sent (audit only)
	OutcomeShed         Outcome = "shed"          // over max-inflight: default sent at once
	OutcomeCircuitOpen  Outcome = "circuit_open"  // the command's breaker is open: default sent at once
)

// AuditOutcomes returns every outcome an audit record can hold: those of
// callbacks, then rejected and late, which only audit records carry.
func AuditOutcomes() []Outcome {
	return append(slices.Clone(allOutcomes), OutcomeRejected, OutcomeLate)
}

// okAnswer is Tencent's plain acknowledgement.
var okAnswer = []byte(`{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`)

var keyCallbackCommand = []byte("CallbackCommand")

// parseCallback checks that body is one JSON object within jsonscan.Check's
// rules (UTF-8, nesting, no key written twice once decoded) and returns its
// CallbackCommand member, decoded, or nil when it has none
// (ContentCallback.ResultNotify sends none). A key that differs from
// "CallbackCommand" only in case is refused: decoders that match names
// without case (encoding/json, cJSON's GetObjectItem) could read it instead.
func parseCallback(body []byte) ([]byte, error) {
	var command []byte
	err := jsonscan.Object(body, func(key, v []byte) error {
		if !bytes.Equal(key, keyCallbackCommand) {
			// No look-alike is shorter: see catalog's lookalike.
			if len(key) >= len(keyCallbackCommand) && bytes.EqualFold(key, keyCallbackCommand) {
				return fmt.Errorf("%w: %q", errLookalikeCommand, key)
			}
			return nil
		}
		s, ok := jsonscan.String(v)
		if !ok || command != nil {
			return errBadBodyCommand
		}
		command = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	return command, nil
}

var (
	errBadBodyCommand   = errors.New(`"CallbackCommand" must be one string`)
	errLookalikeCommand = errors.New(`a key differs from "CallbackCommand" only in case`)
)

// handle serves one HTTP request from Tencent.
func (b *Bridge) handle(ctx *fasthttp.RequestCtx) {
	start := ctx.Time()
	if b.cfg.MetricsListen == "" && ctx.IsGet() && b.ops(ctx) {
		return
	}
	if string(ctx.Path()) != b.cfg.Path {
		b.reject(ctx, fasthttp.StatusNotFound, "not_found", "no callback endpoint at this path; callbacks go to "+b.cfg.Path)
		return
	}
	if !ctx.IsPost() {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, fasthttp.MethodPost)
		b.reject(ctx, fasthttp.StatusMethodNotAllowed, "method_not_allowed", "callbacks must use POST")
		return
	}
	if folded(ctx.Request.Header.RawHeaders()) {
		b.reject(ctx, fasthttp.StatusBadRequest, "bad_request", "folded header lines (obs-fold) are refused: a proxy in front may have read them otherwise")
		return
	}
	if b.sources != nil {
		if client := b.sources.client(ctx.RemoteIP(), ctx.Request.Header.PeekBytes); !b.sources.allowed(client) {
			b.reject(ctx, fasthttp.StatusForbidden, "source_not_allowed", fmt.Sprintf("source address %v is not in the allowed networks", client))
			return
		}
	}
	args := ctx.QueryArgs()
	appID := args.Peek("SdkAppid")
	if len(appID) == 0 {
		appID = args.Peek("SDKAppID")
	}
	app := b.apps[string(appID)]
	if app == nil {
		msg := "the SdkAppid query parameter is missing"
		if len(appID) > 0 {
			msg = fmt.Sprintf("SdkAppid %q is not served by this bridge", appID)
		}
		b.reject(ctx, fasthttp.StatusForbidden, "unknown_sdkappid", msg)
		return
	}
	if app.signer != nil {
		if err := app.signer.check(args.Peek("Sign"), args.Peek("RequestTime")); err != nil {
			b.reject(ctx, fasthttp.StatusUnauthorized, err.reason, err.msg)
			return
		}
	}
	name := args.Peek("CallbackCommand")
	if len(name) == 0 {
		b.reject(ctx, fasthttp.StatusBadRequest, "missing_command", "the CallbackCommand query parameter is missing")
		return
	}
	rt := app.lookup(name)
	if rt == nil {
		b.reject(ctx, fasthttp.StatusBadRequest, "invalid_command", fmt.Sprintf("CallbackCommand %q is not of the form <Family>.<Command>", name))
		return
	}
	body := ctx.PostBody()
	bodyCommand, err := parseCallback(body)
	if err != nil {
		b.reject(ctx, fasthttp.StatusBadRequest, "invalid_body", bodyRefusal(err))
		return
	}
	if bodyCommand != nil && !bytes.Equal(bodyCommand, name) {
		b.reject(ctx, fasthttp.StatusBadRequest, "command_mismatch",
			fmt.Sprintf("the body's CallbackCommand %q differs from the query's %q", bodyCommand, name))
		return
	}

	x := b.exchanges.Get().(*exchange)
	x.id = b.ids.appendNext(x.id[:0])
	x.set(slotRequestID, bytesString(x.id))
	x.set(slotSdkAppID, rt.app)
	x.set(slotCommand, rt.command.Name)
	x.set(slotClientIP, bytesString(args.Peek("ClientIP")))
	x.set(slotOptPlatform, bytesString(args.Peek("OptPlatform")))
	x.trace = appendTraceparent(x.trace[:0], ctx.Request.Header.Peek(HeaderTraceparent))
	x.set(slotTrace, bytesString(x.trace))
	x.msg.Subject = rt.subject
	x.msg.Data = body

	e := b.audit.entry()
	e.route = rt
	e.subject = rt.audit
	e.received = start
	e.app, e.command, e.kind = rt.app, rt.command.Name, rt.command.Kind.String()
	e.id = e.keep(x.id)
	e.clientIP = e.keep(args.Peek("ClientIP"))
	e.platform = e.keep(args.Peek("OptPlatform"))
	e.body = e.keep(body)

	inflight := b.inflight.Add(1)
	var res result
	if rt.decide {
		res = b.guardedDecide(x, rt, start, e, inflight)
	} else {
		res = b.publish(x, rt, start)
	}
	b.inflight.Add(-1)
	ctx.SetStatusCode(res.status)
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(res.answer)
	b.logCallback(x.id, rt, res, start)
	rt.metrics.outcomes[res.outcome].Inc()
	if rt.decide {
		rt.metrics.latency.Observe(time.Since(start).Seconds())
	}

	e.outcome, e.status, e.code, e.answer, e.decider = res.outcome, res.status, res.code, res.answer, res.decider
	if res.err != nil {
		e.reason = res.err.Error()
	}
	e.latency = time.Since(start)
	b.audit.filled(e)
	x.release()
	b.exchanges.Put(x)
}

var contentTypeJSON = []byte("application/json")

// folded reports whether a request's raw header block continues a header on
// the next line (obs-fold, RFC 9112 section 5.2). fasthttp joins such lines
// into one value, while a proxy in front may have read the continuation as a
// header of its own, Transfer-Encoding say: the two would disagree on where
// the request ends, which is how requests are smuggled.
func folded(raw []byte) bool {
	return bytes.Contains(raw, []byte("\n ")) || bytes.Contains(raw, []byte("\n\t"))
}

// bodyRefusal says why parseCallback refused a body.
func bodyRefusal(err error) string {
	if errors.Is(err, jsonscan.ErrSyntax) || errors.Is(err, jsonscan.ErrNotObject) {
		return "the body must be one JSON object: " + err.Error()
	}
	// A JSON object, but one decoders could read otherwise than timbus, or
	// choke on: see jsonscan.Check and parseCallback.
	return "the body is refused: " + err.Error()
}

// result is what became of one callback.
type result struct {
	status  int
	answer  []byte
	outcome Outcome
	code    int
	err     error  // why the default was sent, if it was
	decider string // the answering decider's name, if it gave one
}

// guardedDecide decides unless the bridge is over its in-flight cap or the
// command's circuit breaker is open; then the default goes out at once.
func (b *Bridge) guardedDecide(x *exchange, rt *route, start time.Time, e *auditEntry, inflight int64) result {
	if limit := b.cfg.MaxInflight; limit > 0 && inflight > int64(limit) {
		return rt.fallbackResult(x.msg.Data, OutcomeShed, errShed)
	}
	if rt.breaker == nil {
		return b.decide(x, rt, start, e)
	}
	now := time.Now()
	ok, probe := rt.breaker.allow(now)
	if !ok {
		return rt.fallbackResult(x.msg.Data, OutcomeCircuitOpen, errCircuitOpen)
	}
	res := b.decide(x, rt, start, e)
	rt.breaker.record(time.Now(), failed(res.outcome), probe)
	return res
}

var (
	errShed        = errors.New("over max-inflight: answered the default without asking deciders")
	errCircuitOpen = errors.New("circuit breaker open: answered the default without asking deciders")
)

// decide asks the deciders and returns their verdict, or the route's default.
// With a shadow configured, the shadow is asked too; its verdict goes only
// into the audit entry e.
func (b *Bridge) decide(x *exchange, rt *route, start time.Time, e *auditEntry) result {
	deadline := start.Add(rt.timeout)
	x.deadline = strconv.AppendInt(x.deadline[:0], deadline.UnixMilli(), 10)
	x.set(slotDeadline, bytesString(x.deadline))
	fallback := func(o Outcome, err error) result { return rt.fallbackResult(x.msg.Data, o, err) }
	if !time.Now().Before(deadline) {
		return fallback(OutcomeTimeout, errors.New("deadline passed before the request was sent"))
	}
	if !b.nc.IsConnected() {
		return fallback(OutcomeNATSError, fmt.Errorf("%w: %s", ErrNATS, b.nc.Status()))
	}
	if rt.shadow != "" {
		b.askShadow(x, rt, deadline, e)
	}
	reply, buf, err := b.mux.request(&x.msg, deadline, x.timer, x.reply, func() lateInfo {
		return lateInfo{route: rt, requestID: string(x.id), received: start}
	})
	x.reply = buf
	switch {
	case errors.Is(err, nats.ErrTimeout):
		return fallback(OutcomeTimeout, err)
	case err != nil:
		return fallback(OutcomeNATSError, err)
	}
	outcome, code, err := JudgeReply(rt.command, reply)
	if outcome != OutcomeDecided {
		return fallback(outcome, err)
	}
	return result{status: fasthttp.StatusOK, answer: reply.Data, outcome: OutcomeDecided, code: code,
		decider: reply.Header.Get(protocol.HeaderDecider)}
}

// JudgeReply reads a decider's reply to a command as the bridge does: a
// valid verdict is OutcomeDecided with its ErrorCode; otherwise the outcome
// says what was wrong (no deciders, decider error, invalid reply) and err why.
func JudgeReply(cmd *catalog.Command, reply *nats.Msg) (Outcome, int, error) {
	if len(reply.Data) == 0 && reply.Header.Get(statusHeader) == noRespondersStatus {
		return OutcomeNoDeciders, 0, nats.ErrNoResponders
	}
	if desc := reply.Header.Get(protocol.HeaderServiceError); desc != "" || reply.Header.Get(protocol.HeaderServiceErrorCode) != "" {
		return OutcomeDeciderError, 0, errors.New(strings.TrimSpace("decider reported an error: " +
			reply.Header.Get(protocol.HeaderServiceErrorCode) + " " + desc))
	}
	code, err := cmd.ValidateReply(reply.Data)
	if err != nil {
		return OutcomeInvalidReply, 0, err
	}
	return OutcomeDecided, code, nil
}

// The status NATS sends in place of a reply when nobody subscribes.
const (
	statusHeader       = "Status"
	noRespondersStatus = "503"
)

// askShadow sends the request to the shadow decider too, without waiting.
func (b *Bridge) askShadow(x *exchange, rt *route, deadline time.Time, e *auditEntry) {
	e.shadowed = true
	e.waits.Add(1)
	subject := x.msg.Subject
	x.msg.Subject = rt.shadow
	err := b.mux.shadowRequest(&x.msg, rt, deadline, e)
	x.msg.Subject, x.msg.Reply = subject, ""
	if err != nil {
		b.shadowAnswered(rt, e, nil, OutcomeNATSError, err)
	}
}

// shadowAnswered records a shadow's verdict, or its failure, in e: the
// answer the shadow would have had Tencent receive.
func (b *Bridge) shadowAnswered(rt *route, e *auditEntry, reply *nats.Msg, outcome Outcome, err error) {
	code := 0
	if reply != nil {
		outcome, code, err = JudgeReply(rt.command, reply)
	}
	if outcome == OutcomeDecided {
		e.shadowAnswer = reply.Data
	} else {
		code = rt.code
		e.shadowAnswer = rt.fallbackFor(e.get(e.body))
	}
	e.shadowOutcome, e.shadowCode = outcome, code
	if err != nil {
		e.shadowReason = err.Error()
	}
	b.audit.filled(e)
}

// lateReply records a reply that came after the default verdict was sent,
// so that teams see what their decider would have said.
func (b *Bridge) lateReply(c *call, reply *nats.Msg) {
	info := c.late
	rt := info.route
	e := b.audit.entry()
	e.subject, e.received, e.late = rt.audit, info.received, true
	e.app, e.command, e.kind = rt.app, rt.command.Name, rt.command.Kind.String()
	e.id = e.keep([]byte(info.requestID))
	outcome, code, err := JudgeReply(rt.command, reply)
	e.outcome, e.code, e.answer, e.status = OutcomeLate, code, reply.Data, fasthttp.StatusOK
	e.decider = reply.Header.Get(protocol.HeaderDecider)
	e.latency = time.Since(info.received)
	e.reason = fmt.Sprintf("reply came %v after the deadline; Tencent got the default", time.Since(c.deadline).Round(time.Millisecond))
	if outcome != OutcomeDecided {
		e.reason += "; the reply was " + string(outcome) + ": " + err.Error()
	}
	b.audit.filled(e)
}

// publish sends an after callback as an event, and answers 200 only once
// NATS has it: with an events stream, once the stream acknowledged it;
// without, once the server confirmed it (publishConfirmed), all before
// Tencent's deadline. Otherwise Tencent gets 503, which lets a retrying
// Tencent deliver it again.
func (b *Bridge) publish(x *exchange, rt *route, start time.Time) result {
	x.set(slotDeadline, "")
	var (
		err  error
		note error
	)
	if b.events != nil {
		x.setEventID(rt.app, rt.command.Name, x.msg.Data)
		ctx, cancel := context.WithDeadline(b.group.ctx, start.Add(rt.timeout))
		var ack *jetstream.PubAck
		ack, err = b.events.PublishMsg(ctx, &x.msg)
		cancel()
		if err == nil && ack.Duplicate {
			note = errDuplicateEvent
		}
	} else {
		err = b.publishConfirmed(x, start.Add(rt.timeout))
	}
	if err != nil {
		if errors.Is(err, nats.ErrReconnectBufExceeded) {
			// What the client says while disconnected, as it keeps no
			// reconnect buffer.
			err = fmt.Errorf("%w: connection %s", ErrNATS, b.nc.Status())
		}
		b.recheckStreams(err)
		answer := errorAnswer("nats_error", "the event could not be published: "+err.Error())
		return result{status: fasthttp.StatusServiceUnavailable, answer: answer, outcome: OutcomeNATSError, err: err}
	}
	return result{status: fasthttp.StatusOK, answer: rt.fallbackFor(x.msg.Data), outcome: OutcomePublished, code: rt.code, err: note}
}

// publishConfirmed publishes an event on core NATS and returns once the
// server has it (see confirmer), or why it may not have it.
func (b *Bridge) publishConfirmed(x *exchange, deadline time.Time) error {
	epoch := b.confirm.epoch()
	if err := b.nc.PublishMsg(&x.msg); err != nil {
		return err
	}
	err := b.confirm.confirm(x.confirm, epoch, deadline, x.timer)
	if err != nil {
		// The confirmer may still answer the abandoned wait later.
		x.confirm = newConfirmWait()
	}
	return err
}

// errDuplicateEvent notes an event the stream already held: a delivery
// Tencent repeated.
var errDuplicateEvent = errors.New("duplicate delivery: the events stream already holds it")

// logCallback writes the callback's one log line, at info whatever the
// outcome: at warn level an operator sees no per-callback lines, and
// failures are counted in the metrics instead.
func (b *Bridge) logCallback(id []byte, rt *route, res result, start time.Time) {
	e := b.log.Info()
	if e == nil {
		return
	}
	e = e.Bytes(logKeyRequestID, id).Str(logKeySdkAppID, rt.app).Str(logKeyCommand, rt.command.Name).
		Str(logKeyOutcome, string(res.outcome)).Int(logKeyCode, res.code).
		Float64(logKeyLatency, float64(time.Since(start).Microseconds())/1000)
	if res.err != nil {
		e = e.AnErr(logKeyReason, res.err)
	}
	e.Msg("callback")
}

// rejection is the body of every refused request: Tencent's reply shape with
// ActionStatus FAIL, and a machine-readable reason.
type rejection struct {
	ActionStatus string
	ErrorCode    int
	ErrorInfo    string
	Reason       string
}

func errorAnswer(reason, msg string) []byte {
	b, _ := json.Marshal(rejection{ActionStatus: "FAIL", ErrorCode: 1, ErrorInfo: "timbus: " + msg, Reason: reason})
	return b
}

// reject answers a request that is refused before anything is published
// to deciders, and records the refusal for auditors.
//
// The connection is closed after the answer: Tencent's next callback comes
// on a new one, and a client that only sends refused requests holds no
// idle connection for IdleTimeout.
func (b *Bridge) reject(ctx *fasthttp.RequestCtx, status int, reason, msg string) {
	answer := errorAnswer(reason, msg)
	ctx.SetConnectionClose()
	ctx.SetStatusCode(status)
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBody(answer)
	b.metrics.reject(reason)
	id := b.ids.appendNext(nil)
	b.log.Info().Bytes(logKeyRequestID, id).Str(logKeyOutcome, string(OutcomeRejected)).Str(logKeyReason, reason).
		Int("status", status).Str("remote", ctx.RemoteIP().String()).Msg(msg)

	e := b.rejectedEntry(reason, id, ctx.Time())
	args := ctx.QueryArgs()
	if appID := args.Peek("SdkAppid"); len(appID) > 0 {
		e.app = string(appID)
	}
	e.command = string(args.Peek("CallbackCommand"))
	e.outcome, e.status, e.code, e.answer, e.reason = OutcomeRejected, status, 1, answer, msg
	e.query = string(redactSign(args.QueryString()))
	e.remote = ctx.RemoteAddr().String()
	e.latency = time.Since(ctx.Time())
	b.audit.submit(e)
}

// rejectedEntry starts the audit record of a refusal.
func (b *Bridge) rejectedEntry(reason string, id []byte, received time.Time) *auditEntry {
	e := b.audit.entry()
	e.subject = b.cfg.SubjectPrefix + "." + protocol.KindAudit + "." + protocol.RejectedToken + "." + reason
	e.received = received
	e.id = e.keep(id)
	return e
}

// auditRefusal records a refusal that came before any request, such as a
// client certificate refused in the TLS handshake.
func (b *Bridge) auditRefusal(reason string, status int, msg string, remote net.Addr) {
	now := time.Now()
	e := b.rejectedEntry(reason, b.ids.appendNext(nil), now)
	e.outcome, e.status, e.code, e.reason = OutcomeRejected, status, 1, msg
	if remote != nil {
		e.remote = remote.String()
	}
	b.audit.submit(e)
}

// handleError answers requests fasthttp refuses before the handler runs, such
// as an oversized body or a malformed request line.
func (b *Bridge) handleError(ctx *fasthttp.RequestCtx, err error) {
	// A connection that sent nothing (a load balancer's TCP check, an idle
	// client) or too little before ReadTimeout is counted, not audited: it
	// carried no callback.
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		b.metrics.reject("read_timeout")
		ctx.SetConnectionClose() // as for every refusal; fasthttp would too
		ctx.SetStatusCode(fasthttp.StatusRequestTimeout)
		ctx.SetContentTypeBytes(contentTypeJSON)
		ctx.SetBody(errorAnswer("read_timeout", "no complete request within the read timeout"))
		return
	}
	status, reason := fasthttp.StatusBadRequest, "bad_request"
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		status, reason = fasthttp.StatusRequestEntityTooLarge, "body_too_large"
	case errors.As(err, &small):
		status, reason = fasthttp.StatusRequestHeaderFieldsTooLarge, "header_too_large"
	}
	// fasthttp quotes the bytes it could not parse, the query among them.
	b.reject(ctx, status, reason, string(redactSign([]byte(err.Error()))))
}
