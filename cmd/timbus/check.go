package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/timbus-dev/timbus/bridge"
)

// runCheck is "timbus check": it reads the settings exactly as "timbus serve"
// would (flags, environment, file) and has the bridge validate them, without
// opening a socket, creating a directory or connecting anywhere.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const name = "timbus check"
	cfg, err := loadServeConfig(args, os.LookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		printCheckHelp(stdout)
		return exitOK
	}
	if err != nil {
		usageError(stderr, name, err)
		return exitUsage
	}
	// New validates and builds routes; only Start listens and connects.
	if _, err := bridge.New(cfg.bridge); err != nil {
		usageError(stderr, name, cfg.explain(err))
		return exitUsage
	}
	writeCheckSummary(stdout, cfg)
	return exitOK
}

// writeCheckSummary prints what the settings amount to, so that a deployment
// can be reviewed at a glance. Secrets are never printed.
func writeCheckSummary(w io.Writer, cfg *serveConfig) {
	b := &cfg.bridge
	source := cfg.file
	if source == "" {
		source = "settings (no config file)"
	}
	fmt.Fprintf(w, "%s: ok\n", source)
	line := func(key, format string, args ...any) {
		fmt.Fprintf(w, "  %-9s %s\n", key+":", fmt.Sprintf(format, args...))
	}

	apps := make([]string, 0, len(b.Apps))
	for _, app := range b.Apps {
		text := app.ID
		if app.Default != nil {
			text += " (default " + app.Default.String() + ")"
		}
		apps = append(apps, text)
	}
	line("apps", "%s", strings.Join(apps, ", "))
	line("http", "%s, path %s, %s", b.Listen, b.Path, tlsSummary(b))
	line("decide", "timeout %s, default %s, subjects %s.decide.<SdkAppid>.<Command>", shortDuration(b.Timeout), b.Default, b.SubjectPrefix)
	if len(b.Commands) > 0 {
		names := make([]string, 0, len(b.Commands))
		for name := range b.Commands {
			names = append(names, name)
		}
		sort.Strings(names)
		line("commands", "%s", strings.Join(names, ", "))
	}

	if b.NATSURL != "" {
		line("nats", "external %s", bridge.RedactURLs(b.NATSURL))
	} else {
		js := "no JetStream"
		if b.NATSStoreDir != "" {
			js = "JetStream in " + b.NATSStoreDir
		}
		listen := b.NATSListen
		if b.NATSConfig != "" {
			listen += ", config " + b.NATSConfig
		}
		line("nats", "embedded server on %s (%s; %s)", listen, js, b.EmbeddedNATSAuth())
	}
	if !b.NATSAuth.IsZero() {
		line("nats auth", "%s", b.NATSAuth)
	}

	var streams []string
	for _, s := range []struct {
		role string
		cfg  bridge.StreamConfig
	}{{"audit", b.AuditStream}, {"events", b.EventsStream}} {
		if s.cfg.Name != "" {
			streams = append(streams, s.role+" "+s.cfg.Name+streamDetails(s.cfg))
		}
	}
	if len(streams) == 0 {
		streams = append(streams, "none")
	}
	line("streams", "%s", strings.Join(streams, ", "))

	if b.MetricsListen != "" {
		line("ops", "/metrics, /healthz, /readyz on %s", b.MetricsListen)
	} else {
		line("ops", "/metrics, /healthz, /readyz on %s (the callback listener)", b.Listen)
	}
	line("auth", "%s", authSummary(b))
	line("conns", "%s", connsSummary(cfg))
	if b.DrainDelay > 0 {
		line("shutdown", "not ready for %s, then drain (at most %s in all)", shortDuration(b.DrainDelay), shortDuration(shutdownTimeout))
	}
}

// tlsSummary says whether callbacks come over HTTPS, and whether clients
// must show a certificate: the files' names, not their contents.
func tlsSummary(b *bridge.Config) string {
	switch {
	case b.TLSCert == "":
		return "plain HTTP (no TLS: terminate it at a proxy, or set --tls-cert)"
	case b.TLSClientCA == "":
		return "https (certificate " + b.TLSCert + "), client certificates not required"
	default:
		return "https (certificate " + b.TLSCert + "), client certificates required (CA " + b.TLSClientCA + ")"
	}
}

