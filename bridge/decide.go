package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"

	"github.com/timbus-dev/timbus/deciders/protocol"
)

// This file turns an accepted callback into an answer: it asks the deciders
// over NATS (or publishes an after callback), judges their reply, asks a
// shadow decider beside them, records late replies, and falls back to the
// configured default when no valid verdict comes in time.

// result is what became of one callback.
type result struct {
	status  int
	answer  []byte
	outcome protocol.Outcome
	code    int
	err     error  // why the default was sent, if it was
	decider string // the answering decider's name, if it gave one
}

// guardedDecide decides unless the bridge is over its in-flight cap or the
// command's circuit breaker is open; then the default goes out at once.
func (b *Bridge) guardedDecide(x *exchange, rt *route, start time.Time, e *auditEntry, inflight int64) result {
	if limit := b.cfg.MaxInflight; limit > 0 && inflight > int64(limit) {
		return rt.fallbackResult(x.msg.Data, protocol.OutcomeShed, errShed)
	}
	if rt.breaker == nil {
		return b.decide(x, rt, start, e)
	}
	now := time.Now()
	ok, probe := rt.breaker.allow(now)
	if !ok {
		return rt.fallbackResult(x.msg.Data, protocol.OutcomeCircuitOpen, errCircuitOpen)
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
	fallback := func(o protocol.Outcome, err error) result { return rt.fallbackResult(x.msg.Data, o, err) }
	if !time.Now().Before(deadline) {
		return fallback(protocol.OutcomeTimeout, errors.New("deadline passed before the request was sent"))
	}
	// No IsConnected check first: it takes the connection's lock, which
	// the publish takes anyway, and the publish fails at once while the
	// connection is down (no reconnect buffer).
	if rt.shadow != "" {
		b.askShadow(x, rt, deadline, e)
	}
	reply, buf, err := b.mux.request(&x.msg, x.id, deadline, x.timer, x.reply, func() handoff {
		// Copied now: x's buffers are reused once the default is sent.
		requestID := string(x.id)
		return func(reply *nats.Msg) {
			if reply != nil {
				b.lateReply(rt, requestID, start, deadline, reply)
			}
		}
	})
	x.reply = buf
	switch {
	case errors.Is(err, nats.ErrTimeout):
		return fallback(protocol.OutcomeTimeout, err)
	case err != nil:
		return fallback(protocol.OutcomeNATSError, b.publishError(err))
	}
	outcome, code, err := rt.command.JudgeReply(reply)
	if outcome != protocol.OutcomeDecided {
		return fallback(outcome, err)
	}
	return result{status: fasthttp.StatusOK, answer: reply.Data, outcome: protocol.OutcomeDecided, code: code,
		decider: reply.Header.Get(protocol.HeaderDecider)}
}

// publishError names the outage behind a failed publish: the client keeps
// no reconnect buffer, so while it is disconnected every publish fails with
// ErrReconnectBufExceeded, which would name the buffer instead.
func (b *Bridge) publishError(err error) error {
	if errors.Is(err, nats.ErrReconnectBufExceeded) {
		return fmt.Errorf("%w: connection %s", ErrNATS, b.nc.Status())
	}
	return err
}

// askShadow sends the request to the shadow decider too, without waiting.
func (b *Bridge) askShadow(x *exchange, rt *route, deadline time.Time, e *auditEntry) {
	e.shadowed = true
	e.waits.Add(1)
	subject := x.msg.Subject
	x.msg.Subject = rt.shadow
	err := b.mux.send(&x.msg, x.id, deadline, func(reply *nats.Msg) {
		b.shadowAnswered(rt, e, reply, protocol.OutcomeTimeout, nil)
	})
	x.msg.Subject, x.msg.Reply = subject, ""
	if err != nil {
		b.shadowAnswered(rt, e, nil, protocol.OutcomeNATSError, b.publishError(err))
	}
}

// shadowAnswered records a shadow's verdict, or its failure, in e: the
// answer the shadow would have had Tencent receive.
func (b *Bridge) shadowAnswered(rt *route, e *auditEntry, reply *nats.Msg, outcome protocol.Outcome, err error) {
	code := 0
	if reply != nil {
		outcome, code, err = rt.command.JudgeReply(reply)
	}
	if outcome == protocol.OutcomeDecided {
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
func (b *Bridge) lateReply(rt *route, requestID string, received, deadline time.Time, reply *nats.Msg) {
	e := b.audit.entry()
	e.subject, e.received, e.late = rt.audit, received, true
	e.app, e.command, e.kind = rt.app, rt.command.Name, rt.command.Kind.String()
	e.id = e.keep([]byte(requestID))
	outcome, code, err := rt.command.JudgeReply(reply)
	e.outcome, e.code, e.answer, e.status = protocol.OutcomeLate, code, reply.Data, fasthttp.StatusOK
	e.decider = reply.Header.Get(protocol.HeaderDecider)
	e.latency = time.Since(received)
	e.reason = fmt.Sprintf("reply came %v after the deadline; Tencent got the default", time.Since(deadline).Round(time.Millisecond))
	if outcome != protocol.OutcomeDecided {
		e.reason += "; the reply was " + string(outcome) + ": " + err.Error()
	}
	if b.cfg.LogCallbacks != LogCallbacksNone {
		b.log.Info().Str(logKeyRequestID, requestID).Str(logKeySdkAppID, rt.app).Str(logKeyCommand, rt.command.Name).
			Str(logKeyOutcome, string(protocol.OutcomeLate)).Int(logKeyCode, code).
			Float64(logKeyLatency, float64(e.latency.Microseconds())/1000).Str(logKeyReason, e.reason).Msg("late reply")
	}
	b.audit.filled(e)
}

// publish sends an after callback as an event, and answers 200 only once
// NATS has it: with an events stream, once the stream acknowledged it;
// without, once the server confirmed it (publishConfirmed), all before
// Tencent's deadline. Otherwise Tencent gets 503, which lets a retrying
// Tencent deliver it again.
func (b *Bridge) publish(x *exchange, rt *route, start time.Time) result {
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
		err = b.publishError(err)
		b.recheckStreams(err)
		answer := errorAnswer("nats_error", "the event could not be published: "+err.Error())
		return result{status: fasthttp.StatusServiceUnavailable, answer: answer, outcome: protocol.OutcomeNATSError, err: err}
	}
	return result{status: fasthttp.StatusOK, answer: rt.fallbackFor(x.msg.Data), outcome: protocol.OutcomePublished, code: rt.code, err: note}
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
