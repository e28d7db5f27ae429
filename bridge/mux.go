package bridge

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders/protocol"
)

// replyMux is the request-reply transport of decide requests. It replaces
// the NATS client's own request path because timbus needs what that path
// drops: a reply that comes after the caller gave up, and replies to requests
// nobody waits for (shadow requests). Such replies, or the news that none
// came, are handed to a function the caller gave; the mux knows nothing of
// what they mean. All replies arrive on one wildcard subscription; pending
// calls sit in sharded maps so that concurrent callbacks do not contend on
// one lock.
type replyMux struct {
	nc     *nats.Conn
	inbox  string // a call's reply subject: inbox, deadline, request id, then its token (protocol.AppendReply)
	sub    *nats.Subscription
	next   atomic.Uint64
	shards [muxShards]muxShard
	calls  sync.Pool

	quit chan struct{}
	done chan struct{}
}

const (
	muxShards = 32
	// lateGrace is how long after its deadline a call still waits for a
	// reply to record as late.
	lateGrace = 5 * time.Second
	// sweepEvery bounds how long an expired shadow call or abandoned call
	// lingers.
	sweepEvery = 50 * time.Millisecond
)

type muxShard struct {
	mu    sync.Mutex
	calls map[uint64]*call
}

// call is one request in flight.
type call struct {
	id uint64
	// key is random: a reply subject's token carries it beside id, so that
	// nobody who saw one reply subject can guess another call's.
	key      uint64
	deadline time.Time
	reply    chan *nats.Msg // a waited call's one reply, buffered

	// handoff is set, under the shard lock, on a call nobody waits for: a
	// request sent with send, or one whose waiter gave up. It receives the
	// call's reply, or nil once expires passes without one (or the mux
	// stops), on the mux's goroutines.
	handoff func(reply *nats.Msg)
	expires time.Time
}

// A handoff receives the reply to a call nobody waits for, or nil when none
// came in time.
type handoff = func(reply *nats.Msg)

func newReplyMux(g *group, nc *nats.Conn) (*replyMux, error) {
	m := &replyMux{nc: nc, inbox: nc.NewInbox(), quit: make(chan struct{}), done: make(chan struct{})}
	for i := range m.shards {
		m.shards[i].calls = make(map[uint64]*call)
	}
	m.calls.New = func() any { return &call{reply: make(chan *nats.Msg, 1)} }
	sub, err := nc.Subscribe(m.inbox+".>", m.deliver)
	if err != nil {
		return nil, err
	}
	// Replies must never be dropped as a slow consumer while callbacks wait.
	_ = sub.SetPendingLimits(-1, -1)
	m.sub = sub
	g.Go(func(context.Context) { m.sweep() })
	return m, nil
}

func (m *replyMux) shard(id uint64) *muxShard { return &m.shards[id%muxShards] }

// register adds a call and returns it with its reply subject appended to buf.
// The subject tells deciders the deadline and the request id; its last token,
// "<id>_<key>" in base 36, routes the reply back to the call.
func (m *replyMux) register(c *call, requestID []byte, deadline time.Time, buf []byte) []byte {
	c.id = m.next.Add(1)
	c.key = rand.Uint64()
	c.deadline = deadline
	s := m.shard(c.id)
	s.mu.Lock()
	s.calls[c.id] = c
	s.mu.Unlock()
	buf = protocol.AppendReply(buf, m.inbox, deadline, bytesString(requestID), "")
	return appendToken(buf, c.id, c.key)
}

// appendToken appends "<id>_<key>", both in base 36: the last token of a
// reply subject timbus routes a reply by. The key is random, so that nobody
// who saw one such subject can guess another.
func appendToken(dst []byte, id, key uint64) []byte {
	dst = strconv.AppendUint(dst, id, 36)
	dst = append(dst, '_')
	return strconv.AppendUint(dst, key, 36)
}

// parseToken reads the last token of subject as appendToken wrote it.
func parseToken(subject string) (id, key uint64, ok bool) {
	idText, keyText, ok := strings.Cut(subject[strings.LastIndexByte(subject, '.')+1:], "_")
	if !ok {
		return 0, 0, false
	}
	id, err := strconv.ParseUint(idText, 36, 64)
	if err != nil {
		return 0, 0, false
	}
	key, err = strconv.ParseUint(keyText, 36, 64)
	return id, key, err == nil
}

