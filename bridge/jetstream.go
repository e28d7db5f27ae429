package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/timbus-dev/timbus/deciders/protocol"
)

// ensureStream creates the stream if it does not exist, or checks that the
// existing one captures subject. It never changes an existing stream: its
// retention belongs to whoever created it.
func (b *Bridge) ensureStream(ctx context.Context, js jetstream.JetStream, sc StreamConfig, subject string) error {
	s, err := lookupStream(ctx, js, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:       sc.Name,
			Subjects:   []string{subject},
			Storage:    jetstream.FileStorage,
			MaxAge:     sc.MaxAge,
			MaxBytes:   nonZero(sc.MaxBytes, -1),
			Replicas:   max(sc.Replicas, 1),
			Duplicates: sc.DuplicateWindow,
		})
		if err != nil {
			return fmt.Errorf("%w: create stream %s on %s: %w", ErrNATS, sc.Name, subject, err)
		}
		b.log.Info().Str("stream", sc.Name).Str("subjects", subject).Msg("JetStream stream created")
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: look up stream %s: %w", ErrNATS, sc.Name, err)
	}
	for _, have := range s.CachedInfo().Config.Subjects {
		if subjectCovers(have, subject) {
			return nil
		}
	}
	return fmt.Errorf("%w: stream %s exists but does not capture %s (it has %v)",
		ErrInvalidValue, sc.Name, subject, s.CachedInfo().Config.Subjects)
}

// lookupAttempt bounds one stream lookup; see lookupStream.
const lookupAttempt = 2 * time.Second

// lookupStream asks for a stream's info in short attempts until ctx ends. A
// JetStream cluster drops the request without an answer while the stream is
// being created (e.g. by another bridge starting at the same time), and
// one long wait would spend the whole start-up budget on a lost request.
func lookupStream(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Stream, error) {
	for {
		attempt, cancel := context.WithTimeout(ctx, lookupAttempt)
		s, err := js.Stream(attempt, name)
		cancel()
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return s, err
		}
	}
}

// streams sets up JetStream for the configured streams. With NATS not yet
// reachable it keeps trying in the background; a stream that conflicts with
// the configuration stops the bridge from starting.
func (b *Bridge) streams(ctx context.Context) error {
	if b.cfg.AuditStream.Name == "" && b.cfg.EventsStream.Name == "" {
		return nil
	}
	js, err := jetstream.New(b.nc, jetstream.WithPublishAsyncMaxPending(auditQueueLen),
		jetstream.WithPublishAsyncTimeout(auditAckWait))
	if err != nil {
		return fmt.Errorf("%w: JetStream: %w", ErrNATS, err)
	}
	prefix := b.cfg.SubjectPrefix
	setup := func(ctx context.Context) error {
		if sc := b.cfg.AuditStream; sc.Name != "" {
			if err := b.ensureStream(ctx, js, sc, prefix+"."+protocol.KindAudit+".>"); err != nil {
				return err
			}
		}
		if sc := b.cfg.EventsStream; sc.Name != "" {
			if err := b.ensureStream(ctx, js, sc, prefix+"."+protocol.KindEvent+".>"); err != nil {
				return err
			}
		}
		return nil
	}
	b.setupStreams = setup
	if b.cfg.AuditStream.Name != "" {
		b.audit.js = js
		b.audit.noStream = b.recheckStreams
	}
	if b.cfg.EventsStream.Name != "" {
		b.events = js
	}
	if b.nc.IsConnected() {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return setup(ctx)
	}
	b.group.Go(func(ctx context.Context) {
		retry := time.NewTimer(0)
		defer retry.Stop()
		for {
			select {
			case <-ctx.Done(): // Shutdown
				return
			case <-retry.C:
			}
			attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := setup(attempt)
			cancel()
			if err == nil {
				return
			}
			if ctx.Err() == nil {
				b.log.Warn().Err(err).Msg("JetStream streams not ready; retrying")
			}
			retry.Reset(time.Second)
		}
	})
	return nil
}

// streamRecheckEvery spaces the attempts of recheckStreams.
const streamRecheckEvery = 5 * time.Second

// recheckStreams sets the configured streams up again, in the background
// and at most once per streamRecheckEvery, when a publish found no stream
// answering while NATS is connected: a stream deleted, or a NATS server
// restarted without its storage, would otherwise leave every audit record
// held and every event refused. Other errors are not its business.
func (b *Bridge) recheckStreams(err error) {
	if !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, nats.ErrNoResponders) ||
		b.setupStreams == nil || b.stopping.Load() || !b.nc.IsConnected() {
		return
	}
	if !b.streamsRecheck.pass(streamRecheckEvery) {
		return
	}
	b.log.Warn().Err(err).Msg("a JetStream stream does not answer: setting the streams up again")
	b.group.Go(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, streamRecheckEvery)
		defer cancel()
		if err := b.setupStreams(ctx); err != nil && !b.stopping.Load() {
			b.log.Warn().Err(err).Msg("JetStream streams not ready; retrying")
		}
	})
}

// subjectCovers reports whether the subject pattern (with * and >) matches
// every subject the bridge publishes under want, itself ending in ">".
func subjectCovers(pattern, want string) bool {
	p, w := strings.Split(pattern, "."), strings.Split(want, ".")
	for i, tok := range p {
		if tok == ">" {
			return true
		}
		if i >= len(w) || w[i] == ">" || tok != "*" && tok != w[i] {
			return false
		}
	}
	return len(p) == len(w)
}

func nonZero(v, otherwise int64) int64 {
	if v == 0 {
		return otherwise
	}
	return v
}
