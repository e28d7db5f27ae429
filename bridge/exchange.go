package bridge

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/timbus-dev/timbus/deciders/protocol"
)

// header slots of an exchange, one per header timbus may set.
const (
	slotRequestID = iota
	slotClientIP
	slotOptPlatform
	slotMsgID
	slotTrace
	numSlots
)

var slotNames = [numSlots]string{
	slotRequestID:   protocol.HeaderRequestID,
	slotClientIP:    protocol.HeaderClientIP,
	slotOptPlatform: protocol.HeaderOptPlatform,
	slotMsgID:       jetstream.MsgIDHeader,
	slotTrace:       HeaderTraceparent,
}

// exchange is the reusable state of one callback on its way to NATS. Its
// header map and value slices are kept between callbacks so that building a
// request allocates nothing; values may point into buffers that live only
// until the callback is answered, which is fine because the NATS client
// encodes headers before Publish or Request returns.
type exchange struct {
	msg     nats.Msg
	values  [numSlots][]string
	present uint16 // slots whose header is in msg.Header
	id      []byte
	hash    hash.Hash
	sum     []byte
	eventID [sha256.Size * 2]byte
	reply   []byte      // reply subject of the decide request
	trace   []byte      // traceparent
	timer   *time.Timer // stopped between callbacks
	confirm *confirmWait
}

func newExchange() *exchange {
	x := &exchange{
		msg:     nats.Msg{Header: make(nats.Header, numSlots)},
		id:      make([]byte, 0, 40),
		hash:    sha256.New(),
		sum:     make([]byte, 0, sha256.Size),
		reply:   make([]byte, 0, 64),
		trace:   make([]byte, 0, traceparentLen),
		timer:   time.NewTimer(time.Hour),
		confirm: newConfirmWait(),
	}
	x.timer.Stop()
	for i := range x.values {
		x.values[i] = make([]string, 1)
	}
	return x
}

// set sets a header, or removes it when v is empty. A header already in the
// map shares its value slice with the exchange, so setting it again writes
// no map entry.
func (x *exchange) set(slot int, v string) {
	bit := uint16(1) << slot
	if v == "" {
		if x.present&bit != 0 {
			delete(x.msg.Header, slotNames[slot])
			x.present &^= bit
		}
		return
	}
	x.values[slot][0] = v
	if x.present&bit == 0 {
		x.msg.Header[slotNames[slot]] = x.values[slot]
		x.present |= bit
	}
}

// setEventID sets Nats-Msg-Id to a digest of the callback, so that a
// delivery Tencent repeats is stored once by the events stream.
func (x *exchange) setEventID(app, command string, body []byte) {
	x.hash.Reset()
	x.hash.Write([]byte(app))
	x.hash.Write([]byte{'.'})
	x.hash.Write([]byte(command))
	x.hash.Write([]byte{'\n'})
	x.hash.Write(body)
	x.sum = x.hash.Sum(x.sum[:0])
	hex.Encode(x.eventID[:], x.sum)
	x.set(slotMsgID, bytesString(x.eventID[:]))
}

// release drops references to the callback so a pooled exchange holds no
// request memory, and its headers, so that the next callback carries only
// those it sets.
func (x *exchange) release() {
	x.msg.Data = nil
	for slot := range numSlots {
		x.set(slot, "")
		x.values[slot][0] = ""
	}
}

// bytesString views b as a string without copying. The caller must not let
// the string outlive b's contents.
func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// requestIDs makes request ids unique across processes: a random prefix per
// process and a counter.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &requestIDs{prefix: hex.EncodeToString(b[:]) + "-"}
}

func (g *requestIDs) appendNext(dst []byte) []byte {
	dst = append(dst, g.prefix...)
	return strconv.AppendUint(dst, g.n.Add(1), 36)
}