// connsSummary gives the effective connection caps. The default max-conns
// comes from the open-file limit of this process: run check under the
// service's limits (ulimit -n, LimitNOFILE) to see the service's.
func connsSummary(cfg *serveConfig) string {
	b := &cfg.bridge
	limit, known := bridge.OpenFileLimit()
	limitText := strconv.FormatUint(limit, 10)
	if limit == math.MaxUint64 {
		limitText = "unlimited"
	}
	var out string
	switch _, set := cfg.from["max-conns"]; {
	case b.MaxConns == 0:
		out = "no cap on open callback connections"
	case !set && known:
		out = fmt.Sprintf("at most %d open callback connections (the default for an open-file limit of %s)", b.MaxConns, limitText)
	default:
		out = fmt.Sprintf("at most %d open callback connections", b.MaxConns)
		if known && limit != math.MaxUint64 && uint64(b.MaxConns) >= limit {
			out += fmt.Sprintf(" — not under the open-file limit (%s)", limitText)
		}
	}
	if b.MaxConnsPerIP > 0 {
		out += fmt.Sprintf(", %d per client address", b.MaxConnsPerIP)
	}
	return out + ", idle keep-alive " + shortDuration(b.IdleTimeout)
}

func streamDetails(s bridge.StreamConfig) string {
	var parts []string
	parts = append(parts, fmt.Sprintf("replicas %d", max(s.Replicas, 1)))
	if s.MaxAge > 0 {
		parts = append(parts, "max_age "+shortDuration(s.MaxAge))
	}
	if s.MaxBytes > 0 {
		parts = append(parts, fmt.Sprintf("max_bytes %d", s.MaxBytes))
	}
	if s.DuplicateWindow > 0 {
		parts = append(parts, "duplicate_window "+shortDuration(s.DuplicateWindow))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// authSummary says which apps must sign their callbacks, without the tokens.
func authSummary(b *bridge.Config) string {
	var signed, unsigned []string
	for _, app := range b.Apps {
		if app.Token != "" || b.Token != "" {
			signed = append(signed, app.ID)
		} else {
			unsigned = append(unsigned, app.ID)
		}
	}
	var out string
	switch {
	case len(unsigned) == 0:
		out = "signed callbacks required (token set)"
	case len(signed) == 0:
		out = "callbacks NOT authenticated: no token (set " + envName("token") + ")"
	default:
		out = "signed callbacks required except for " + strings.Join(unsigned, ", ") + " (no token)"
	}
	if len(b.AllowCIDRs) > 0 {
		out += "; sources limited to " + strings.Join(b.AllowCIDRs, ", ")
		if len(b.TrustedProxies) > 0 {
			out += " behind " + strings.Join(b.TrustedProxies, ", ") + " (" + b.ProxyHeader + ")"
		}
	}
	return out
}

// shortDuration prints 720h rather than 720h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func printCheckHelp(w io.Writer) {
	fmt.Fprintf(w, `Usage: timbus check [--config FILE] [serve flags]

Checks the settings "timbus serve" would run with, and exits. They are read
exactly as serve reads them: flags, then TIMBUS_* environment variables, then
the YAML file given by --config (or TIMBUS_CONFIG). So run it with the same
environment as the service: in a container, that is where secrets such as
TIMBUS_TOKEN come from. Every flag of "timbus serve --help" is accepted.

Nothing is started: no port is opened, no directory created, NATS is not
contacted. Whether NATS is reachable, a port free or a stream compatible is
only known when serve starts.

On success it prints "FILE: ok" and a summary: apps, NATS (embedded, or the
external URLs with passwords hidden), streams, plain HTTP or HTTPS (and
whether clients must show a certificate), the operations listener,
whether callbacks must be signed, and the connection caps. Tokens are never
printed. The default --max-conns comes from the open-file limit (ulimit -n)
of the process: run check under the service's limits to see its value.

Exit status: 0 when serve would accept the settings; 2 when it would not, with
the setting at fault and where its value came from.

Examples:

  timbus check --config /etc/timbus/timbus.yaml
  TIMBUS_TOKEN=... timbus check --config deploy/kubernetes/timbus.yaml
`)
}
