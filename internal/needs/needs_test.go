package needs

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Run as pkg-config (through a symlink of that name), the test binary knows
// exactly one package, libpresent: the tests need no real pkg-config.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "pkg-config" {
		if len(os.Args) == 3 && os.Args[1] == "--exists" && os.Args[2] == "libpresent" {
			os.Exit(0)
		}
		os.Exit(1)
	}
	// Under make test, the skips these tests provoke are not the repository's.
	os.Unsetenv(ReportEnv)
	os.Exit(m.Run())
}

// fakeBin returns a directory holding an executable "present", a
// non-executable "plain", and pkg-config (this test binary).
func fakeBin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "present"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plain"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(dir, "pkg-config")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestProbes(t *testing.T) {
	dir := fakeBin(t)
	t.Setenv("PATH", dir)
	t.Setenv("PKG_CONFIG", "")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		probe Probe
		want  []string
	}{
		{"commands all found", Commands("present", "pkg-config"), nil},
		{"commands some missing", Commands("gcc", "present", "node"), []string{"gcc", "node"}},
		{"commands not executable", Commands("plain"), []string{"plain"}},
		{"executable", Executable("tool", filepath.Join(dir, "present")), nil},
		{"executable not executable", Executable("tool", filepath.Join(dir, "plain")), []string{"tool"}},
		{"executable a directory", Executable("tool", dir), []string{"tool"}},
		{"executable missing", Executable("tool", filepath.Join(dir, "nope")), []string{"tool"}},
		{"file", File("data", filepath.Join(dir, "plain")), nil},
		{"file missing", File("node_modules", filepath.Join(dir, "node_modules")), []string{"node_modules"}},
		{"runs", Runs("self", self, "-test.run=^$"), nil},
		{"runs but fails", Runs("self", self, "-test.no-such-flag"), []string{"self"}},
		{"runs not found", Runs("node 20", "node", "--version"), []string{"node 20"}},
		{"pkg-config finds", PkgConfig("libpresent"), nil},
		{"pkg-config lacks some", PkgConfig("libnats", "libpresent", "libcjson"), []string{"libnats (pkg-config)", "libcjson (pkg-config)"}},
		{"any of, second found", AnyOf("nats CLI", Executable("bin/nats", filepath.Join(dir, "nats")), Commands("present")), nil},
		{"any of, none found", AnyOf("nats CLI", Executable("bin/nats", filepath.Join(dir, "nats")), Commands("nats")), []string{"nats CLI"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.probe(); !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPkgConfigMissing(t *testing.T) {
	t.Setenv("PATH", fakeBin(t))
	t.Setenv("PKG_CONFIG", "")
	t.Run("no pkg-config", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		if got := PkgConfig("libnats", "libcjson")(); !slices.Equal(got, []string{"pkg-config"}) {
			t.Fatalf("got %q, want only pkg-config", got)
		}
	})
	t.Run("PKG_CONFIG names another tool", func(t *testing.T) {
		t.Setenv("PKG_CONFIG", "pkgconf")
		if got := PkgConfig("libpresent")(); !slices.Equal(got, []string{"pkgconf"}) {
			t.Fatalf("got %q, want pkgconf", got)
		}
	})
}

// recorder stands in for the test Tools is given, to see what it does; Tools
// calls nothing else of it.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Skip(args ...any)          { r.skipped = fmt.Sprint(args...) }
func (r *recorder) Fatalf(f string, a ...any) { r.failed = fmt.Sprintf(f, a...) }

func TestTools(t *testing.T) {
	t.Setenv("PATH", fakeBin(t))
	t.Setenv("PKG_CONFIG", "")
	const what = "a C compiler and libnats-dev — run `make deps` (Debian/Ubuntu) or install them"
	tests := []struct {
		name        string
		require     string
		probes      []Probe
		wantSkip    string
		wantFailure string
	}{
		{name: "all there", probes: []Probe{Commands("present"), PkgConfig("libpresent")}},
		{name: "all there, required", require: "1", probes: []Probe{Commands("present")}},
		{
			name:     "missing skips",
			probes:   []Probe{Commands("cc", "present"), PkgConfig("libnats")},
			wantSkip: "skipped: needs " + what + "; missing here: cc, libnats (pkg-config)",
		},
		{
			name:     "any other value of the variable skips",
			require:  "true",
			probes:   []Probe{Commands("cc")},
			wantSkip: "skipped: needs " + what + "; missing here: cc",
		},
		{
			name:        "missing fails when required",
			require:     "1",
			probes:      []Probe{Commands("cc", "present"), PkgConfig("libnats")},
			wantFailure: "needs " + what + "; missing here: cc, libnats (pkg-config) (TIMBUS_REQUIRE_EXAMPLES=1 turns this skip into a failure)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(RequireEnv, tt.require)
			forget(t)
			r := &recorder{}
			Tools(r, what, tt.probes...)
			if r.skipped != tt.wantSkip || r.failed != tt.wantFailure {
				t.Fatalf("skipped %q, failed %q\nwant skipped %q, failed %q", r.skipped, r.failed, tt.wantSkip, tt.wantFailure)
			}
			if strings.Contains(r.skipped+r.failed, "\n") {
				t.Fatal("the message is more than one line")
			}
		})
	}
}

// forget clears what earlier checks found, for the test and after it.
func forget(t *testing.T) {
	clear := func() {
		mu.Lock()
		defer mu.Unlock()
		checked = map[string]string{}
	}
	clear()
	t.Cleanup(clear)
}

// Probes run once per what, however many tests ask.
func TestToolsProbesOnce(t *testing.T) {
	forget(t)
	t.Setenv(RequireEnv, "")
	calls := 0
	probe := func() []string { calls++; return []string{"jq"} }
	for range 3 {
		r := &recorder{}
		Tools(r, "jq", probe)
		if r.skipped == "" {
			t.Fatal("not skipped")
		}
	}
	if calls != 1 {
		t.Fatalf("probe ran %d times, want 1", calls)
	}
}

// With ReportEnv set, each skip line is appended once to the file, naming
// the package directory; when skips are failures, there is nothing to report.
func TestToolsReport(t *testing.T) {
	for _, require := range []string{"", "1"} {
		t.Run("require="+require, func(t *testing.T) {
			forget(t)
			file := filepath.Join(t.TempDir(), "skipped")
			t.Setenv(ReportEnv, file)
			t.Setenv(RequireEnv, require)
			for range 2 {
				Tools(&recorder{}, "wrk — install it", func() []string { return []string{"wrk"} })
			}
			Tools(&recorder{}, "jq — install it", func() []string { return nil })
			got, err := os.ReadFile(file)
			want := "internal/needs: skipped: needs wrk — install it; missing here: wrk\n"
			if require == "1" {
				if !os.IsNotExist(err) {
					t.Fatalf("report %q (%v), want none", got, err)
				}
				return
			}
			if err != nil || string(got) != want {
				t.Fatalf("report %q (%v), want %q", got, err, want)
			}
		})
	}
}
