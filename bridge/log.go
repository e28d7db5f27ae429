package bridge

// Keys of the fields timbus logs, shared by every log line so that a query
// for one callback finds all of them.
const (
	logKeyRequestID = "request_id"
	logKeySdkAppID  = "sdkappid"
	logKeyCommand   = "command"
	logKeyOutcome   = "outcome"
	logKeyCode      = "code"
	logKeyLatency   = "latency_ms"
	logKeyReason    = "reason"
	logKeyComponent = "component"
)
