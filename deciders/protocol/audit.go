package protocol

import (
	"encoding/json"
	"time"
)

// AuditVersion is the version of AuditRecord; it changes when a field
// changes meaning or disappears, not when one is added.
const AuditVersion = 1

// RejectedToken is the subject token that replaces the SdkAppid on audit
// records of refused requests: <prefix>.audit.rejected.<reason>.
const RejectedToken = "rejected"

// HeaderDecider is an optional reply header naming the decider that answered
// ("name/version/instance"); timbus copies it into the audit record.
const HeaderDecider = "Timbus-Decider"

// AuditRecord is what timbus publishes for every callback it handles on
// <prefix>.audit.<SdkAppid>.<CallbackCommand>, and for every request it
// refuses on <prefix>.audit.rejected.<reason>.
type AuditRecord struct {
	Version     int       `json:"version"`
	RequestID   string    `json:"request_id"`
	ReceivedAt  time.Time `json:"received_at"`
	SdkAppID    string    `json:"sdkappid,omitempty"`
	Command     string    `json:"command,omitempty"`
	Kind        string    `json:"kind,omitempty"` // before, before-modify, reply-data, after
	ClientIP    string    `json:"client_ip,omitempty"`
	OptPlatform string    `json:"opt_platform,omitempty"`
	// Outcome is decided, timeout, no_deciders, invalid_reply, decider_error,
	// nats_error, shed, circuit_open, published, rejected — or late, for a reply that came after
	// the default was sent (a second record with the same request id).
	Outcome string `json:"outcome"`
	// Reason explains a default verdict or a refusal.
	Reason     string `json:"reason,omitempty"`
	HTTPStatus int    `json:"http_status"`
	// Code is the ErrorCode sent to Tencent.
	Code int `json:"code"`
	// Answer is the exact JSON body sent to Tencent.
	Answer json.RawMessage `json:"answer,omitempty"`
	// Decider is the answering decider's HeaderDecider, if it sent one.
	Decider   string  `json:"decider,omitempty"`
	LatencyMS float64 `json:"latency_ms"`
	// Body is the callback's body as Tencent sent it (absent for refusals).
	Body json.RawMessage `json:"body,omitempty"`
	// Query is the request's raw query string, for refusals only.
	Query string `json:"query,omitempty"`
	// Remote is the peer address, for refusals only.
	Remote string `json:"remote,omitempty"`

	// Shadow fields are set when a shadow decider was asked too (see
	// --shadow-prefix). ShadowVerdict is the answer it would have sent:
	// its reply if valid, else the default. Agrees says whether its
	// ErrorCode equals Code.
	ShadowOutcome string          `json:"shadow_outcome,omitempty"`
	ShadowCode    *int            `json:"shadow_code,omitempty"`
	ShadowVerdict json.RawMessage `json:"shadow_verdict,omitempty"`
	ShadowReason  string          `json:"shadow_reason,omitempty"`
	Agrees        *bool           `json:"agrees,omitempty"`
}
