package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/rs/zerolog"
	"github.com/timbus-dev/timbus/deciders/protocol"
)

// Tencent passes a deny code from this range on to the client that made the
// request; outside it, Tencent would turn the reply into a generic error or
// the bridge would refuse it as invalid.
const (
	minCustomCode = 120001
	maxCustomCode = 130000
)

// config is everything the flags decide.
type config struct {
	NATSURL       string
	SubjectPrefix string
	SdkAppID      string // "*" for every app
	Reserved      []string
	Code          int
	QueueGroup    string
	LogLevel      zerolog.Level
}

// parseConfig reads flags, falling back to NATS_URL from getenv for the NATS
// URL. Flag errors are reported to stderr by the flag package; validation
// errors are returned for the caller to print.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	natsURL := getenv("NATS_URL")
	if natsURL == "" {
		natsURL = "nats://127.0.0.1:4222"
	}
	var (
		cfg      config
		reserved string
		level    string
	)
	fs := flag.NewFlagSet("go-officialaccount", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.NATSURL, "nats-url", natsURL, "NATS server URL(s), comma-separated (env NATS_URL)")
	fs.StringVar(&cfg.SubjectPrefix, "subject-prefix", protocol.DefaultSubjectPrefix, "first token(s) of the subjects timbus uses")
	fs.StringVar(&cfg.SdkAppID, "sdkappid", "*", "SdkAppid to answer for, or * for every app")
	fs.StringVar(&reserved, "reserved", "admin,official,tencent,timbus", "comma-separated official account names to refuse, case-insensitive")
	fs.IntVar(&cfg.Code, "code", 120005, fmt.Sprintf("ErrorCode of a refusal, %d-%d", minCustomCode, maxCustomCode))
	fs.StringVar(&cfg.QueueGroup, "queue", "timbus-officialaccount", "NATS queue group shared by all copies of this decider")
	fs.StringVar(&level, "log-level", "info", "trace, debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg.Reserved = splitList(reserved)

	var err error
	if cfg.LogLevel, err = zerolog.ParseLevel(level); err != nil || level == "" {
		return config{}, fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", level)
	}
	return cfg, cfg.validate()
}

func (c *config) validate() error {
	switch {
	case c.NATSURL == "":
		return fmt.Errorf("--nats-url is empty")
	case c.Code < minCustomCode || c.Code > maxCustomCode:
		return fmt.Errorf("--code %d: must be in %d-%d, the range Tencent passes on to the client", c.Code, minCustomCode, maxCustomCode)
	case !protocol.ValidPrefix(c.SubjectPrefix):
		return fmt.Errorf("--subject-prefix %q: want dot-separated tokens without spaces or wildcards", c.SubjectPrefix)
	case c.SdkAppID != "*" && !isDigits(c.SdkAppID):
		return fmt.Errorf("--sdkappid %q: want a decimal SdkAppid or *", c.SdkAppID)
	case c.QueueGroup == "" || strings.ContainsAny(c.QueueGroup, " \t\r\n*>"):
		return fmt.Errorf("--queue %q: want a name without spaces or wildcards", c.QueueGroup)
	}
	return nil
}

// subject is where timbus sends this decider's command.
func (c *config) subject() string {
	return protocol.Subject(c.SubjectPrefix, protocol.KindDecide, c.SdkAppID, command)
}

// splitList splits a comma-separated flag value, dropping empty items so that
// a trailing comma or "" means what it looks like.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
