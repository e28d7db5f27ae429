package shellcreategroup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/timbus-dev/timbus/internal/exampletest"
	"github.com/timbus-dev/timbus/internal/needs"
)

const command = "Group.CallbackBeforeCreateGroup"

// The answers handler.sh gives, byte for byte.
const (
	allow = `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`
	deny  = `{"ActionStatus":"OK","ErrorCode":10150,"ErrorInfo":"group name not allowed"}`
)

// The tests give the command a default verdict of their own, so that an
// answer the bridge made up can never pass for the decider's allow.
var (
	bridgeDefault       = "10199:timbus default"
	bridgeDefaultAnswer = `{"ActionStatus":"OK","ErrorInfo":"timbus default","ErrorCode":10199}`
)

// markerKey is set, with a value unique to the test, in the decider's
// environment; every process it starts inherits it, which is how the tests
// find the decider's processes, orphans included.
const markerKey = "TIMBUS_SHELL_CREATEGROUP_TEST"

func TestDecider(t *testing.T) {
	bin := requireTools(t)
	// The script's defaults are under test: none of its settings may leak in
	// from the environment running the tests.
	unsetenv(t, "BLOCKED", "SUBJECT_PREFIX", "NATS_CONTEXT")

	logs := &lineBuffer{}
	env := exampletest.Start(t, exampletest.Options{CommandDefaults: map[string]string{command: bridgeDefault}, Logs: logs})
	p, marker := runDecider(t, env, bin)
	env.WaitForDecider(t, command, 15*time.Second)
	// Tencent's sample passes the conformance kit.
	env.Conform(t, command)

	// One process, and it is nats itself: decider.sh has exec'd it.
	var pid int
	if runtime.GOOS == "linux" {
		procs := markedProcesses(t, marker)
		if len(procs) != 1 || procs[0].comm != "nats" || procs[0].ppid != os.Getpid() {
			t.Fatalf("decider processes %v, want exactly one, nats, started by the test (does decider.sh exec nats?)", procs)
		}
		pid = procs[0].pid
	}

	sample := exampletest.Sample(t, command)
	// Not under t.TempDir(), whose path holds "Test" and so the blocked word.
	scratch, err := os.MkdirTemp("", "shell-creategroup-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(scratch) })
	pwned := filepath.Join(scratch, "pwned")
	metaWant := allow // unless $TMPDIR holds the blocked word
	if strings.Contains(strings.ToLower(pwned), "test") {
		metaWant = deny
	}
	tests := []struct {
		name    string
		body    []byte
		want    string
		outcome string
	}{
		{"documented sample, MyFirstGroup", sample, allow, "decided"},
		{"blocked word", withName(t, sample, "test"), deny, "decided"},
		{"blocked word inside, any case", withName(t, sample, "My TESTing group"), deny, "decided"},
		{"blocked word behind a JSON escape", []byte(`{"CallbackCommand":"Group.CallbackBeforeCreateGroup","Name":"\u0054est"}`), deny, "decided"},
		{"quotes, backslash and UTF-8", withName(t, sample, `他说 "hi" \ 'ok' ☃ 群组`), allow, "decided"},
		{"quotes and UTF-8 around the blocked word", withName(t, sample, `“测试” "TEST" 群`), deny, "decided"},
		{"shell metacharacters", withName(t, sample, "$(touch "+pwned+") `touch "+pwned+"`; {{.Request}} | & *"), metaWant, "decided"},
		{"empty name", withName(t, sample, ""), allow, "decided"},
		// Bodies the handler cannot read: it says so in a line that is not a
		// Tencent reply, and the bridge answers its default verdict.
		{"Name a number", withName(t, sample, 42), bridgeDefaultAnswer, "invalid_reply"},
		{"Name null", withName(t, sample, nil), bridgeDefaultAnswer, "invalid_reply"},
		{"Name an object", withName(t, sample, map[string]string{"Name": "test"}), bridgeDefaultAnswer, "invalid_reply"},
		{"no Name", []byte(`{"CallbackCommand":"Group.CallbackBeforeCreateGroup","Type":"Public"}`), bridgeDefaultAnswer, "invalid_reply"},
		{"empty object", []byte(`{}`), bridgeDefaultAnswer, "invalid_reply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			post(t, env, logs, tt.body, tt.want, tt.outcome)
		})
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Errorf("a group name ran a shell command: %s exists", pwned)
	}

	// Stop the decider as exampletest and most service managers do, with
	// SIGTERM to its main process only: as that is nats, nothing of the
	// decider may survive it. (Sent here rather than by p.Stop, which would
	// hang on a surviving child holding the output pipe.)
	if runtime.GOOS != "linux" {
		p.Stop(5 * time.Second)
		return
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM to the decider: %v", err)
	}
	for deadline := time.Now().Add(3 * time.Second); !p.Exited(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("decider still running 3s after SIGTERM; processes: %v", markedProcesses(t, marker))
		}
	}
	requireNoProcesses(t, marker)
}

