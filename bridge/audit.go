package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/timbus-dev/timbus/deciders/protocol"
)

// auditQueueLen bounds the records waiting to be published. A full queue
// drops records (counted and logged) rather than slow a decision.
const auditQueueLen = 16384

// auditor publishes one record per callback. The request path only copies
// what outlives the request into a pooled entry and queues it; encoding and
// publishing happen on the auditor's own goroutine.
type auditor struct {
	nc *nats.Conn
	// group runs the auditor's goroutines; its context bounds publishes.
	group *group
	// js, when set, publishes to the audit stream with acknowledgements.
	js jetstream.JetStream
	// noStream, when set, hears of the errors of records sent again, so
	// that a stream found missing is created again.
	noStream func(error)
	acks     chan jetstream.PubAckFuture
	log      zerolog.Logger
	prefix   string
	entries  chan *auditEntry
	pool     sync.Pool
	quit     chan struct{}
	done     chan struct{}
	// abandon is closed when shutdown stops waiting: records still held
	// for an outage are given up.
	abandon chan struct{}

	// interest, when set, tells whether anyone would receive a record; a
	// record nobody subscribes to is not encoded or sent. Only the embedded
	// server can answer it; JetStream streams count as subscribers.
	interest func(subject string) bool
	// subscriptions, set with interest, counts the subscriptions of the
	// account: while it stays the same, interest's answer for a route
	// does too (see heardLocally).
	subscriptions func() int
	// hearing, when set, learns the same from a server timbus does not
	// embed, by probing (see hearing).
	hearing *hearing

	published atomic.Uint64
	dropped   atomic.Uint64
	failed    atomic.Uint64
	unheard   atomic.Uint64
	// pending counts the records queued but neither published, failed nor
	// unheard yet: in the queue, awaiting the stream's acknowledgement, or
	// held through an outage.
	pending atomic.Int64
	// outageWarning spaces storeAgain's warnings.
	outageWarning gate
	// connected hears each (re)connection to NATS, so that a record held
	// by publishCore goes as soon as NATS is back.
	connected chan nats.Status
}

// done* end a queued record's life, counted.
func (a *auditor) donePublished() { a.donePublishedN(1) }
func (a *auditor) doneFailed()    { a.doneFailedN(1) }

func (a *auditor) donePublishedN(n int) { a.published.Add(uint64(n)); a.pending.Add(-int64(n)) }
func (a *auditor) doneFailedN(n int)    { a.failed.Add(uint64(n)); a.pending.Add(-int64(n)) }
func (a *auditor) doneUnheardN(n int)   { a.unheard.Add(uint64(n)); a.pending.Add(-int64(n)) }

// auditEntry holds one record until it is published. Request-scoped bytes
// (id, client address, platform, body) are copied into buf, the one copy of
// the body timbus makes.
type auditEntry struct {
	subject  string
	received time.Time
	app      string
	command  string
	kind     string
	outcome  protocol.Outcome
	reason   string
	status   int
	code     int
	answer   []byte // immutable: a route's default, or a decider's reply
	// answerChecked and bodyChecked say that answer and body passed
	// jsonscan.Check on the way in: the encoder copies them without
	// validating them again.
	answerChecked, bodyChecked bool
	decider                    string
	latency                    time.Duration
	query                      string // refusals only
	remote                     string // refusals only
	late                       bool   // a late reply's record, stored beside the callback's

	route *route // for shadow counters; nil on refusals and late records

	// waits counts the parties still to fill the entry: the callback's
	// handler, and its shadow request if there is one.
	waits atomic.Int32
	// shadow results, written by the shadow's reply handler.
	shadowed      bool
	shadowOutcome protocol.Outcome
	shadowCode    int
	shadowAnswer  []byte
	shadowReason  string

	buf                          []byte
	id, clientIP, platform, body span
}

type span struct{ start, end int }

func (e *auditEntry) keep(b []byte) span {
	start := len(e.buf)
	e.buf = append(e.buf, b...)
	return span{start, len(e.buf)}
}

func (e *auditEntry) get(s span) []byte { return e.buf[s.start:s.end] }

func newAuditor(g *group, nc *nats.Conn, prefix string, log zerolog.Logger) *auditor {
	a := &auditor{
		nc:      nc,
		group:   g,
		log:     log,
		prefix:  prefix,
		entries: make(chan *auditEntry, auditQueueLen),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
		abandon: make(chan struct{}),
		acks:    make(chan jetstream.PubAckFuture, auditQueueLen),

		// Buffered by the client, which never blocks on it.
		connected: nc.StatusChanged(nats.CONNECTED),
	}
	a.pool.New = func() any { return &auditEntry{buf: make([]byte, 0, 2048)} }
	g.Go(func(context.Context) { a.run() })
	return a
}

