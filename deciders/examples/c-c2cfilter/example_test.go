// Tests for the C example decider: they build it with its Makefile, run it as
// its own process against a real bridge on an embedded NATS server, and send
// callbacks over HTTP as Tencent would, or NATS requests as the bridge does.
package cc2cfilter_test

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/ask"
	"github.com/timbus-dev/timbus/internal/exampletest"
	"github.com/timbus-dev/timbus/internal/natstest"
	"github.com/timbus-dev/timbus/internal/needs"
)

const (
	command = "C2C.CallbackBeforeSendMsg"
	// What the decider answers, byte for byte.
	allow = `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`
	deny  = `{"ActionStatus":"OK","ErrorCode":120101,"ErrorInfo":"message blocked"}`
	// What the bridge answers on its own (default verdict allow) when the
	// decider reports an error; its member order tells it from allow.
	bridgeDefault = `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// binary builds c2cfilter with `make -C .` once per test run and returns its
// absolute path. Without the toolchain the test is skipped (needs.Tools);
// with it, a build that fails fails the test.
func binary(t *testing.T) string {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	needs.Tools(t, "a C compiler, make, pkg-config, libnats-dev and libcjson-dev — "+
		"run `make deps` (Debian/Ubuntu) or install them",
		needs.Commands(cc, "make"), needs.PkgConfig("libnats", "libcjson"))
	buildOnce.Do(func() {
		out, err := exec.Command("make", "-C", ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New("make -C . failed: " + err.Error() + "\n" + string(out))
			return
		}
		buildPath, buildErr = filepath.Abs("c2cfilter")
	})
	if buildErr != nil {
		t.Fatalf("building c2cfilter: %v", buildErr)
	}
	return buildPath
}

// startDecider runs the bridge and the decider and waits until it answers.
func startDecider(t *testing.T, env ...string) (*exampletest.Env, *exampletest.Process) {
	t.Helper()
	bin := binary(t)
	e := exampletest.Start(t, exampletest.Options{})
	p := exampletest.Run(t, append([]string{"NATS_URL=" + e.NATSURL}, env...), ".", bin)
	e.WaitForDecider(t, command, 15*time.Second)
	return e, p
}

// withBody returns Tencent's documented sample with MsgBody replaced.
func withBody(t *testing.T, msgBody any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(exampletest.Sample(t, command), &m); err != nil {
		t.Fatal(err)
	}
	m["MsgBody"] = msgBody
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// text is one TIMTextElem.
func text(s string) map[string]any {
	return map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": s}}
}

// withText is the sample with a single text element.
func withText(t *testing.T, s string) []byte {
	t.Helper()
	return withBody(t, []any{text(s)})
}

func TestC2CFilter_HTTP(t *testing.T) {
	env, p := startDecider(t)
	face := map[string]any{"MsgType": "TIMFaceElem", "MsgContent": map[string]any{"Index": 1, "Data": "casino"}}
	tests := []struct {
		name string
		body []byte
		want string
	}{
		{name: "documented sample", body: exampletest.Sample(t, command), want: allow},
		{name: "blocked word", body: withText(t, "meet me at the casino"), want: deny},
		{name: "second blocked word", body: withText(t, "lottery tickets"), want: deny},
		{name: "ASCII case folded", body: withText(t, "Win at the CaSiNo!"), want: deny},
		{name: "word inside a word", body: withText(t, "casinos"), want: deny},
		{name: "quotes backslashes UTF-8", body: withText(t, `he said "hi" \ C:\path\ 你好 🎉 `+"\ttab\nline"), want: allow},
		{name: "quotes backslashes UTF-8 blocked", body: withText(t, `"casino" \\ 赌场 🎰`), want: deny},
		{name: "blocked word after UTF-8", body: withText(t, "你好lottery"), want: deny},
		{name: "unicode escapes decoded", body: []byte(`{"CallbackCommand":"C2C.CallbackBeforeSendMsg","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"\u0063asino \"q\" \\"}}]}`), want: deny},
		{name: "blocked word in second element", body: withBody(t, []any{text("hello"), face, text("lottery")}), want: deny},
		{name: "only text elements are checked", body: withBody(t, []any{face}), want: allow},
		{name: "empty text", body: withText(t, ""), want: allow},
		// Bodies the decider cannot read: it answers with the micro error
		// headers and the bridge sends its default verdict.
		{name: "MsgBody not an array", body: withBody(t, "casino"), want: bridgeDefault},
		{name: "no MsgBody", body: []byte(`{"CallbackCommand":"C2C.CallbackBeforeSendMsg","From_Account":"jared"}`), want: bridgeDefault},
		{name: "text element without Text", body: withBody(t, []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{}}}), want: bridgeDefault},
		{name: "Text not a string", body: withBody(t, []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": 7}}}), want: bridgeDefault},
		{name: "element not an object", body: withBody(t, []any{"casino"}), want: bridgeDefault},
		{name: "U+0000 hides the rest of a string", body: []byte(`{"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"\u0000casino"}}]}`), want: bridgeDefault},
		// A blocked word wins over an unreadable sibling, which must not
		// turn a deny into the default allow.
		{name: "blocked word beside an unreadable element", body: withBody(t, []any{text("casino"), 42}), want: deny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, answer := env.Post(t, command, tt.body)
			if status != 200 || answer != tt.want {
				t.Fatalf("POST %s\n got %d %s\nwant 200 %s", tt.body, status, answer, tt.want)
			}
		})
	}
	for _, want := range []string{"decision=allow", "decision=deny code=120101", "decision=error code=400", "request_id="} {
		waitLog(t, p, want)
	}
}

