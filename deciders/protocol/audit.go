package protocol

import (
	"bytes"
	"encoding/json"
	"time"
)

// AuditVersion is the version of AuditRecord; it changes when a field
// changes meaning or disappears, not when one is added.
const AuditVersion = 1

// RejectedToken is the subject token that replaces the SdkAppid on audit
// records of refused requests: <prefix>.audit.rejected.<reason>.
const RejectedToken = "rejected"

// RecordSeparator starts each record of an audit message that holds several
// (RFC 7464's RS).
const RecordSeparator = 0x1e

// EachRecord calls fn with each audit record of a NATS message, in order,
// until fn returns false. A message holds one record, as a JSON object; or,
// when it starts with RecordSeparator, several records of its subject as an
// RFC 7464 JSON text sequence: each preceded by RS and followed by a line
// feed. (A record may hold line feeds, in the body Tencent sent; never RS,
// which JSON does not allow outside strings nor unescaped inside them.)
func EachRecord(data []byte, fn func(record []byte) bool) {
	if len(data) == 0 || data[0] != RecordSeparator {
		if len(data) > 0 {
			fn(data)
		}
		return
	}
	for len(data) > 0 {
		data = data[1:] // the RS
		record := data
		if i := bytes.IndexByte(data, RecordSeparator); i >= 0 {
			record, data = data[:i], data[i:]
		} else {
			data = nil
		}
		record = bytes.TrimRight(record, "\n")
		if len(record) > 0 && !fn(record) {
			return
		}
	}
}

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
	// Answer is the exact JSON body sent to Tencent; on a late record, the
	// decider's reply: as it came when it is one valid JSON value, else as a
	// JSON string holding it. Invalid UTF-8 in either becomes U+FFFD.
	Answer json.RawMessage `json:"answer,omitempty"`
	// Decider is the answering decider's HeaderDecider, if it sent one.
	Decider   string  `json:"decider,omitempty"`
	LatencyMS float64 `json:"latency_ms"`
	// Body is the callback's body as Tencent sent it (absent for refusals).
	// When the record had to be cut (see Truncated), it is a JSON string
	// holding the body's first bytes instead, or absent.
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

	// Truncated names the fields timbus cut, each with its size in bytes
	// before the cut. Text fields have bounds of their own (256 bytes
	// encoded for identifiers and addresses, 2048 for reason, query and
	// shadow_reason); answer, body and shadow_verdict are cut only when the
	// record would not fit the NATS server's max_payload, and are then JSON
	// strings holding their first bytes, or absent when nothing fits.
	Truncated map[string]int `json:"truncated,omitempty"`
}

// Cut reports whether timbus cut field (its JSON name) in the record.
func (r *AuditRecord) Cut(field string) bool {
	_, ok := r.Truncated[field]
	return ok
}
