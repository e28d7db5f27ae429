package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
	"github.com/timbus-dev/timbus/deciders/protocol"
)

// Identity of the micro service, as $SRV.PING, INFO and STATS report it.
const (
	serviceName    = "officialaccount-policy"
	serviceVersion = "1.0.0"
	endpointName   = "CallbackBeforeCreateOfficialAccount"
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
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
	)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	if !nc.IsConnected() {
		log.Info().Str("url", cfg.NATSURL).Msg("NATS not reachable yet, retrying")
	}

	d := &decider{policy: newPolicy(cfg.Reserved, cfg.Code), log: log}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        serviceName,
		Version:     serviceVersion,
		Description: "refuses reserved official account names for timbus",
		QueueGroup:  cfg.QueueGroup,
		ErrorHandler: func(_ micro.Service, err *micro.NATSError) {
			log.Error().Str("subject", err.Subject).Msg(err.Description)
		},
	})
	if err == nil {
		err = svc.AddEndpoint(endpointName, micro.HandlerFunc(d.handle),
			micro.WithEndpointSubject(cfg.subject()),
			micro.WithEndpointMetadata(map[string]string{"command": command}))
		if err != nil {
			err = errors.Join(err, svc.Stop())
		}
	}
	if err != nil {
		nc.Close()
		return fmt.Errorf("micro: %w", err)
	}
	log.Info().Str("subject", cfg.subject()).Str("queue", cfg.QueueGroup).
		Strs("reserved", cfg.Reserved).Int(logKeyCode, cfg.Code).Msg("service registered")

	<-ctx.Done()
	log.Info().Msg("stopping")
	err = svc.Stop()
	// Drain lets handlers already running send their replies; the bridge is
	// waiting for them.
	if derr := nc.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionReconnecting) {
		// ErrConnectionReconnecting means there was no connection to drain
		// and Drain closed it instead.
		err = errors.Join(err, derr)
	}
	<-closed
	return err
}

// decider answers the endpoint's requests.
type decider struct {
	policy *policy
	log    zerolog.Logger
}

func (d *decider) handle(req micro.Request) {
	h := req.Headers()
	id := h.Get(protocol.HeaderRequestID)
	if deadline, ok := deadlineOf(h.Get(protocol.HeaderDeadline)); ok && !time.Now().Before(deadline) {
		// The bridge has already answered Tencent with its default verdict
		// and nobody reads a reply now.
		d.log.Debug().Str(logKeyRequestID, id).Time("deadline", deadline).Msg("deadline passed, not answering")
		return
	}
	dec, err := d.policy.decide(req.Data())
	if err != nil {
		d.log.Warn().Str(logKeyRequestID, id).Str(logKeySdkAppID, h.Get(protocol.HeaderSdkAppID)).Err(err).Msg("cannot decide")
		if err := req.Error("400", err.Error(), nil); err != nil {
			d.log.Error().Str(logKeyRequestID, id).Err(err).Msg("error reply not sent")
		}
		return
	}
	if err := req.Respond(dec.reply); err != nil {
		d.log.Error().Str(logKeyRequestID, id).Err(err).Msg("reply not sent")
		return
	}
	verdict := "allow"
	if dec.code != 0 {
		verdict = "deny"
	}
	d.log.Info().Str(logKeyRequestID, id).Str(logKeySdkAppID, h.Get(protocol.HeaderSdkAppID)).
		Str(logKeyName, dec.name).Int(logKeyCode, dec.code).Msg(verdict)
}

// deadlineOf parses a Timbus-Deadline value. A missing or malformed one gives
// ok false: answering late costs less than dropping a callback the bridge
// still waits for.
func deadlineOf(v string) (time.Time, bool) {
	if v == "" {
		return time.Time{}, false
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}