func TestC2CFilter_Parallel(t *testing.T) {
	env, _ := startDecider(t)
	cases := []struct {
		body []byte
		want string
	}{
		{exampletest.Sample(t, command), allow},
		{withText(t, "casino night"), deny},
	}
	// Both subtests are released together once this function returns, and
	// the group waits for both.
	t.Run("group", func(t *testing.T) {
		for i, c := range cases {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				status, answer := env.Post(t, command, c.body)
				if status != 200 || answer != c.want {
					t.Fatalf("got %d %s, want 200 %s", status, answer, c.want)
				}
			})
		}
	})
}

// request builds the NATS request the bridge sends: the deadline and a request
// id in the reply subject. An empty deadline makes a reply subject without
// either, as `nats request` sends; "soon" one whose deadline is malformed.
func request(subject string, body []byte, deadline string) *nats.Msg {
	id := "c2c-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	reply := nats.NewInbox()
	if deadline != "" {
		reply += "." + deadline + "." + id + ".r"
	}
	return &nats.Msg{Subject: subject, Reply: reply, Data: body}
}

// idOf is the request id the decider reads from m, "-" when there is none.
func idOf(m *nats.Msg) string {
	if _, id, ok := protocol.ParseReply(m.Reply); ok {
		return id
	}
	return "-"
}

func inMs(d time.Duration) string { return strconv.FormatInt(time.Now().Add(d).UnixMilli(), 10) }

