// Package bridge is the timbus service: it receives Tencent Cloud Chat
// callbacks over HTTP (fasthttp), checks that they are addressed to an app it
// serves, and turns each into NATS traffic.
//
// A "before" callback, which Tencent holds until it gets a verdict, becomes a
// NATS request on <prefix>.decide.<SdkAppid>.<CallbackCommand>. Deciders —
// workers in any language, usually in a queue group — answer with Tencent's
// reply JSON; the bridge checks the answer against the command's rules
// (package deciders/catalog) and passes it on. When no valid answer comes before the
// command's timeout, when nobody listens, or when NATS is unreachable, the
// bridge answers the configured default verdict instead, always before
// Tencent's own two-second deadline.
//
// An "after" callback, a notification whose answer Tencent ignores, is
// published on <prefix>.event.<SdkAppid>.<CallbackCommand> and acknowledged.
//
// The wire contract deciders rely on is in package
// github.com/timbus-dev/timbus/deciders/protocol and deciders/PROTOCOL.md.
//
// Use it as:
//
//	cfg := bridge.DefaultConfig()
//	cfg.Apps = []bridge.App{{ID: "1400000001"}}
//	b, err := bridge.New(cfg)
//	...
//	err = b.Start(ctx)
//	...
//	err = b.Shutdown(ctx)
package bridge
