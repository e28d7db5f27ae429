package bridge

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// auditProbeEvery is how often, per command, a record is sent as a probe of
// whether anyone subscribes to its audit subject on a server timbus does not
// embed: the longest a new subscriber waits for its first record, and the
// longest records go to nobody after the last one left.
const auditProbeEvery = time.Second

// hearing learns whether anyone subscribes to an audit subject on a NATS
// server timbus does not embed, where the client cannot ask. A record sent
// with a reply subject to a subject nobody subscribes to comes back from the
// server at once as a "no responders" status; records sent with none simply
// vanish. So one record per command and auditProbeEvery goes with a reply
// subject (a subscriber sees it and ignores it: nobody is to answer), and
// when the server says nobody heard it, the command's records are counted
// unheard, neither encoded nor sent, until the next probe. The embedded
// server answers the same question exactly (Account.SubscriptionInterest);
// an audit stream always hears, so neither needs this.
type hearing struct {
	inbox string // probe reply subjects: inbox + "." + probe id + "_" + key
	sub   *nats.Subscription

	mu     sync.Mutex
	probes map[uint64]*heard // probes awaiting a "no responders"
	next   uint64
}

// heard is what hearing knows of one route's audit subject. nextProbe and
// probe belong to the auditor's publishing goroutine; quiet is set from the
// subscription's.
type heard struct {
	nextProbe time.Time
	probe     uint64 // the outstanding probe's id, 0 when none
	// key is random, so that nobody who saw a probe's reply subject (every
	// audit subscriber does) can silence another probe with a forged
	// "no responders".
	key   uint64
	quiet atomic.Bool
}

func newHearing(nc *nats.Conn) (*hearing, error) {
	h := &hearing{inbox: nc.NewInbox(), probes: make(map[uint64]*heard)}
	sub, err := nc.Subscribe(h.inbox+".*", h.noResponders)
	if err != nil {
		return nil, err
	}
	h.sub = sub
	return h, nil
}

// check says whether a record for r goes out, and with which reply subject
// ("" for none). Called only by the auditor's publishing goroutine.
func (h *hearing) check(r *heard, now time.Time) (send bool, reply string) {
	if now.Before(r.nextProbe) {
		return !r.quiet.Load(), ""
	}
	r.nextProbe = now.Add(auditProbeEvery)
	h.mu.Lock()
	// An earlier probe that got no "no responders" was heard: forget it.
	delete(h.probes, r.probe)
	h.next++
	r.probe, r.key = h.next, rand.Uint64()
	h.probes[r.probe] = r
	h.mu.Unlock()
	r.quiet.Store(false)
	return true, string(appendToken(append([]byte(h.inbox), '.'), r.probe, r.key))
}

// noResponders hears the server say a probe reached nobody.
func (h *hearing) noResponders(m *nats.Msg) {
	if len(m.Data) != 0 || m.Header.Get("Status") != "503" {
		return // a subscriber answered a probe: it was heard
	}
	id, key, ok := parseToken(m.Subject)
	if !ok {
		return
	}
	h.mu.Lock()
	r := h.probes[id]
	if r == nil || r.key != key {
		h.mu.Unlock()
		return // not an outstanding probe: late, or forged
	}
	delete(h.probes, id)
	h.mu.Unlock()
	r.quiet.Store(true)
}

// localHearingTTL bounds how long a route's cached answer from the embedded
// server is believed while the account's subscription count stays the same.
// The count alone misses a subscription that came as another went; this
// bounds what such a coincidence costs a new audit subscriber to the delay
// a server timbus does not embed has anyway (auditProbeEvery).
const localHearingTTL = auditProbeEvery

// localHearing is the embedded server's answer for a route's audit subject,
// with when it was given.
type localHearing struct {
	subject string
	subs    int
	until   int64 // Unix nanoseconds
	heard   bool
}

// heardLocally says whether anyone subscribes to e's subject on the
// embedded server. Asking the server's subject index per record cost about
// 0.4 µs per callback (its cache churns with every reply subject); a
// route's answer is kept until the account's subscriptions change, or
// localHearingTTL passes.
func (a *auditor) heardLocally(e *auditEntry) bool {
	r := e.route
	if r == nil || r.transient || a.subscriptions == nil {
		return a.interest(e.subject)
	}
	subs, now := a.subscriptions(), time.Now().UnixNano()
	if h := r.local.Load(); h != nil && h.subs == subs && now < h.until && h.subject == e.subject {
		return h.heard
	}
	heard := a.interest(e.subject)
	r.local.Store(&localHearing{subject: e.subject, subs: subs, until: now + int64(localHearingTTL), heard: heard})
	return heard
}