// auditRetries is how often a record JetStream refused is sent again; the
// record's Nats-Msg-Id (its request id) keeps a retry from being stored twice.
const auditRetries = 3

// publishStream sends one record to the audit stream; its acknowledgement is
// awaited by watchAcks.
func (a *auditor) publishStream(subject, id string, data []byte) {
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{jetstream.MsgIDHeader: {id}}}
	a.sendStream(msg)
}

func (a *auditor) sendStream(msg *nats.Msg) {
	fut, err := a.js.PublishMsgAsync(msg, jetstream.WithRetryAttempts(auditRetries))
	if err != nil {
		a.storeAgain(msg, err)
		return
	}
	a.acks <- fut
}

// auditAckWait bounds the wait for a record's acknowledgement. A record
// whose acknowledgement does not come (the stream's leader died with it, a
// reconnection lost it) is sent again, with the same Nats-Msg-Id so that
// the stream stores it once.
const auditAckWait = 3 * time.Second

// watchAcks counts acknowledgements of stream publishes in order, and sends
// the records that got none, or an error, again.
func (a *auditor) watchAcks(done chan<- struct{}) {
	defer close(done)
	for fut := range a.acks {
		select {
		case <-fut.Ok():
			a.donePublished()
		case err := <-fut.Err():
			a.storeAgain(fut.Msg(), err)
		}
	}
}

// Waits between attempts to store a record held through an outage, and
// between the warnings that records are held.
const (
	auditRetryFirst     = 100 * time.Millisecond
	auditRetryMax       = 2 * time.Second
	auditOutageLogEvery = 10 * time.Second
)

// storeAgain keeps sending a record the stream did not acknowledge until it
// is stored, as long as the failure is one an outage explains: NATS
// disconnected, the stream not created yet or without a leader, no answer
// in time. Meanwhile the record is held, and so are the records behind it:
// the queues in front of the stream fill, and past them new records are
// dropped and counted, so an outage costs bounded memory and loses the
// newest records only. At shutdown, held records are given up once the
// shutdown's deadline has passed.
func (a *auditor) storeAgain(msg *nats.Msg, err error) {
	select {
	case <-a.abandon: // shutdown gave up: stop has logged how many
		a.doneFailed()
		return
	default:
	}
	if !outageError(err) {
		a.refused(msg, err)
		return
	}
	if a.outageWarning.pass(auditOutageLogEvery) {
		a.log.Warn().Err(err).Int64("pending", a.pending.Load()).Msg("audit stream not reachable: holding audit records until it is")
	}
	wait := auditRetryFirst
	timer := time.NewTimer(wait)
	timer.Stop()
	defer timer.Stop()
	for {
		// At once when connected: the records queued behind one that waited
		// have often failed only because it did, and go through in turn.
		if a.nc.IsConnected() {
			ctx, cancel := context.WithTimeout(a.group.ctx, auditAckWait)
			_, err = a.js.PublishMsg(ctx, msg, jetstream.WithRetryAttempts(auditRetries))
			cancel()
			if err == nil {
				a.donePublished()
				return
			}
			if !outageError(err) {
				a.refused(msg, err)
				return
			}
			if a.noStream != nil {
				a.noStream(err)
			}
		}
		timer.Reset(wait)
		select {
		case <-a.abandon:
			a.doneFailed()
			return
		case <-timer.C:
		}
		wait = min(2*wait, auditRetryMax)
	}
}

// publishCore publishes a record on core NATS. The client keeps no
// reconnect buffer, so while NATS is away the record waits here until it
// is back (told by connected; the timer only backs that up), and the
// records behind it wait in the queue; past the queue the
// newest are dropped and counted, as with the audit stream. At shutdown a
// held record is given up once the shutdown's deadline has passed.
func (a *auditor) publishCore(subject, reply string, data []byte, records int) {
	wait := auditRetryFirst
	var timer *time.Timer
	for {
		var err error
		if reply == "" {
			err = a.nc.Publish(subject, data)
		} else {
			err = a.nc.PublishRequest(subject, reply, data)
		}
		switch {
		case err == nil:
			a.donePublishedN(records)
			return
		case !errors.Is(err, nats.ErrReconnectBufExceeded):
			a.doneFailedN(records)
			a.log.Warn().Err(err).Str("subject", subject).Msg("audit record not published")
			return
		}
		if a.outageWarning.pass(auditOutageLogEvery) {
			a.log.Warn().Int64("pending", a.pending.Load()).Msg("NATS not reachable: holding audit records until it is")
		}
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-a.abandon:
			a.doneFailedN(records)
			return
		case <-a.connected:
		case <-timer.C:
		}
		wait = min(2*wait, auditRetryMax)
	}
}

