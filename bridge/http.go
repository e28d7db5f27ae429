package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/jsonscan"
)

// This file is the HTTP front of the bridge: it checks that a request is a
// callback from Tencent for a served app (guards), refuses what is not, and
// writes the answer. What the answer is comes from decide.go.

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
	// A decide request carries its request id in the reply subject, and
	// its headers only when asked for: each costs every decider too.
	if !rt.decide || b.cfg.DecideHeaders == DecideHeadersAll {
		if !rt.decide {
			x.set(slotRequestID, bytesString(x.id))
		}
		x.set(slotClientIP, bytesString(args.Peek("ClientIP")))
		x.set(slotOptPlatform, bytesString(args.Peek("OptPlatform")))
		x.trace = appendTraceparent(x.trace[:0], ctx.Request.Header.Peek(HeaderTraceparent))
		x.set(slotTrace, bytesString(x.trace))
	}
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
	e.bodyChecked = true // by parseCallback

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
	// A decider's verdict passed JudgeReply's jsonscan.Check; defaults are
	// checked by the encoder as any other value.
	e.answerChecked = res.outcome == protocol.OutcomeDecided
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

// logCallback writes the callback's log line, if Config.LogCallbacks asks
// for one, at info whatever the outcome: at warn level an operator sees no
// per-callback lines, and failures are counted in the metrics instead.
func (b *Bridge) logCallback(id []byte, rt *route, res result, start time.Time) {
	switch b.cfg.LogCallbacks {
	case LogCallbacksNone:
		return
	case LogCallbacksAll:
	default:
		if res.err == nil && (res.outcome == protocol.OutcomeDecided || res.outcome == protocol.OutcomePublished) {
			return
		}
	}
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
	if b.cfg.LogCallbacks != LogCallbacksNone {
		b.log.Info().Bytes(logKeyRequestID, id).Str(logKeyOutcome, string(protocol.OutcomeRejected)).Str(logKeyReason, reason).
			Int("status", status).Str("remote", ctx.RemoteIP().String()).Msg(msg)
	}

	e := b.rejectedEntry(reason, id, ctx.Time())
	args := ctx.QueryArgs()
	if appID := args.Peek("SdkAppid"); len(appID) > 0 {
		e.app = string(appID)
	}
	e.command = string(args.Peek("CallbackCommand"))
	e.outcome, e.status, e.code, e.answer, e.reason = protocol.OutcomeRejected, status, 1, answer, msg
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
	e.outcome, e.status, e.code, e.reason = protocol.OutcomeRejected, status, 1, msg
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