func (m *replyMux) forget(c *call) {
	s := m.shard(c.id)
	s.mu.Lock()
	delete(s.calls, c.id)
	s.mu.Unlock()
}

// request publishes msg, whose Reply is set to a fresh reply subject built in
// replyBuf, and waits for the reply until timer fires at deadline. The timer
// must be stopped and drained. When it gives up, the call stays registered
// until lateGrace passes, and a late reply goes to the function abandon
// returns (called only then, so that waiting costs no closure).
func (m *replyMux) request(msg *nats.Msg, requestID []byte, deadline time.Time, timer *time.Timer, replyBuf []byte, abandon func() handoff) (*nats.Msg, []byte, error) {
	c := m.calls.Get().(*call)
	replyBuf = m.register(c, requestID, deadline, replyBuf[:0])
	msg.Reply = bytesString(replyBuf)
	err := m.nc.PublishMsg(msg)
	msg.Reply = ""
	if err != nil {
		m.forget(c)
		m.calls.Put(c)
		return nil, replyBuf, err
	}
	timer.Reset(time.Until(deadline))
	select {
	case reply := <-c.reply:
		timer.Stop()
		m.calls.Put(c)
		return reply, replyBuf, nil
	case <-timer.C:
	}
	s := m.shard(c.id)
	s.mu.Lock()
	select {
	case reply := <-c.reply: // it arrived while the timer fired
		s.mu.Unlock()
		m.calls.Put(c)
		return reply, replyBuf, nil
	default:
	}
	c.handoff, c.expires = abandon(), deadline.Add(lateGrace)
	s.mu.Unlock()
	return nil, replyBuf, nats.ErrTimeout
}

// send publishes msg as a request nobody waits for: its reply, or nil at
// deadline, goes to h.
func (m *replyMux) send(msg *nats.Msg, requestID []byte, deadline time.Time, h handoff) error {
	c := &call{handoff: h, expires: deadline}
	msg.Reply = string(m.register(c, requestID, deadline, nil))
	if err := m.nc.PublishMsg(msg); err != nil {
		m.forget(c)
		return err
	}
	return nil
}

// deliver hands a reply to its call.
func (m *replyMux) deliver(reply *nats.Msg) {
	id, key, ok := parseToken(reply.Subject)
	if !ok {
		return
	}
	s := m.shard(id)
	s.mu.Lock()
	c := s.calls[id]
	if c == nil || c.key != key {
		s.mu.Unlock()
		return // a second reply, one later than lateGrace, or a forgery
	}
	delete(s.calls, id)
	if h := c.handoff; h != nil {
		s.mu.Unlock()
		h(reply)
		return
	}
	c.reply <- reply // buffered, and only one reply is routed per call
	s.mu.Unlock()
}

// sweep expires the calls nobody waits for, telling their handoff.
func (m *replyMux) sweep() {
	defer close(m.done)
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	var expired []*call
	for {
		select {
		case <-m.quit:
			return
		case now := <-tick.C:
			for i := range m.shards {
				s := &m.shards[i]
				s.mu.Lock()
				for id, c := range s.calls {
					if c.handoff != nil && now.After(c.expires) {
						expired = append(expired, c)
						delete(s.calls, id)
					}
				}
				s.mu.Unlock()
			}
			for _, c := range expired {
				c.handoff(nil)
			}
			clear(expired)
			expired = expired[:0]
		}
	}
}

// stop ends the sweeper and tells the handoff of every call nobody waits
// for that no reply came, so that what waits on them (shadow verdicts in
// audit records) is settled.
func (m *replyMux) stop() {
	close(m.quit)
	<-m.done
	_ = m.sub.Unsubscribe()
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		var pending []*call
		for id, c := range s.calls {
			if c.handoff != nil {
				pending = append(pending, c)
			}
			delete(s.calls, id)
		}
		s.mu.Unlock()
		for _, c := range pending {
			c.handoff(nil)
		}
	}
}
