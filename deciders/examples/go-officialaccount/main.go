// Command go-officialaccount is an example timbus decider: it answers
// OfficialAccount.CallbackBeforeCreateOfficialAccount and refuses official
// account names on a reserved list, so that nobody can create an account
// called "admin" or one that looks like the operator's own.
//
// It is built on the decider SDK, package github.com/timbus-dev/timbus/deciders,
// which does what every decider should: run as a NATS micro service in a queue
// group so that copies share the load, check and send Tencent's reply JSON,
// report the decider's own failures with the micro error headers (the bridge
// then answers the command's default verdict instead of a deny), and skip
// work whose deadline has passed. What is left here is the policy, the
// flags and the connection.
//
// Usage:
//
//	go-officialaccount [--nats-url URL] [--subject-prefix timbus] [--sdkappid '*']
//	                   [--reserved admin,official] [--code 120005] [--queue NAME]
//
// It may start before NATS does: it keeps retrying and logs once connected.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

// run is main without the process around it, so that tests can check exit
// codes. It returns 2 for a usage error, as the flag package does.
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := parseConfig(args, getenv, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "go-officialaccount: %v\n", err)
		return 2
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly, NoColor: !isTerminal(stderr)}).
		Level(cfg.LogLevel).With().Timestamp().Logger()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error().Err(err).Msg("stopped")
		return 1
	}
	return 0
}

// isTerminal keeps colour escapes out of files and log collectors.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
