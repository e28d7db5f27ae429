// Package protocol holds the wire contract between timbus and deciders:
// subject layout, NATS header names and their formats. deciders/PROTOCOL.md
// describes the same contract in prose for authors in other languages; the two
// must change together, and Version is bumped whenever they do in a way a
// decider could notice.
package protocol

import (
	"strconv"
	"strings"
	"time"
)

// Version is the version of this contract. It is not sent with each message:
// a change a decider could notice comes with new subject kinds, so a decider
// never receives a message of a version it does not know.
const Version = "1"

// Subject kinds: the second token of every subject timbus uses.
const (
	KindDecide = "decide" // before callbacks: NATS request, a decider replies with a verdict
	KindEvent  = "event"  // after callbacks: NATS publish, nobody replies
	KindAudit  = "audit"  // one record per handled callback, for audit subscribers
)

// DefaultSubjectPrefix is the first token of every subject unless configured otherwise.
const DefaultSubjectPrefix = "timbus"

// Headers timbus sets on events, and on decide requests only when the
// bridge runs with --decide-headers all: by default a decide request carries
// no headers at all, because on a NATS request every header costs the bridge
// and each decider an encoding, a decoding and allocations, about a tenth of
// a callback's cost. What a decider always needs travels in the subject
// (ParseSubject) and the reply subject (ParseReply). Values are plain
// strings; names are case-sensitive, as NATS headers are.
const (
	HeaderRequestID   = "Timbus-Request-Id"   // on events: unique per callback, also in logs and audit records
	HeaderClientIP    = "Timbus-Client-Ip"    // the ClientIP query value; absent when Tencent sent none
	HeaderOptPlatform = "Timbus-Opt-Platform" // the OptPlatform query value; absent when Tencent sent none
)

// Headers of the NATS micro error convention. A decider that sets them says
// "I failed" (timbus answers the default verdict) rather than "deny".
const (
	HeaderServiceError     = "Nats-Service-Error"
	HeaderServiceErrorCode = "Nats-Service-Error-Code"
)

// Subject returns "<prefix>.<kind>.<sdkAppID>.<command>". A Tencent command
// name holds one dot ("Group.CallbackBeforeSendMsg"), so the command spans two
// tokens and "timbus.decide.*.Group.>" selects every group command of every app.
func Subject(prefix, kind, sdkAppID, command string) string {
	var b strings.Builder
	b.Grow(len(prefix) + len(kind) + len(sdkAppID) + len(command) + 3)
	b.WriteString(prefix)
	b.WriteByte('.')
	b.WriteString(kind)
	b.WriteByte('.')
	b.WriteString(sdkAppID)
	b.WriteByte('.')
	b.WriteString(command)
	return b.String()
}

// ParseSubject splits a subject made by Subject, whatever its prefix: the
// prefix may hold dots, so the parts are read from the right. ok is false
// when the subject has too few tokens to be one.
func ParseSubject(subject string) (kind, sdkAppID, command string, ok bool) {
	// dots[0] is the last dot, dots[3] the fourth from the right.
	var dots [4]int
	if !lastDots(subject, dots[:]) || dots[3] == 0 || subject[dots[3]-1] == '.' {
		return "", "", "", false
	}
	return subject[dots[3]+1 : dots[2]], subject[dots[2]+1 : dots[1]], subject[dots[1]+1:], true
}

// lastDots fills dots with the positions of the last len(dots) dots of s,
// rightmost first. It reports false when s has fewer, or when a token
// between them, or after the last, is empty.
func lastDots(s string, dots []int) bool {
	end := len(s)
	for n := range dots {
		i := strings.LastIndexByte(s[:end], '.')
		if i < 0 || i+1 == end {
			return false
		}
		dots[n], end = i, i
	}
	return true
}

// AppendReply appends the reply subject of a decide request to dst:
// "<inbox>.<deadline>.<requestID>.<token>", the deadline in Unix
// milliseconds. inbox and token are the requester's own (timbus routes the
// reply by them); deciders read only the deadline and the request id, with
// ParseReply. requestID must be a ValidToken. JetStream does the same with
// the metadata of a delivered message: it rides in the reply subject, which
// costs nothing extra to send or read.
func AppendReply(dst []byte, inbox string, deadline time.Time, requestID, token string) []byte {
	dst = append(dst, inbox...)
	dst = append(dst, '.')
	dst = strconv.AppendInt(dst, deadline.UnixMilli(), 10)
	dst = append(dst, '.')
	dst = append(dst, requestID...)
	dst = append(dst, '.')
	return append(dst, token...)
}

// ParseReply reads the deadline and the request id from the reply subject of
// a decide request: the third and second tokens from the right. ok is false
// for a reply subject made otherwise (`nats request`'s, say): such a request
// has no deadline and no request id.
func ParseReply(reply string) (deadline time.Time, requestID string, ok bool) {
	// dots[0] is the last dot: before it the request id, before that the
	// deadline, before that the inbox.
	var dots [3]int
	if !lastDots(reply, dots[:]) || dots[2] == 0 {
		return time.Time{}, "", false
	}
	digits := reply[dots[2]+1 : dots[1]]
	if len(digits) > 18 { // beyond any millisecond time, and int64's reach
		return time.Time{}, "", false
	}
	var ms int64
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		if c < '0' || c > '9' {
			return time.Time{}, "", false
		}
		ms = ms*10 + int64(c-'0')
	}
	if ms <= 0 {
		return time.Time{}, "", false
	}
	return time.UnixMilli(ms), reply[dots[1]+1 : dots[0]], true
}

// ValidToken reports whether s can be one token of a subject: not empty,
// without dots, white space or wildcards.
func ValidToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, ". \t\r\n*>")
}

// Request describes one callback as timbus hands it to a decider.
type Request struct {
	RequestID   string
	SdkAppID    string
	Command     string
	ClientIP    string // empty when Tencent sent none
	OptPlatform string // empty when Tencent sent none
	Deadline    time.Time
}

// Header returns the headers timbus adds to a decide request for r with
// --decide-headers all (the bridge builds them with reused buffers on its
// request path; tools and tests use this).
func (r Request) Header() map[string][]string {
	h := map[string][]string{}
	if r.ClientIP != "" {
		h[HeaderClientIP] = []string{r.ClientIP}
	}
	if r.OptPlatform != "" {
		h[HeaderOptPlatform] = []string{r.OptPlatform}
	}
	return h
}

// ParseRequest reads a request from timbus: the app and the command from its
// subject, the deadline and the request id from its reply subject (on an
// event, which has none, the request id from its header), the rest from its
// headers. What a part does not hold is left empty.
func ParseRequest(subject, reply string, h map[string][]string) Request {
	get := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	r := Request{ClientIP: get(HeaderClientIP), OptPlatform: get(HeaderOptPlatform)}
	_, r.SdkAppID, r.Command, _ = ParseSubject(subject)
	var ok bool
	if r.Deadline, r.RequestID, ok = ParseReply(reply); !ok {
		r.RequestID = get(HeaderRequestID)
	}
	return r
}

// ValidPrefix reports whether p can be a subject prefix: dot-separated
// tokens without spaces or wildcards.
func ValidPrefix(p string) bool {
	if p == "" {
		return false
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" || strings.ContainsAny(tok, " \t\r\n*>") {
			return false
		}
	}
	return true
}
