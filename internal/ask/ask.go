// Package ask sends decide requests the way the bridge does, with the
// deadline and the request id in the reply subject, for the tools and tests
// that stand in for the bridge: timbus conform and replay, the benchmark, the
// examples' tests. (The bridge itself routes every reply through one
// subscription; these callers send few requests and take one each.)
package ask

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders/protocol"
)

// Reply returns a fresh reply subject carrying deadline and requestID, which
// must be a protocol.ValidToken.
func Reply(nc *nats.Conn, deadline time.Time, requestID string) (string, error) {
	if !protocol.ValidToken(requestID) {
		return "", fmt.Errorf("ask: request id %q cannot be a subject token", requestID)
	}
	return string(protocol.AppendReply(nil, nc.NewInbox(), deadline, requestID, "r")), nil
}

// Request publishes msg, whose Reply the caller set (with Reply, or to any
// fresh subject), and waits up to wait for the one reply. It returns
// nats.ErrNoResponders when nobody subscribes to msg.Subject and
// nats.ErrTimeout when no reply came in time.
func Request(nc *nats.Conn, msg *nats.Msg, wait time.Duration) (*nats.Msg, error) {
	if msg.Reply == "" {
		return nil, fmt.Errorf("ask: request to %s without a reply subject", msg.Subject)
	}
	sub, err := nc.SubscribeSync(msg.Reply)
	if err != nil {
		return nil, fmt.Errorf("ask: subscribe to the reply: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishMsg(msg); err != nil {
		return nil, fmt.Errorf("ask: publish to %s: %w", msg.Subject, err)
	}
	reply, err := sub.NextMsg(wait)
	if err != nil {
		return nil, err
	}
	// The server's answer when no subscriber matched: an empty message
	// with a 503 status header.
	if len(reply.Data) == 0 && reply.Header.Get("Status") == "503" {
		return nil, nats.ErrNoResponders
	}
	return reply, nil
}

// RequestBy sends msg as a decide request with deadline and requestID in its
// reply subject and waits until the deadline for the reply.
func RequestBy(nc *nats.Conn, msg *nats.Msg, deadline time.Time, requestID string) (*nats.Msg, error) {
	reply, err := Reply(nc, deadline, requestID)
	if err != nil {
		return nil, err
	}
	msg.Reply = reply
	return Request(nc, msg, time.Until(deadline))
}