// natscli passes the body to the handler in an environment variable, and
// Linux caps one at 128 KiB: above that nats cannot start the handler and
// replies nothing, and the bridge answers its default verdict. (A test of its
// own, as the decider's output, shown on failure, holds the whole body.)
func TestDecider_BodyOverEnvLimit(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the 128 KiB limit on one environment variable is Linux's")
	}
	bin := requireTools(t)
	unsetenv(t, "BLOCKED", "SUBJECT_PREFIX", "NATS_CONTEXT")
	logs := &lineBuffer{}
	env := exampletest.Start(t, exampletest.Options{CommandDefaults: map[string]string{command: bridgeDefault}, Logs: logs})
	runDecider(t, env, bin)
	env.WaitForDecider(t, command, 15*time.Second)

	sample := exampletest.Sample(t, command)
	post(t, env, logs, withName(t, sample, "test"+strings.Repeat("x", 200<<10)), bridgeDefaultAnswer, "invalid_reply")
	// Just under the limit, the handler still runs.
	post(t, env, logs, withName(t, sample, "test"+strings.Repeat("x", 100<<10)), deny, "decided")
}

// BLOCKED and SUBJECT_PREFIX change what the decider refuses and where it
// listens.
func TestDecider_Settings(t *testing.T) {
	bin := requireTools(t)
	unsetenv(t, "NATS_CONTEXT")
	env := exampletest.Start(t, exampletest.Options{SubjectPrefix: "acme.timbus", CommandDefaults: map[string]string{command: bridgeDefault}})
	runDecider(t, env, bin, "SUBJECT_PREFIX=acme.timbus", "BLOCKED=spam, 赌博  casino")

	// exampletest.WaitForDecider knows only the default prefix: post until
	// the decider, not the bridge's default, answers.
	sample := exampletest.Sample(t, command)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, answer := env.Post(t, command, sample); answer == allow {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no decider answer on the acme.timbus prefix after 15s; last answer %s", answer)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for name, want := range map[string]string{
		"test group":    allow, // "test" is blocked only by default
		"Cheap SPAM":    deny,
		"线上赌博群":         deny,
		"CASINO royale": deny,
		"casin o":       allow,
	} {
		if _, answer := env.Post(t, command, withName(t, sample, name)); answer != want {
			t.Errorf("Name %q: got %s, want %s", name, answer, want)
		}
	}
}

// Without the nats CLI, decider.sh stops at once and says how to get it.
func TestDecider_NoNATSCLI(t *testing.T) {
	requireTools(t)
	// A copy of the example in a tree with no bin/nats, run with a PATH
	// holding only what the script needs before it looks for nats.
	root := t.TempDir()
	dir := filepath.Join(root, "deciders", "examples", "shell-creategroup")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"decider.sh", "handler.sh"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(root, "path")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"dirname", "jq"} {
		at, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		if err := os.Symlink(at, filepath.Join(path, tool)); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "decider.sh"))
	cmd.Env = []string{"PATH=" + path, "NATS_URL=nats://127.0.0.1:1"}
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 127 {
		t.Fatalf("decider.sh without nats: %v, want exit status 127; output:\n%s", err, out)
	}
	if want := "go install github.com/nats-io/natscli/nats@v0.5.0"; !bytes.Contains(out, []byte(want)) {
		t.Fatalf("decider.sh without nats said\n%s\nwant it to mention %q", out, want)
	}
}

// post sends body and checks the answer and how the bridge came to it.
func post(t *testing.T, env *exampletest.Env, logs *lineBuffer, body []byte, want, outcome string) {
	t.Helper()
	before := logs.callbacks(t)
	status, answer := env.Post(t, command, body)
	if status != 200 || answer != want {
		t.Fatalf("POST %s\n got %d %s\nwant 200 %s", truncate(body), status, answer, want)
	}
	after := logs.callbacks(t)
	if len(after) != len(before)+1 {
		t.Fatalf("bridge logged %d callbacks for one POST", len(after)-len(before))
	}
	if got := after[len(after)-1]; got.Outcome != outcome {
		t.Fatalf("bridge outcome %q (reason %q), want %q", got.Outcome, got.Reason, outcome)
	}
}