// The wire contract checked directly on NATS: the exact error headers, and no
// reply at all once the deadline has passed.
func TestC2CFilter_NATS(t *testing.T) {
	env, p := startDecider(t)
	nc, err := nats.Connect(env.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	subject := protocol.Subject(protocol.DefaultSubjectPrefix, protocol.KindDecide, exampletest.SdkAppID, command)
	sample := exampletest.Sample(t, command)

	tests := []struct {
		name      string
		body      []byte
		deadline  string
		want      string // reply payload; "" with wantError
		wantError string // Nats-Service-Error
	}{
		{name: "not JSON", body: []byte("<xml/>"), deadline: inMs(time.Second), wantError: "bad callback body"},
		{name: "empty", body: nil, deadline: inMs(time.Second), wantError: "bad callback body"},
		{name: "JSON string", body: []byte(`"casino"`), deadline: inMs(time.Second), wantError: "bad callback body"},
		{name: "JSON array", body: []byte(`[{"MsgBody":[]}]`), deadline: inMs(time.Second), wantError: "bad callback body"},
		{name: "object then garbage", body: []byte(`{"MsgBody":[]} x`), deadline: inMs(time.Second), wantError: "bad callback body"},
		{name: "truncated", body: sample[:len(sample)/2], deadline: inMs(time.Second), wantError: "bad callback body"},
		{name: "shape", body: []byte(`{"MsgBody":{}}`), deadline: inMs(time.Second), wantError: "bad callback body: MsgBody is not an array"},
		{name: "trailing whitespace", body: append(withText(t, "casino"), " \r\n\t"...), deadline: inMs(time.Second), want: deny},
		{name: "no deadline", body: sample, want: allow},
		{name: "malformed deadline answered", body: sample, deadline: "soon", want: allow},
		{name: "deadline an hour ahead", body: withText(t, "lottery"), deadline: inMs(time.Hour), want: deny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(subject, tt.body, tt.deadline)
			rep, err := ask.Request(nc, req, 2*time.Second)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			desc, code := rep.Header.Get(protocol.HeaderServiceError), rep.Header.Get(protocol.HeaderServiceErrorCode)
			if tt.wantError != "" {
				if desc != tt.wantError || code != "400" {
					t.Fatalf("error headers %q %q, want %q 400; data %q", desc, code, tt.wantError, rep.Data)
				}
			} else if desc != "" || code != "" || string(rep.Data) != tt.want {
				t.Fatalf("reply %q (error headers %q %q), want %s", rep.Data, desc, code, tt.want)
			}
			waitLog(t, p, "request_id="+idOf(req)+" ")
		})
	}

	for _, late := range []time.Duration{time.Millisecond, time.Hour} {
		t.Run("deadline passed "+late.String()+" ago", func(t *testing.T) {
			req := request(subject, withText(t, "casino"), inMs(-late))
			rep, err := ask.Request(nc, req, 300*time.Millisecond)
			if !errors.Is(err, nats.ErrTimeout) {
				t.Fatalf("got %v, %v; want nats.ErrTimeout", rep, err)
			}
			waitLog(t, p, "request_id="+idOf(req)+" app="+exampletest.SdkAppID+" decision=skip")
		})
	}
}