// refused counts and logs a record the stream will not take.
func (a *auditor) refused(msg *nats.Msg, err error) {
	a.doneFailed()
	a.log.Warn().Err(err).Str("subject", msg.Subject).Msg("audit record not stored")
}

// outageError reports whether a failure to store a record may pass by
// itself, so that sending it again is worth it. Refusals that sending again
// cannot change (a record over the server's maximum payload, a stream
// rejecting it for good) and a closed connection are not.
func outageError(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case err == nil, errors.Is(err, nats.ErrMaxPayload), errors.Is(err, nats.ErrBadSubject),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, jetstream.ErrJetStreamPublisherClosed):
		return false
	case errors.As(err, &apiErr):
		return apiErr.Code == 503 // JetStream or the stream temporarily unavailable
	}
	return true
}

// entry returns an empty entry to fill.
func (a *auditor) entry() *auditEntry {
	e := a.pool.Get().(*auditEntry)
	e.reset()
	e.waits.Store(1)
	return e
}

func (e *auditEntry) reset() {
	buf := e.buf[:0]
	e.subject, e.received, e.app, e.command, e.kind, e.route = "", time.Time{}, "", "", "", nil
	e.outcome, e.reason, e.status, e.code, e.answer, e.decider = "", "", 0, 0, nil, ""
	e.latency, e.query, e.remote, e.late = 0, "", "", false
	e.answerChecked, e.bodyChecked = false, false
	e.shadowed, e.shadowOutcome, e.shadowCode, e.shadowAnswer, e.shadowReason = false, "", 0, nil, ""
	e.buf, e.id, e.clientIP, e.platform, e.body = buf, span{}, span{}, span{}, span{}
}

// filled is called by each party that fills e; the last one queues it.
func (a *auditor) filled(e *auditEntry) {
	if e.waits.Add(-1) == 0 {
		if e.shadowed && e.route != nil {
			if e.shadowCode == e.code {
				e.route.metrics.shadowAgree.Inc()
			} else {
				e.route.metrics.shadowDiffer.Inc()
			}
		}
		a.submit(e)
	}
}

// submit queues e without ever blocking. A record nobody would hear (the
// embedded server knows its subscribers) is counted and dropped here, on the
// callback's goroutine, rather than handed to the publisher goroutine: a
// channel send and a goroutine wake-up per callback for nothing.
func (a *auditor) submit(e *auditEntry) {
	if a.interest != nil && !a.heardLocally(e) {
		a.unheard.Add(1)
		a.release(e)
		return
	}
	a.pending.Add(1)
	select {
	case a.entries <- e:
	default:
		a.pending.Add(-1)
		if n := a.dropped.Add(1); n&(n-1) == 0 { // log at 1, 2, 4, 8… drops
			a.log.Warn().Uint64("dropped", n).Msg("audit queue full: records dropped")
		}
		a.release(e)
	}
}

func (a *auditor) release(e *auditEntry) {
	if cap(e.buf) > 1<<20 {
		return // let an unusually large body's buffer go
	}
	a.pool.Put(e)
}

func (a *auditor) run() {
	acksDone := make(chan struct{})
	a.group.Go(func(context.Context) { a.watchAcks(acksDone) })
	defer func() {
		close(a.acks)
		<-acksDone
		close(a.done)
	}()
	var out []byte
	batch := make([]*auditEntry, 0, auditBatchMax)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		select {
		case e := <-a.entries:
			if len(a.entries) < auditBatchMax-1 {
				// Let the records of the next moment queue up, unwatched:
				// a callback's send wakes nobody, and they go out together.
				linger.Reset(auditLinger)
				select {
				case <-linger.C:
				case <-a.quit:
					linger.Stop()
				}
			}
			out = a.publish(a.take(append(batch[:0], e)), out)
		case <-a.quit:
			for {
				select {
				case e := <-a.entries:
					out = a.publish(a.take(append(batch[:0], e)), out)
				default:
					return
				}
			}
		}
	}
}

