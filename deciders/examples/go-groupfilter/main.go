// Command go-groupfilter is an example timbus decider built on the Go SDK
// (package github.com/timbus-dev/timbus/deciders). It answers
// Group.CallbackBeforeSendMsg: a group message whose text holds a banned word
// goes through with the word masked by asterisks ("this is ****"), every
// other element unchanged; any other message goes through as it is.
//
// Usage:
//
//	go-groupfilter [--nats-url URL] [--subject-prefix timbus] [--sdkappid '*'] [--banned spam,scam]
//
// It may start before NATS does: it keeps retrying until it connects.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders"
	"github.com/timbus-dev/timbus/deciders/protocol"
)

// Identity of the micro service, as `nats micro ls` shows it.
const (
	serviceName    = "groupfilter"
	serviceVersion = "1.0.0"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

// config is everything the flags decide.
type config struct {
	NATSURL string
	Banned  []string
	Decider deciders.Config
}

// parseConfig reads flags, falling back to NATS_URL from getenv.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	natsURL := getenv("NATS_URL")
	if natsURL == "" {
		natsURL = nats.DefaultURL
	}
	cfg := config{Decider: deciders.Config{
		Name:        serviceName,
		Version:     serviceVersion,
		Description: "masks banned words in group messages for timbus",
	}}
	var banned string
	fs := flag.NewFlagSet("go-groupfilter", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.NATSURL, "nats-url", natsURL, "NATS server URL(s), comma-separated (env NATS_URL)")
	fs.StringVar(&cfg.Decider.SubjectPrefix, "subject-prefix", protocol.DefaultSubjectPrefix, "first token(s) of the subjects timbus uses")
	fs.StringVar(&cfg.Decider.SdkAppID, "sdkappid", deciders.AllApps, "SdkAppid to answer for, or * for every app")
	fs.StringVar(&banned, "banned", "spam,scam", "comma-separated words to mask, matched as whole words in any case")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for w := range strings.SplitSeq(banned, ",") {
		if w = strings.TrimSpace(w); w != "" {
			cfg.Banned = append(cfg.Banned, w)
		}
	}
	if cfg.NATSURL == "" {
		return config{}, errors.New("--nats-url is empty")
	}
	if cfg.Decider.SubjectPrefix == "" {
		return config{}, errors.New("--subject-prefix is empty")
	}
	return cfg, cfg.Decider.Validate()
}

// run is main without the process around it. It returns 2 for a usage error,
// as the flag package does.
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := parseConfig(args, getenv, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "go-groupfilter: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	return 0
}

// serve answers callbacks until ctx ends, then lets those in hand finish.
func serve(ctx context.Context, cfg config, log *slog.Logger) error {
	closed := make(chan struct{})
	nc, err := nats.Connect(cfg.NATSURL,
		nats.Name(serviceName),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ConnectHandler(func(nc *nats.Conn) { log.Info("connected to NATS", "url", nc.ConnectedUrlRedacted()) }),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
	)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}

	f := newFilter(cfg.Banned, log)
	dcfg := cfg.Decider
	dcfg.OnResult = func(r deciders.Result) {
		switch {
		case r.Outcome == deciders.Expired:
			log.Warn("deadline passed, not answering", "request_id", r.Callback.RequestID)
		case r.Err != nil:
			log.Warn("cannot decide", "request_id", r.Callback.RequestID, "outcome", r.Outcome, "err", r.Err)
		}
	}
	d, err := deciders.New(nc, dcfg)
	if err == nil {
		if err = d.Handle(command, f.decide); err != nil {
			err = errors.Join(err, d.Stop())
		}
	}
	if err != nil {
		nc.Close()
		return err
	}
	log.Info("ready", "command", command, "sdkappid", dcfg.SdkAppID, "banned", strings.Join(cfg.Banned, ","))

	<-ctx.Done()
	log.Info("stopping")
	err = d.Stop() // answers the callbacks in hand
	if derr := nc.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionReconnecting) {
		err = errors.Join(err, derr)
	}
	<-closed
	return err
}
