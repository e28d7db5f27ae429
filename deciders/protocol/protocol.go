// Package protocol holds the wire contract between timbus and deciders:
// subject layout, NATS header names and their formats. deciders/PROTOCOL.md
// describes the same contract in prose for authors in other languages; the two
// must change together, and Version is bumped whenever they do in a way a
// decider could notice.
package protocol

import "strings"

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
