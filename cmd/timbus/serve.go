package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/timbus-dev/timbus/bridge"
)

// shutdownTimeout bounds the wait for callbacks in flight and the NATS drain.
// Each callback ends within its own decider timeout, so this is generous.
const shutdownTimeout = 10 * time.Second

// onStarted, when set, is called once the bridge serves. Tests use it to
// learn the addresses the bridge bound.
var onStarted func(*bridge.Bridge)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const name = "timbus serve"
	cfg, err := loadServeConfig(args, os.LookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		printServeHelp(stdout)
		return exitOK
	}
	if err != nil {
		usageError(stderr, name, err)
		return exitUsage
	}
	if path := os.Getenv("TIMBUS_CPUPROFILE"); path != "" {
		stopProfile, err := startCPUProfile(path)
		if err != nil {
			usageError(stderr, name, err)
			return exitUsage
		}
		defer stopProfile()
	}
	out := newAsyncLog(stderr, formatter(cfg.logFormat, stderr))
	defer out.Close()
	log := newLogger(out, cfg.logLevel)
	cfg.bridge.Logger = log
	b, err := bridge.New(cfg.bridge)
	if err != nil {
		usageError(stderr, name, cfg.explain(err))
		return exitUsage
	}
	return serve(ctx, b, log)
}

// serve runs b until ctx ends or the process gets SIGINT or SIGTERM.
func serve(ctx context.Context, b *bridge.Bridge, log zerolog.Logger) int {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info().Str("version", version).Str("go", runtime.Version()).Msg("timbus starting")
	// The bridge logs its listen address and NATS URL once it serves.
	if err := b.Start(ctx); err != nil {
		log.Error().Err(err).Msg("timbus cannot start")
		return exitFailure
	}
	if b.TLS() {
		// Only with HTTPS: without, SIGHUP keeps its default effect.
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go reloadOnHUP(ctx, hup, b, log)
	}
	if onStarted != nil {
		onStarted(b)
	}
	failed := waitServing(ctx, b)
	// From here a second signal kills the process the default way, a way out
	// of a shutdown that hangs.
	stop()
	if failed != nil {
		// Living on without a listener would leave Tencent unanswered while
		// the process looks fine: exit, for the supervisor to restart it.
		log.Error().Err(failed).Msg("timbus stopped serving callbacks; shutting down")
	} else {
		log.Info().Msg("timbus shutting down")
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := b.Shutdown(shutdownCtx); err != nil {
		log.Error().Err(err).Msg("timbus shutdown incomplete")
		return exitFailure
	}
	if failed != nil {
		return exitFailure
	}
	return exitOK
}

// reloadOnHUP reloads the TLS certificate on each SIGHUP until ctx ends. A
// reload that fails keeps the certificate in use.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, b *bridge.Bridge, log zerolog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := b.ReloadTLS(); err != nil {
				log.Warn().Err(err).Msg("SIGHUP: TLS certificate not reloaded; still serving the previous one")
			} else {
				log.Info().Msg("SIGHUP: TLS certificate files read again")
			}
		}
	}
}

// waitServing waits for a signal (the end of ctx) or for the bridge to stop
// serving on its own, and returns nil or why it stopped.
func waitServing(ctx context.Context, b *bridge.Bridge) error {
	select {
	case <-ctx.Done():
		return nil
	case <-b.Done():
		if err := b.Err(); err != nil {
			return err
		}
		return bridge.ErrServe
	}
}

// startCPUProfile writes a CPU profile of the whole run to path, for
// finding where time goes under load (TIMBUS_CPUPROFILE; see make bench).
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("TIMBUS_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("TIMBUS_CPUPROFILE: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// newLogger builds the service's logger on w. The level was checked when the
// settings were read.
func newLogger(w io.Writer, level string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// formatter returns how log lines are rendered on their way to out: as they
// are (JSON), or for people. It runs on the log writer's goroutine.
func formatter(format string, out io.Writer) func(io.Writer) io.Writer {
	return func(w io.Writer) io.Writer {
		if format == "console" {
			return zerolog.ConsoleWriter{Out: w, NoColor: !isTerminal(out), TimeFormat: time.RFC3339}
		}
		return w
	}
}

// isTerminal reports whether w is a terminal, so that colour codes do not end
// up in files and log collectors.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// explain adds to a bridge configuration error where the bad value came from.
func (c *serveConfig) explain(err error) error {
	var ce *bridge.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	from, ok := c.from[ce.Field]
	switch {
	case ce.Field == "sdkappid":
		// IDs come from --sdkappid and the file's apps alike; the value
		// shown is enough to find the culprit.
		return err
	case ok:
	case c.file != "" && (strings.HasPrefix(ce.Field, "apps.") || strings.HasPrefix(ce.Field, "commands.")):
		from = c.file
	default:
		from = "the default"
	}
	return fmt.Errorf("%s=%v (from %s): %w", ce.Field, ce.Value, from, ce.Err)
}

func printServeHelp(w io.Writer) {
	fmt.Fprintf(w, `Usage: timbus serve [flags]

Runs the bridge: receives Tencent Cloud Chat callbacks over HTTP and turns
each into NATS traffic. A callback Tencent waits on becomes a request on
<prefix>.decide.<SdkAppid>.<CallbackCommand>, answered by a decider; any other
becomes an event on <prefix>.event.<SdkAppid>.<CallbackCommand>.

Every flag can also be set by the environment variable shown next to it, or
by a key of the same name in the YAML file given by --config. Precedence: a
flag beats the environment variable, which beats the file, which beats the
default. An empty environment variable counts as unset. Lists are
comma-separated (in the file, a YAML list also works); durations are Go
durations such as 1500ms or 2m.

Flags:
`)
	writeFlagHelp(w, "--"+configOption+" FILE", envName(configOption), "YAML file with settings; its keys are the flag names below", "")
	defaults := defaultServeConfig()
	for _, opt := range serveOptions {
		writeFlagHelp(w, "--"+opt.name+" "+opt.arg, envName(opt.name), opt.usage, opt.get(defaults))
	}
	fmt.Fprintf(w, `
The file may also hold settings that have no flag:

  apps:                          # merged with --sdkappid
    - sdkappid: 1400000001
      default: deny              # this app's default verdict
  commands:                      # per-command overrides, by CallbackCommand
    Group.CallbackBeforeSendMsg:
      timeout: 800ms
      default: allow
      fire_and_forget: false     # true: publish as an event, answer the default at once

Unknown keys are an error. Run "timbus commands" for the command names, the
verdict codes each accepts and their NATS subjects.

With --tls-cert, SIGHUP reads the certificate and key files again (they are
also read again when they change on disk, within a second).

timbus stops on SIGINT or SIGTERM, letting callbacks in flight finish (for up
to %v), and on its own, with status 1, should its callback listener fail.
Exit status: 0 after a clean stop, 2 for a usage or configuration error, 1
when the service fails.
`, shutdownTimeout)
}

func writeFlagHelp(w io.Writer, flagText, env, usage, def string) {
	fmt.Fprintf(w, "  %-30s [%s]\n        %s", flagText, env, usage)
	if def != "" {
		fmt.Fprintf(w, " (default %q)", def)
	}
	fmt.Fprintln(w)
}
