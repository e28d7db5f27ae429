package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/timbus-dev/timbus/deciders"
)

// Identity of the micro service, as $SRV.PING, INFO and STATS report it.
const (
	serviceName    = "officialaccount-policy"
	serviceVersion = "1.0.0"
)

// Log keys; the first three match the bridge's, so that one query finds a
// callback on both sides.
const (
	logKeyRequestID = "request_id"
	logKeySdkAppID  = "sdkappid"
	logKeyCode      = "code"
	logKeyName      = "name"
)

// serve answers callbacks until ctx ends, then stops taking new ones, lets
// the ones in hand finish, and returns.
func serve(ctx context.Context, cfg config, log zerolog.Logger) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	closed := make(chan struct{})
	nc, err := nats.Connect(cfg.NATSURL,
		nats.Name(serviceName),
		// make run starts the bridge, whose NATS server is embedded, at the
		// same time as this decider, so the first attempts may well fail.
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("connected to NATS")
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("disconnected from NATS, reconnecting")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
		// Slow consumers and the like; the decider's micro stats count them too.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("NATS error")
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
	)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	if !nc.IsConnected() {
		log.Info().Str("url", cfg.NATSURL).Msg("NATS not reachable yet, retrying")
	}

	h := &handler{policy: newPolicy(cfg.Reserved, cfg.Code), log: log}
	d, err := deciders.New(nc, deciders.Config{
		Name:          serviceName,
		Version:       serviceVersion,
		Description:   "refuses reserved official account names for timbus",
		SubjectPrefix: cfg.SubjectPrefix,
		SdkAppID:      cfg.SdkAppID,
		QueueGroup:    cfg.QueueGroup,
		OnResult:      h.result,
	})
	if err == nil {
		if err = d.Handle(command, h.decide); err != nil {
			err = errors.Join(err, d.Stop())
		}
	}
	if err != nil {
		nc.Close()
		return err
	}
	log.Info().Str("subject", cfg.subject()).Str("queue", cfg.QueueGroup).
		Strs("reserved", cfg.Reserved).Int(logKeyCode, cfg.Code).Msg("service registered")

	<-ctx.Done()
	log.Info().Msg("stopping")
	// Stop answers the callbacks in hand before it returns; the bridge is
	// waiting for them.
	err = d.Stop()
	if derr := nc.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionReconnecting) {
		// ErrConnectionReconnecting means there was no connection to drain
		// and Drain closed it instead.
		err = errors.Join(err, derr)
	}
	<-closed
	return err
}

// handler answers the command with the policy and logs what happened.
type handler struct {
	policy *policy
	log    zerolog.Logger
}

func (h *handler) decide(_ context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
	dec, err := h.policy.decide(cb.Body)
	if err != nil {
		// The decider's failure, not a reason to deny: the bridge answers
		// its default verdict.
		return deciders.Verdict{}, deciders.Error{Code: 400, Description: err.Error()}
	}
	verdict := "allow"
	if dec.verdict.Code() != 0 {
		verdict = "deny"
	}
	h.log.Info().Str(logKeyRequestID, cb.RequestID).Str(logKeySdkAppID, cb.SdkAppID).
		Str(logKeyName, dec.name).Int(logKeyCode, dec.verdict.Code()).Msg(verdict)
	return dec.verdict, nil
}

// result logs the callbacks that were not simply decided.
func (h *handler) result(r deciders.Result) {
	cb := r.Callback
	switch {
	case r.Outcome == deciders.Expired:
		// The bridge has already answered Tencent with its default verdict
		// and nobody reads a reply now.
		h.log.Debug().Str(logKeyRequestID, cb.RequestID).Time("deadline", cb.Deadline).Msg("deadline passed, not answering")
	case r.Outcome == deciders.Failed:
		h.log.Warn().Str(logKeyRequestID, cb.RequestID).Str(logKeySdkAppID, cb.SdkAppID).Err(r.Err).Msg("cannot decide")
	case r.Err != nil:
		h.log.Error().Str(logKeyRequestID, cb.RequestID).Err(r.Err).Msg("reply not sent")
	}
}
