package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("timbus version")
	if code, ok := parseArgs(fs, args, stdout, stderr, printVersionHelp); !ok {
		return code
	}
	fmt.Fprintf(stdout, "timbus %s\n", version)
	if rev := vcsRevision(); rev != "" {
		fmt.Fprintf(stdout, "commit %s\n", rev)
	}
	fmt.Fprintf(stdout, "%s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}

func printVersionHelp(w io.Writer) {
	fmt.Fprint(w, "Usage: timbus version\n\nPrints the timbus version, the commit it was built from when known, and the Go version.\n")
}

// vcsRevision returns the commit "go build" stamped into the binary, so that
// a "dev" build can still be traced to its source. It is empty under "go
// test" and "go run", which stamp none.
func vcsRevision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = " (modified)"
			}
		}
	}
	if rev == "" {
		return ""
	}
	return rev + modified
}
