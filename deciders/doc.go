// Package deciders is the Go SDK for timbus deciders: programs that answer
// Tencent Cloud Chat "before" callbacks, which timbus turns into NATS
// requests. It implements the contract in deciders/PROTOCOL.md on top of the
// NATS services framework (github.com/nats-io/nats.go/micro), so that every
// decider answers $SRV.PING, INFO and STATS, shows up in `nats micro ls`,
// and shares its load with its copies through a queue group.
//
// A decider registers a Handler per command (or pattern of commands):
//
//	d, err := deciders.New(nc, deciders.Config{Name: "groupfilter", Version: "1.0.0"})
//	...
//	err = d.Handle("Group.CallbackBeforeSendMsg", func(ctx context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
//		f, err := cb.Fields()
//		if err != nil {
//			return deciders.Verdict{}, deciders.Error{Code: 400, Description: err.Error()}
//		}
//		if f.FromAccount == "mallory" {
//			return deciders.DenyWith(10101, "you are muted"), nil
//		}
//		return deciders.Allow(), nil
//	})
//	...
//	defer d.Stop()
//
// For each callback the SDK:
//
//   - drops it unanswered if its deadline has passed (the bridge has
//     answered Tencent already), and otherwise calls the handler with a
//     context that ends at that deadline;
//   - checks the handler's Verdict against the command's rules (codes and
//     extra reply fields, from package deciders/catalog) and replies with Tencent's
//     reply JSON, bare, or with Config.NameReplies naming itself in the
//     Timbus-Decider header ("<name>/<version>/<instance>") for the bridge's
//     audit records;
//   - turns a handler error, a panic or a verdict the command does not accept
//     into the NATS services error headers, so that the bridge answers its
//     default verdict and logs the outcome decider_error with the reason;
//   - counts expired and late callbacks, panics and invalid verdicts in the
//     endpoint's micro stats, and tells Config.OnResult, if set.
//
// Stop unsubscribes and waits for the callbacks already received to be
// answered; the NATS connection stays the caller's.
package deciders
