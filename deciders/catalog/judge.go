package catalog

import (
	"errors"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders/protocol"
)

// JudgeReply reads a decider's reply to c as timbus does before Tencent
// sees it: a valid verdict is OutcomeDecided with its ErrorCode; otherwise
// the outcome says what was wrong (no deciders, decider error, invalid
// reply) and err why. The bridge, `timbus conform` and `timbus replay` all
// judge with it, so that they cannot disagree.
func (c *Command) JudgeReply(reply *nats.Msg) (protocol.Outcome, int, error) {
	if len(reply.Data) == 0 && reply.Header.Get(statusHeader) == noRespondersStatus {
		return protocol.OutcomeNoDeciders, 0, nats.ErrNoResponders
	}
	if desc := reply.Header.Get(protocol.HeaderServiceError); desc != "" || reply.Header.Get(protocol.HeaderServiceErrorCode) != "" {
		return protocol.OutcomeDeciderError, 0, errors.New(strings.TrimSpace("decider reported an error: " +
			reply.Header.Get(protocol.HeaderServiceErrorCode) + " " + desc))
	}
	code, err := c.ValidateReply(reply.Data)
	if err != nil {
		return protocol.OutcomeInvalidReply, 0, err
	}
	return protocol.OutcomeDecided, code, nil
}

// The status NATS sends in place of a reply when nobody subscribes.
const (
	statusHeader       = "Status"
	noRespondersStatus = "503"
)