// requireTools returns the repository's bin directory, after checking that
// the tools the example needs are installed; without them the test is
// skipped (needs.Tools).
func requireTools(t *testing.T) string {
	t.Helper()
	bin, err := filepath.Abs(filepath.Join("..", "..", "..", "bin"))
	if err != nil {
		t.Fatal(err)
	}
	needs.Tools(t, "the nats CLI (bin/nats from `make deps`, or nats on PATH) and jq — "+
		"run `make deps` (Debian/Ubuntu) or install them",
		needs.AnyOf("nats CLI", needs.Executable("bin/nats", filepath.Join(bin, "nats")), needs.Commands("nats")),
		needs.Commands("jq", "sh", "dirname"))
	return bin
}

// runDecider starts decider.sh against env with the repository's bin first
// on PATH and the extra variables vars. It returns the process and the marker
// in the environment of all its processes.
func runDecider(t *testing.T, env *exampletest.Env, bin string, vars ...string) (*exampletest.Process, string) {
	t.Helper()
	marker := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	vars = append([]string{
		"NATS_URL=" + env.NATSURL,
		"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"),
		// No nats CLI context of the user's may add credentials or servers.
		"XDG_CONFIG_HOME=" + t.TempDir(),
		markerKey + "=" + marker,
	}, vars...)
	p := exampletest.Run(t, vars, ".", "./decider.sh")
	// If decider.sh did not exec nats, a nats outliving the script would
	// hold the output pipe open and exampletest would wait for it forever:
	// end every process of the decider before exampletest stops it.
	t.Cleanup(func() { killProcesses(t, marker) })
	return p, marker
}

// unsetenv removes keys from the environment for the rest of the test.
func unsetenv(t *testing.T, keys ...string) {
	for _, k := range keys {
		t.Setenv(k, "") // restores the old value when the test ends
		os.Unsetenv(k)
	}
}

// withName returns the JSON object body with its Name set to name.
func withName(t *testing.T, body []byte, name any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	m["Name"] = name
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

type process struct {
	pid, ppid int
	comm      string
}

func (p process) String() string {
	return fmt.Sprintf("pid %d (%s, parent %d)", p.pid, p.comm, p.ppid)
}

// markedProcesses lists the live processes whose environment holds marker.
// It reads /proc, so Linux only.
func markedProcesses(t *testing.T, marker string) []process {
	t.Helper()
	want := []byte(markerKey + "=" + marker + "\x00")
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var found []process
	for _, dir := range dirs {
		environ, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err != nil || !bytes.Contains(environ, want) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// "pid (comm) state ppid …"; comm may itself hold ") ".
		i := bytes.LastIndex(stat, []byte(") "))
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+2:]))
		if len(fields) < 2 || fields[0] == "Z" {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(dir))
		ppid, _ := strconv.Atoi(fields[1])
		comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
		found = append(found, process{pid: pid, ppid: ppid, comm: strings.TrimSpace(string(comm))})
	}
	return found
}

// requireNoProcesses fails the test if processes with marker are still
// alive shortly after the decider stopped.
func requireNoProcesses(t *testing.T, marker string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Log("no /proc: orphans not checked")
		return
	}
	deadline := time.Now().Add(time.Second)
	for {
		left := markedProcesses(t, marker)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes of the stopped decider still running: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killProcesses kills what is left of the decider; only processes this test
// started carry its marker.
func killProcesses(t *testing.T, marker string) {
	for _, p := range markedProcesses(t, marker) {
		if proc, err := os.FindProcess(p.pid); err == nil {
			_ = proc.Kill()
		}
	}
}

// lineBuffer collects the bridge's JSON log lines.
type lineBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lineBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

type callbackLine struct {
	Message string `json:"message"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason"`
}

// callbacks returns the bridge's "callback" log lines so far.
func (l *lineBuffer) callbacks(t *testing.T) []callbackLine {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []callbackLine
	for line := range bytes.Lines(l.b.Bytes()) {
		var c callbackLine
		if err := json.Unmarshal(line, &c); err != nil {
			t.Fatalf("bridge log line %q: %v", line, err)
		}
		if c.Message == "callback" {
			out = append(out, c)
		}
	}
	return out
}
