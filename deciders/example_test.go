package deciders_test

import (
	"context"
	"errors"
	"log"
	"os"
	"os/signal"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders"
)

// A decider that keeps reserved names off official accounts.
func Example() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	d, err := deciders.New(nc, deciders.Config{
		Name:    "officialaccount-names",
		Version: "1.0.0",
		OnResult: func(r deciders.Result) {
			log.Printf("%s %s: %s code=%d err=%v", r.Callback.RequestID, r.Callback.Command, r.Outcome, r.Verdict.Code(), r.Err)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	err = d.Handle("OfficialAccount.CallbackBeforeCreateOfficialAccount",
		func(ctx context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
			f, err := cb.Fields()
			if err != nil {
				// Not a deny: the bridge answers its default verdict.
				return deciders.Verdict{}, deciders.Error{Code: 400, Description: err.Error()}
			}
			if strings.EqualFold(f.Name, "admin") {
				return deciders.DenyWith(120005, "this name is reserved"), nil
			}
			return deciders.Allow(), nil
		})
	if err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	<-ctx.Done()
	if err := d.Stop(); err != nil {
		log.Print(err)
	}
}

// Masking a word in group messages, leaving the other elements as they are.
func ExampleModify() {
	handler := func(ctx context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
		f, err := cb.Fields()
		if err != nil {
			return deciders.Verdict{}, err
		}
		changed := false
		body := make([]deciders.MsgElem, len(f.MsgBody))
		for i, e := range f.MsgBody {
			body[i] = e
			if text, ok := e.Text(); ok && strings.Contains(text, "spam") {
				body[i] = deciders.TextElem(strings.ReplaceAll(text, "spam", "****"))
				changed = true
			}
		}
		if !changed {
			return deciders.Allow(), nil
		}
		return deciders.Modify(body), nil
	}
	_ = handler // d.Handle("Group.CallbackBeforeSendMsg", handler)
}

// Telling "I failed" from "deny": a handler error makes the bridge answer its
// default verdict, with the code and description in its log.
func ExampleError() {
	errUnavailable := errors.New("database unavailable")
	handler := func(ctx context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
		if err := ctx.Err(); err != nil {
			return deciders.Verdict{}, err
		}
		return deciders.Verdict{}, deciders.Error{Code: 503, Description: errUnavailable.Error()}
	}
	_ = handler
}