// Records go out in batches: under load, the records queued at once for one
// subject share a NATS message, so that NATS and every audit subscriber handle
// one message for many callbacks. A batch is an RFC 7464 JSON text sequence
// (each record preceded by RS, 0x1E, and followed by a line feed: a record's
// body may hold line feeds, never RS); a record sent alone, as a quiet
// bridge sends each, is plain JSON (protocol.EachRecord reads both).
//
// The linger is what fills the messages: at 1 ms a message held some 45
// records at 46k callbacks/s on the 2-core bench machine; at 4 ms it holds
// 128 or 64 KiB, and the subscriber's CPU per record fell from 1.7 to 1.0 µs
// (make bench, timbus-embedded-audit / naive-embedded 0.85 → 0.90-0.93 in
// A/B runs of one sitting). Records are for auditors, not on anyone's
// request path: 4 ms is no delay to them.
const (
	auditLinger     = 4 * time.Millisecond // how long a record waits for others to share its message
	auditBatchMax   = 128                  // records per message
	auditBatchBytes = 64 << 10             // bytes per message, unless one record is larger
)

// sequenceOrRecord is the message for n records encoded as a JSON text
// sequence in seq: the sequence, or the record alone as plain JSON.
func sequenceOrRecord(seq []byte, n int) []byte {
	if n == 1 {
		return seq[1 : len(seq)-1]
	}
	return seq
}

// take adds to batch the records queued behind its first, up to
// auditBatchMax, without waiting for more.
func (a *auditor) take(batch []*auditEntry) []*auditEntry {
	for len(batch) < auditBatchMax {
		select {
		case e := <-a.entries:
			batch = append(batch, e)
		default:
			return batch
		}
	}
	return batch
}

// publish sends a batch of records and releases them; out is the buffer
// messages are encoded in, returned for reuse.
func (a *auditor) publish(batch []*auditEntry, out []byte) []byte {
	if a.js != nil {
		// One record per stream message, as its Nats-Msg-Id names one. The
		// stream keeps the message until acknowledged: no buffer reuse.
		for _, e := range batch {
			id := string(e.get(e.id))
			if e.late {
				id += "-late"
			}
			a.publishStream(e.subject, id, e.encode(nil, a.recordLimit()))
			a.release(e)
		}
		return out
	}
	limit := a.recordLimit()
	size := min(limit, auditBatchBytes)
	for len(batch) > 0 {
		// The run of records for the first one's subject.
		subject, run := batch[0].subject, 1
		for run < len(batch) && batch[run].subject == subject {
			run++
		}
		records := batch[:run]
		batch = batch[run:]
		reply := ""
		if r := records[0].route; a.hearing != nil && r != nil && !r.transient {
			var send bool
			if send, reply = a.hearing.check(&r.heard, time.Now()); !send {
				a.doneUnheardN(len(records))
				for _, e := range records {
					a.release(e)
				}
				continue
			}
		}
		out = out[:0]
		n := 0
		for _, e := range records {
			start := len(out)
			out = append(out, protocol.RecordSeparator)
			out = e.encode(out, limit-2)
			out = append(out, '\n')
			a.release(e)
			if n > 0 && len(out) > size {
				// Full: send what came before, and start the next
				// message with this record.
				a.publishCore(subject, reply, sequenceOrRecord(out[:start], n), n)
				reply = ""
				out = out[:copy(out, out[start:])]
				n = 0
			}
			n++
		}
		a.publishCore(subject, reply, sequenceOrRecord(out, n), n)
	}
	return out
}

// defaultMaxPayload is NATS's default max_payload, assumed for records
// encoded before the bridge first reached the server.
const defaultMaxPayload = 1 << 20

// recordLimit is the largest record the server takes: its max_payload,
// less room for headers. Records are cut to fit it rather than refused.
func (a *auditor) recordLimit() int {
	limit := a.nc.MaxPayload()
	if limit <= 0 {
		limit = defaultMaxPayload
	}
	return int(limit) - auditPayloadHeadroom
}

// stop publishes what is queued, waits for the stream's acknowledgements
// or for NATS to be back (bounded by ctx: past it, records still pending
// are given up) and returns.
// It is called after the HTTP server stopped, so nothing is submitted after
// it.
func (a *auditor) stop(ctx context.Context) error {
	close(a.quit)
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		n := a.pending.Load()
		a.log.Warn().Int64("pending", n).Msg("audit records still not stored or published at shutdown: giving them up")
		close(a.abandon)
		return fmt.Errorf("%w: %d audit records not acknowledged by NATS before the shutdown deadline", ErrNATS, n)
	}
}
