// Command timbus bridges Tencent Cloud Chat callbacks to NATS.
//
// Usage:
//
//	timbus serve [flags]      run the bridge
//	timbus check [flags]      check the settings serve would run with, and exit
//	timbus commands [flags]   list the callback commands and their subjects
//	timbus conform [flags]    check deciders against the protocol before deploying them
//	timbus audit [flags]      show the audit records of callbacks
//	timbus replay [flags]     replay recorded callbacks to the deciders of now
//	timbus version            print the version
//	timbus help [command]     show help
//
// The binary only reads settings and wires them to package bridge, where all
// of the service's behaviour lives; run "timbus serve --help" for the
// settings and how flags, environment variables and a YAML file combine.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/timbus-dev/timbus/internal/gctune"
)

// version is stamped at build time:
//
//	go build -ldflags "-X main.version=v1.2.3" ./cmd/timbus
var version = "dev"

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the service failed at run time
	exitUsage   = 2 // bad arguments or configuration: retrying will not help
)

func main() {
	// timbus keeps little live memory and allocates fast, mostly in the NATS
	// client and server: GOGC follows the live heap so that collections
	// come seldom enough not to make the slowest callbacks (see gctune).
	// GOGC set in the environment wins; GOMEMLIMIT still bounds the heap.
	if os.Getenv("GOGC") == "" {
		gctune.Start(gctune.DefaultConfig())
	}
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// subcommand is one verb of the binary. run receives the arguments after the
// verb and returns the exit code.
type subcommand struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// subcommands is a function rather than a variable because help refers back
// to the list, which a package-level variable cannot do.
func subcommands() []subcommand {
	return []subcommand{
		{"serve", "run the bridge between Tencent Cloud Chat and NATS", runServe},
		{"check", "check the settings serve would run with (file, environment, flags) and exit", runCheck},
		{"commands", "list the callback commands, their rules and NATS subjects", runCommands},
		{"conform", "check your deciders' replies against the protocol, before deploying them", runConform},
		{"audit", "show the audit records of callbacks, stored in a stream or as they happen", runAudit},
		{"replay", "replay recorded callbacks to the deciders listening now and compare verdicts", runReplay},
		{"version", "print the version", runVersion},
		{"help", "show help for timbus or one of its commands", runHelp},
	}
}

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stdout)
		return exitOK
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		name = "help"
	}
	if cmd, ok := findSubcommand(name); ok {
		return cmd.run(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "timbus: unknown command %q\n\n", name)
	printUsage(stderr)
	return exitUsage
}

func findSubcommand(name string) (subcommand, bool) {
	for _, cmd := range subcommands() {
		if cmd.name == name {
			return cmd, true
		}
	}
	return subcommand{}, false
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, "timbus bridges Tencent Cloud Chat callbacks to NATS.\n\nUsage:\n\n\ttimbus <command> [flags]\n\nCommands:\n\n")
	for _, cmd := range subcommands() {
		fmt.Fprintf(w, "\t%-10s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprint(w, "\nRun \"timbus help <command>\" or \"timbus <command> --help\" for a command's flags.\n")
}

// runHelp turns "timbus help serve" into "timbus serve --help", so that each
// command's help lives in one place.
func runHelp(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stdout)
		return exitOK
	}
	cmd, ok := findSubcommand(args[0])
	if !ok || cmd.name == "help" {
		fmt.Fprintf(stderr, "timbus help: unknown command %q\n\n", args[0])
		printUsage(stderr)
		return exitUsage
	}
	return cmd.run(ctx, []string{"--help"}, stdout, stderr)
}

// newFlagSet returns a flag set that reports nothing itself, so that each
// command decides where help and errors go.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseArgs parses args for a command that takes flags only. When ok is
// false the command must return code: help was printed, or the arguments
// were wrong and the error was.
func parseArgs(fs *flag.FlagSet, args []string, stdout, stderr io.Writer, help func(io.Writer)) (code int, ok bool) {
	err := fs.Parse(args)
	if err == flag.ErrHelp {
		help(stdout)
		return exitOK, false
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err != nil {
		usageError(stderr, fs.Name(), err)
		return exitUsage, false
	}
	return exitOK, true
}

// usageError reports a usage or configuration error. name is the command's
// flag set name, e.g. "timbus serve".
func usageError(stderr io.Writer, name string, err error) {
	fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", name, err, name)
}
