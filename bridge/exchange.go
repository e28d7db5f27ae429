package bridge

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
	"unsafe"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders/protocol"
)

// header slots of an exchange, one per header timbus may set.
const (
	slotProtocol = iota
	slotRequestID
	slotSdkAppID
	slotCommand
	slotClientIP
	slotOptPlatform
	slotDeadline
	numSlots
)

var slotNames = [numSlots]string{
	slotProtocol:    protocol.HeaderProtocol,
	slotRequestID:   protocol.HeaderRequestID,
	slotSdkAppID:    protocol.HeaderSdkAppID,
	slotCommand:     protocol.HeaderCommand,
	slotClientIP:    protocol.HeaderClientIP,
	slotOptPlatform: protocol.HeaderOptPlatform,
	slotDeadline:    protocol.HeaderDeadline,
}

// exchange is the reusable state of one callback on its way to NATS. Its
// header map and value slices are kept between callbacks so that building a
// request allocates nothing; values may point into buffers that live only
// until the callback is answered, which is fine because the NATS client
// encodes headers before Publish or Request returns.
type exchange struct {
	msg      nats.Msg
	values   [numSlots][]string
	id       []byte
	deadline []byte
}

func newExchange() *exchange {
	x := &exchange{
		msg:      nats.Msg{Header: make(nats.Header, numSlots)},
		id:       make([]byte, 0, 40),
		deadline: make([]byte, 0, 20),
	}
	for i := range x.values {
		x.values[i] = make([]string, 1)
	}
	x.set(slotProtocol, protocol.Version)
	return x
}

// set sets a header, or removes it when v is empty.
func (x *exchange) set(slot int, v string) {
	if v == "" {
		delete(x.msg.Header, slotNames[slot])
		return
	}
	x.values[slot][0] = v
	x.msg.Header[slotNames[slot]] = x.values[slot]
}

// release drops references to the callback so a pooled exchange holds no
// request memory.
func (x *exchange) release() {
	x.msg.Data = nil
	for _, slot := range [...]int{slotClientIP, slotOptPlatform, slotRequestID, slotDeadline} {
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
