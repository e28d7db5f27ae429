package protocol

import "slices"

// Outcome says what became of a callback. It appears in timbus's logs, in
// its metrics (label "outcome") and in audit records.
type Outcome string

const (
	OutcomeDecided      Outcome = "decided"       // a decider's valid verdict was sent
	OutcomeTimeout      Outcome = "timeout"       // no answer in time: default sent
	OutcomeNoDeciders   Outcome = "no_deciders"   // nobody listens: default sent at once
	OutcomeInvalidReply Outcome = "invalid_reply" // the answer broke the command's rules: default sent
	OutcomeDeciderError Outcome = "decider_error" // the decider reported a failure: default sent
	OutcomeNATSError    Outcome = "nats_error"    // NATS unreachable: default sent
	OutcomePublished    Outcome = "published"     // an after callback was published as an event
	OutcomeRejected     Outcome = "rejected"      // the request was refused and nothing was published
	OutcomeLate         Outcome = "late"          // a reply came after the default was sent (audit only)
	OutcomeShed         Outcome = "shed"          // over max-inflight: default sent at once
	OutcomeCircuitOpen  Outcome = "circuit_open"  // the command's breaker is open: default sent at once
)

var callbackOutcomes = []Outcome{
	OutcomeDecided, OutcomeTimeout, OutcomeNoDeciders, OutcomeInvalidReply, OutcomeDeciderError,
	OutcomeNATSError, OutcomeShed, OutcomeCircuitOpen, OutcomePublished,
}

// CallbackOutcomes returns every outcome a callback that was not refused can
// have: the values of the outcome label of timbus_callbacks_total.
func CallbackOutcomes() []Outcome { return slices.Clone(callbackOutcomes) }

// AuditOutcomes returns every outcome an audit record can hold: those of
// callbacks, then rejected and late, which only audit records carry.
func AuditOutcomes() []Outcome {
	return append(CallbackOutcomes(), OutcomeRejected, OutcomeLate)
}
