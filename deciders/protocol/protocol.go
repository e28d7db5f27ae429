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

// Version is the protocol version timbus sends in HeaderProtocol.
const Version = "1"

// Subject kinds: the second token of every subject timbus uses.
const (
	KindDecide = "decide" // before callbacks: NATS request, a decider replies with a verdict
	KindEvent  = "event"  // after callbacks: NATS publish, nobody replies
	KindAudit  = "audit"  // one record per handled callback, for audit subscribers
)

// DefaultSubjectPrefix is the first token of every subject unless configured otherwise.
const DefaultSubjectPrefix = "timbus"

// Headers timbus sets on every decide request and event. Values are plain
// strings; names are case-sensitive, as NATS headers are.
const (
	HeaderProtocol    = "Timbus-Protocol"     // Version
	HeaderRequestID   = "Timbus-Request-Id"   // unique per callback, also in logs and audit records
	HeaderSdkAppID    = "Timbus-Sdkappid"     // the SdkAppid query value, e.g. 1400000001
	HeaderCommand     = "Timbus-Command"      // the CallbackCommand, e.g. Group.CallbackBeforeSendMsg
	HeaderClientIP    = "Timbus-Client-Ip"    // the ClientIP query value; absent when Tencent sent none
	HeaderOptPlatform = "Timbus-Opt-Platform" // the OptPlatform query value; absent when Tencent sent none
	// HeaderDeadline is the absolute time, in Unix milliseconds, after which
	// timbus no longer waits for a reply; work past it is wasted.
	HeaderDeadline = "Timbus-Deadline"
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

// FormatDeadline renders t as the value of HeaderDeadline.
func FormatDeadline(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// ParseDeadline reads a HeaderDeadline value. ok is false when the value is
// missing or malformed.
func ParseDeadline(v string) (t time.Time, ok bool) {
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
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

// Header returns the NATS headers timbus sets for r. (The bridge builds the
// same headers with reused buffers on its request path; tools and tests use
// this.)
func (r Request) Header() map[string][]string {
	h := map[string][]string{
		HeaderProtocol:  {Version},
		HeaderRequestID: {r.RequestID},
		HeaderSdkAppID:  {r.SdkAppID},
		HeaderCommand:   {r.Command},
	}
	if r.ClientIP != "" {
		h[HeaderClientIP] = []string{r.ClientIP}
	}
	if r.OptPlatform != "" {
		h[HeaderOptPlatform] = []string{r.OptPlatform}
	}
	if !r.Deadline.IsZero() {
		h[HeaderDeadline] = []string{FormatDeadline(r.Deadline)}
	}
	return h
}

// ParseRequest reads the headers of a request from timbus.
func ParseRequest(h map[string][]string) Request {
	get := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	deadline, _ := ParseDeadline(get(HeaderDeadline))
	return Request{
		RequestID:   get(HeaderRequestID),
		SdkAppID:    get(HeaderSdkAppID),
		Command:     get(HeaderCommand),
		ClientIP:    get(HeaderClientIP),
		OptPlatform: get(HeaderOptPlatform),
		Deadline:    deadline,
	}
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
