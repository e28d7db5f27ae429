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

// Headers timbus sets on decide requests and events. Values are plain
// strings; names are case-sensitive, as NATS headers are. The SdkAppid and
// the command are not headers: the subject holds them (ParseSubject).
const (
	HeaderRequestID   = "Timbus-Request-Id"   // unique per callback, also in logs and audit records
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

// ParseSubject splits a subject made by Subject, whatever its prefix: the
// prefix may hold dots, so the parts are read from the right. ok is false
// when the subject has too few tokens to be one.
func ParseSubject(subject string) (kind, sdkAppID, command string, ok bool) {
	var tokens [4]string // kind, SdkAppid, command family, command name
	prefix := subject
	for i := len(tokens) - 1; i >= 0; i-- {
		dot := strings.LastIndexByte(prefix, '.')
		if dot < 0 {
			return "", "", "", false
		}
		tokens[i], prefix = prefix[dot+1:], prefix[:dot]
		if tokens[i] == "" {
			return "", "", "", false
		}
	}
	if prefix == "" || prefix[len(prefix)-1] == '.' {
		return "", "", "", false
	}
	command = subject[len(subject)-len(tokens[2])-1-len(tokens[3]):]
	return tokens[0], tokens[1], command, true
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

// Header returns the NATS headers timbus sets for r; SdkAppID and Command
// go in the subject instead (Subject). (The bridge builds the same headers
// with reused buffers on its request path; tools and tests use this.)
func (r Request) Header() map[string][]string {
	h := map[string][]string{HeaderRequestID: {r.RequestID}}
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

// ParseRequest reads a request from timbus: the app and command from its
// subject, the rest from its headers. A subject ParseSubject cannot split
// leaves SdkAppID and Command empty.
func ParseRequest(subject string, h map[string][]string) Request {
	get := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	deadline, _ := ParseDeadline(get(HeaderDeadline))
	_, app, command, _ := ParseSubject(subject)
	return Request{
		RequestID:   get(HeaderRequestID),
		SdkAppID:    app,
		Command:     command,
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