// waitLog waits for the decider to log want: its output reaches the test
// through a pipe, possibly after the reply.
func waitLog(t *testing.T, p *exampletest.Process, want string) {
	t.Helper()
	limit := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.Output(), want) {
		if time.Now().After(limit) {
			t.Fatalf("decider did not log %q:\n%s", want, p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitAnswer polls subject until the decider answers (it may still be
// connecting or subscribing) and returns the reply.
func waitAnswer(t *testing.T, nc *nats.Conn, subject string, body []byte) *nats.Msg {
	t.Helper()
	limit := time.Now().Add(15 * time.Second)
	for {
		rep, err := ask.Request(nc, request(subject, body, ""), time.Second)
		if err == nil {
			return rep
		}
		if time.Now().After(limit) {
			t.Fatalf("no answer on %s: %v", subject, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BLOCKED and SUBJECT_PREFIX from the environment.
func TestC2CFilter_Environment(t *testing.T) {
	bin := binary(t)
	s := natstest.Run(t)
	nc := natstest.Connect(t, s)
	p := exampletest.Run(t, []string{"NATS_URL=" + s.ClientURL(), "SUBJECT_PREFIX=acme.timbus", "BLOCKED= Spam ,, bad word,"}, ".", bin)
	subject := protocol.Subject("acme.timbus", protocol.KindDecide, "1400000002", command)

	for _, tc := range []struct{ text, want string }{
		{"buy SPAM now", deny},
		{"a Bad Word here", deny},
		{"badword", allow},
		{"casino", allow}, // the default list is replaced
	} {
		if rep := waitAnswer(t, nc, subject, withText(t, tc.text)); string(rep.Data) != tc.want {
			t.Errorf("%q: got %s, want %s", tc.text, rep.Data, tc.want)
		}
	}
	waitLog(t, p, "2 blocked word(s): spam,bad word")

	// BLOCKED set but empty blocks nothing.
	s2 := natstest.Run(t)
	nc2 := natstest.Connect(t, s2)
	exampletest.Run(t, []string{"NATS_URL=" + s2.ClientURL(), "BLOCKED="}, ".", bin)
	subject = protocol.Subject(protocol.DefaultSubjectPrefix, protocol.KindDecide, "1400000002", command)
	if rep := waitAnswer(t, nc2, subject, withText(t, "casino")); string(rep.Data) != allow {
		t.Errorf("empty BLOCKED: got %s, want %s", rep.Data, allow)
	}
}

func TestC2CFilter_BadSubjectPrefix(t *testing.T) {
	bin := binary(t)
	for _, prefix := range []string{"timbus.>", "a..b", "a b", "*"} {
		cmd := exec.Command(bin)
		cmd.Env = append(cmd.Environ(), "SUBJECT_PREFIX="+prefix, "NATS_URL=nats://127.0.0.1:1")
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "SUBJECT_PREFIX") {
			t.Errorf("SUBJECT_PREFIX=%q: %v, output %q; want exit 2 naming SUBJECT_PREFIX", prefix, err, out)
		}
	}
}

// make run may start the decider before NATS is up: it must keep trying and
// serve once the server appears.
func TestC2CFilter_StartsBeforeNATS(t *testing.T) {
	bin := binary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	p := exampletest.Run(t, []string{"NATS_URL=nats://127.0.0.1:" + strconv.Itoa(port)}, ".", bin)
	time.Sleep(300 * time.Millisecond)
	if p.Exited() {
		t.Fatalf("decider exited without NATS:\n%s", p.Output())
	}
	opts := natstest.Options()
	opts.Port = port
	s := natstest.RunWith(t, opts)
	nc := natstest.Connect(t, s)
	subject := protocol.Subject(protocol.DefaultSubjectPrefix, protocol.KindDecide, exampletest.SdkAppID, command)
	if rep := waitAnswer(t, nc, subject, withText(t, "casino")); string(rep.Data) != deny {
		t.Fatalf("got %s, want %s", rep.Data, deny)
	}
	waitLog(t, p, "connected to NATS")
}

// SIGTERM drains and exits 0; afterwards nobody answers the subject.
func TestC2CFilter_StopsOnSIGTERM(t *testing.T) {
	bin := binary(t)
	s := natstest.Run(t)
	nc := natstest.Connect(t, s)
	var out strings.Builder
	cmd := exec.Command(bin)
	cmd.Env = append(cmd.Environ(), "NATS_URL="+s.ClientURL())
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	subject := protocol.Subject(protocol.DefaultSubjectPrefix, protocol.KindDecide, exampletest.SdkAppID, command)
	waitAnswer(t, nc, subject, exampletest.Sample(t, command))

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, &out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after SIGTERM")
	}
	if !strings.Contains(out.String(), "stopping on SIGTERM") || !strings.Contains(out.String(), "stopped") {
		t.Fatalf("no stop lines in:\n%s", &out)
	}
	if _, err := ask.Request(nc, request(subject, exampletest.Sample(t, command), ""), time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request after stop: %v, want nats.ErrNoResponders", err)
	}
}

// The conformance kit passes against the decider.
func TestC2CFilter_Conforms(t *testing.T) {
	e, _ := startDecider(t)
	e.Conform(t, command)
}
