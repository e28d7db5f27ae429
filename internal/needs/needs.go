// Package needs is how a test says which tools outside Go it runs: a C
// compiler and libraries, Node.js, the nats CLI, jq, wrk…
//
// `go test ./...` must pass on any machine with Go, so a test whose tools are
// missing is skipped with one line naming what to install. CI must not
// silently lose those tests, so with TIMBUS_REQUIRE_EXAMPLES=1 (which .ci/run
// sets after `make deps`) the same line fails the test instead.
//
// The package is at the module root, not beside the examples, so
// that tests outside the examples (cmd/timbus-bench needs wrk) share it.
package needs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequireEnv, set to 1, turns every skip for a missing tool into a failure.
const RequireEnv = "TIMBUS_REQUIRE_EXAMPLES"

// ReportEnv names a file to which each skip line is also appended, prefixed
// with the test's package directory: `go test ./...` shows no skip messages
// without -v, so `make test` prints that file at the end instead.
const ReportEnv = "TIMBUS_SKIP_REPORT"

// A Probe looks for one thing a test needs and returns short names of what
// is missing, nothing when all is there.
type Probe func() []string

// Commands finds each name on PATH.
func Commands(names ...string) Probe {
	return func() []string {
		var missing []string
		for _, n := range names {
			if _, err := exec.LookPath(n); err != nil {
				missing = append(missing, n)
			}
		}
		return missing
	}
}

// Executable looks for an executable file at path, reported as name when
// missing.
func Executable(name, path string) Probe {
	return func() []string {
		fi, err := os.Stat(path)
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return []string{name}
		}
		return nil
	}
}

// File looks for path, reported as name when missing.
func File(name, path string) Probe {
	return func() []string {
		if _, err := os.Stat(path); err != nil {
			return []string{name}
		}
		return nil
	}
}

// Runs runs command with args, reported as name unless it exits 0 within
// ten seconds; for what a path lookup cannot tell, such as a version.
func Runs(name, command string, args ...string) Probe {
	return func() []string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if exec.CommandContext(ctx, command, args...).Run() != nil {
			return []string{name}
		}
		return nil
	}
}

// PkgConfig asks pkg-config (or $PKG_CONFIG) for each package: C headers and
// libraries. Without pkg-config, it is what is reported missing.
func PkgConfig(pkgs ...string) Probe {
	return func() []string {
		tool := os.Getenv("PKG_CONFIG")
		if tool == "" {
			tool = "pkg-config"
		}
		if _, err := exec.LookPath(tool); err != nil {
			return []string{tool}
		}
		var missing []string
		for _, p := range pkgs {
			if len(Runs(p, tool, "--exists", p)()) > 0 {
				missing = append(missing, p+" (pkg-config)")
			}
		}
		return missing
	}
}

// AnyOf is satisfied when one of probes finds everything it looks for, and
// reports name otherwise: a tool that may be in one of several places.
func AnyOf(name string, probes ...Probe) Probe {
	return func() []string {
		for _, p := range probes {
			if len(p()) == 0 {
				return nil
			}
		}
		return []string{name}
	}
}

var (
	mu      sync.Mutex
	checked = map[string]string{} // what → message, "" when nothing is missing
)

// Tools skips t, or fails it when RequireEnv is 1, unless every probe finds
// what it looks for. what says what the test needs and how to get it, e.g.
// "jq — run `make deps` (Debian/Ubuntu) or install it"; the message adds
// what is missing. Probes run once per test binary for each what.
func Tools(t testing.TB, what string, probes ...Probe) {
	t.Helper()
	msg := check(what, probes)
	if msg == "" {
		return
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (%s=1 turns this skip into a failure)", msg, RequireEnv)
		return
	}
	t.Skip("skipped: " + msg)
}

func check(what string, probes []Probe) string {
	mu.Lock()
	defer mu.Unlock()
	if msg, ok := checked[what]; ok {
		return msg
	}
	var missing []string
	for _, p := range probes {
		missing = append(missing, p()...)
	}
	msg := ""
	if len(missing) > 0 {
		msg = fmt.Sprintf("needs %s; missing here: %s", what, strings.Join(missing, ", "))
		report(msg)
	}
	checked[what] = msg
	return msg
}

// report appends the skip line to the ReportEnv file, if any. A failure to
// write only loses the summary, so it is ignored.
func report(msg string) {
	file := os.Getenv(ReportEnv)
	if file == "" || os.Getenv(RequireEnv) == "1" {
		return
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s: skipped: %s\n", packageDir(), msg)
}

// packageDir is the test's directory (where go test runs it) relative to the
// module root, or as is when no go.mod is found above it.
func packageDir() string {
	wd, err := os.Getwd()
	if err != nil {
		return "?"
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if rel, err := filepath.Rel(dir, wd); err == nil {
				return filepath.ToSlash(rel)
			}
			return wd
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return wd
		}
		dir = parent
	}
}
