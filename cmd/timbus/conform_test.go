package main

import (
	"cmp"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/timbus-dev/timbus/deciders/catalog"
	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/natstest"
	"github.com/timbus-dev/timbus/internal/samples"
)

const createOA = "OfficialAccount.CallbackBeforeCreateOfficialAccount"

// allowReply is valid for every command Tencent waits on.
const allowReply = `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`

// tableRow is one row of the table, split into its five cells.
type tableRow struct{ command, result, code, latency, detail string }

// parseConformTable splits conform's table output into rows by command, and
// returns the lines after the table.
func parseConformTable(t *testing.T, out string) (rows map[string]tableRow, order []string, tail []string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if got := cellSep.Split(lines[0], -1); strings.Join(got, "|") != "COMMAND|RESULT|CODE|LATENCY|DETAIL" {
		t.Fatalf("header = %q\n%s", got, out)
	}
	rows = map[string]tableRow{}
	for i, line := range lines[1:] {
		if line == "" {
			return rows, order, lines[i+2:]
		}
		// DETAIL is last and may hold two spaces in a row: split off the
		// first four cells only.
		cells := cellSep.Split(strings.TrimSpace(line), 5)
		if len(cells) != 5 {
			t.Fatalf("row %q has %d cells, want 5", line, len(cells))
		}
		rows[cells[0]] = tableRow{cells[0], cells[1], cells[2], cells[3], cells[4]}
		order = append(order, cells[0])
	}
	t.Fatalf("no blank line after the table:\n%s", out)
	return nil, nil, nil
}

// decide subscribes a decider in a queue group, as PROTOCOL.md asks.
func decide(t *testing.T, nc *nats.Conn, subject string, handle func(*nats.Msg)) {
	t.Helper()
	if _, err := nc.QueueSubscribe(subject, "conform-test", handle); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func respond(t *testing.T, m *nats.Msg, reply string) {
	if err := m.Respond([]byte(reply)); err != nil {
		t.Error(err)
	}
}

func TestConformGoodDecider(t *testing.T) {
	clearEnv(t)
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	sample, _ := samples.Request(createOA)
	deny := `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"name reserved"}`

	var mu sync.Mutex
	var got []*nats.Msg
	decide(t, nc, "acme.im.decide.1400000042."+createOA, func(m *nats.Msg) {
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
		respond(t, m, deny)
	})

	before := time.Now()
	code, stdout, stderr := runTimbus(t, context.Background(), "conform", "--nats-url", ns.ClientURL(),
		"--sdkappid", "1400000042", "--subject-prefix", "acme.im", "--command", createOA)
	if code != exitOK {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitOK, stdout, stderr)
	}
	rows, order, tail := parseConformTable(t, stdout)
	if len(order) != 1 {
		t.Errorf("rows for %q, want only %s", order, createOA)
	}
	r := rows[createOA]
	// The reply is cut to 60 characters.
	if r.result != "PASS" || r.code != "120005" || r.detail != deny[:59]+"…" || !strings.HasSuffix(r.latency, "ms") {
		t.Errorf("row = %+v, want PASS, code 120005, the reply's start as detail", r)
	}
	if strings.Join(tail, "\n") != "1 passed, 0 failed, 0 skipped" {
		t.Errorf("after the table:\n%s", strings.Join(tail, "\n"))
	}

	// The decider got what the bridge would have sent.
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("decider got %d requests, want 1", len(got))
	}
	m := got[0]
	if string(m.Data) != string(sample) {
		t.Errorf("payload = %s, want the documented sample %s", m.Data, sample)
	}
	req := protocol.ParseRequest(m.Subject, m.Reply, m.Header)
	want := protocol.Request{RequestID: "conform-1", SdkAppID: "1400000042", Command: createOA}
	if req.Deadline.Before(before.Add(1400*time.Millisecond)) || req.Deadline.After(time.Now().Add(1500*time.Millisecond)) {
		t.Errorf("deadline %v is not the default 1.5s after the request", req.Deadline)
	}
	req.Deadline = time.Time{}
	if req != want {
		t.Errorf("request headers = %+v, want %+v", req, want)
	}
}

func TestConformFailures(t *testing.T) {
	tests := []struct {
		name    string
		command string
		decider func(t *testing.T, nc *nats.Conn, subject string) // nil: no decider
		want    string                                            // the row's DETAIL
		silent  bool                                              // no decider answered
		// timeout is conform's --timeout: long enough for a loaded machine,
		// unless the case is about a late reply.
		timeout string
	}{
		{
			name: "garbage", command: createOA,
			decider: func(t *testing.T, nc *nats.Conn, subject string) {
				decide(t, nc, subject, func(m *nats.Msg) { respond(t, m, "not json") })
			},
			want: "invalid reply: not valid JSON",
		},
		{
			name: "too late", command: createOA,
			decider: func(t *testing.T, nc *nats.Conn, subject string) {
				decide(t, nc, subject, func(m *nats.Msg) {
					time.Sleep(400 * time.Millisecond)
					_ = m.Respond([]byte(allowReply))
				})
			},
			want:    "no reply within 200ms",
			silent:  true,
			timeout: "200ms",
		},
		{
			name: "code of another command", command: createOA,
			decider: func(t *testing.T, nc *nats.Conn, subject string) {
				decide(t, nc, subject, func(m *nats.Msg) {
					respond(t, m, `{"ActionStatus":"OK","ErrorCode":10100,"ErrorInfo":"group rule"}`)
				})
			},
			want: "invalid reply: ErrorCode 10100 is not valid for this command (valid: 0, 1, 120001-130000)",
		},
		{
			name: "field of another command", command: "Group.CallbackBeforeCreateGroup",
			decider: func(t *testing.T, nc *nats.Conn, subject string) {
				decide(t, nc, subject, func(m *nats.Msg) {
					respond(t, m, `{"ActionStatus":"OK","ErrorCode":0,"MsgBody":[]}`)
				})
			},
			want: `invalid reply: "MsgBody" is not a reply field of this command (allowed: [])`,
		},
		{
			name: "decider error", command: createOA,
			decider: func(t *testing.T, nc *nats.Conn, subject string) {
				// A real NATS services decider, as PROTOCOL.md suggests.
				svc, err := micro.AddService(nc, micro.Config{
					Name: "names", Version: "0.0.1",
					Endpoint: &micro.EndpointConfig{
						Subject: subject,
						Handler: micro.HandlerFunc(func(r micro.Request) {
							_ = r.Error("503", "database unavailable", nil)
						}),
					},
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = svc.Stop() })
				// The server must have the subscription before conform asks.
				if err := nc.Flush(); err != nil {
					t.Fatal(err)
				}
			},
			want: "decider reported an error: 503 database unavailable",
		},
		{
			name: "no decider", command: createOA,
			want:   "no decider listening",
			silent: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			ns := natstest.Run(t)
			nc := natstest.Connect(t, ns)
			if tt.decider != nil {
				tt.decider(t, nc, protocol.Subject("timbus", "decide", "1400000001", tt.command))
			}
			timeout := cmp.Or(tt.timeout, "1500ms")
			code, stdout, stderr := runTimbus(t, context.Background(), "conform",
				"--nats-url", ns.ClientURL(), "--timeout", timeout, "--command", tt.command)
			if code != exitFailure {
				t.Errorf("exit code %d, want %d; stderr %q", code, exitFailure, stderr)
			}
			rows, _, tail := parseConformTable(t, stdout)
			r := rows[tt.command]
			if r.result != "FAIL" || r.code != "-" || r.detail != tt.want {
				t.Errorf("row = %+v, want FAIL, no code, detail %q", r, tt.want)
			}
			if tail[0] != "0 passed, 1 failed, 0 skipped" {
				t.Errorf("summary = %q", tail[0])
			}
			silent := len(tail) == 2 && strings.HasPrefix(tail[1], "No decider answered any command.") &&
				strings.Contains(tail[1], "subjects under timbus.decide.1400000001 ")
			if silent != tt.silent || len(tail) > 2 {
				t.Errorf("after the table:\n%s\nwant the no-decider hint: %v", strings.Join(tail, "\n"), tt.silent)
			}
		})
	}
}

// beforeCommands splits the commands Tencent waits on by whether Tencent
// documents a sample body for them.
func beforeCommands(t *testing.T) (sampled, unsampled []string) {
	t.Helper()
	for _, c := range catalog.All() {
		if !c.Kind.NeedsReply() {
			continue
		}
		if _, ok := samples.Request(c.Name); ok {
			sampled = append(sampled, c.Name)
		} else {
			unsampled = append(unsampled, c.Name)
		}
	}
	if len(sampled) == 0 || len(unsampled) == 0 {
		t.Fatalf("catalog has %d sampled and %d unsampled before commands; the test needs both", len(sampled), len(unsampled))
	}
	return sampled, unsampled
}

func TestConformDefaultCommands(t *testing.T) {
	clearEnv(t)
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	var mu sync.Mutex
	asked := map[string]int{}
	decide(t, nc, "timbus.decide.>", func(m *nats.Msg) {
		mu.Lock()
		_, _, command, _ := protocol.ParseSubject(m.Subject)
		asked[command]++
		mu.Unlock()
		respond(t, m, allowReply)
	})
	sampled, unsampled := beforeCommands(t)

	// The URL from the environment, as timbus serve takes it.
	t.Setenv(envName("nats-url"), ns.ClientURL())
	code, stdout, stderr := runTimbus(t, context.Background(), "conform")
	if code != exitOK {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	rows, order, tail := parseConformTable(t, stdout)
	if len(order) != len(sampled)+len(unsampled) {
		t.Errorf("%d rows, want one per before command (%d)", len(order), len(sampled)+len(unsampled))
	}
	for _, name := range sampled {
		if r := rows[name]; r.result != "PASS" || r.code != "0" || r.detail != allowReply {
			t.Errorf("%s: row %+v, want PASS", name, r)
		}
		if asked[name] != 1 {
			t.Errorf("%s: decider asked %d times, want 1", name, asked[name])
		}
	}
	for _, name := range unsampled {
		if r := rows[name]; r.result != "SKIP" || r.code != "-" || r.latency != "-" || r.detail != "no documented sample" {
			t.Errorf("%s: row %+v, want SKIP", name, r)
		}
		if asked[name] != 0 {
			t.Errorf("%s: skipped but sent", name)
		}
	}
	want := strconv.Itoa(len(sampled)) + " passed, 0 failed, " + strconv.Itoa(len(unsampled)) + " skipped"
	if strings.Join(tail, "\n") != want {
		t.Errorf("after the table:\n%s\nwant %q", strings.Join(tail, "\n"), want)
	}
}

func TestConformUnsampledCommandNamed(t *testing.T) {
	clearEnv(t)
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	_, unsampled := beforeCommands(t)
	name := unsampled[0]
	var mu sync.Mutex
	var body string
	decide(t, nc, "timbus.decide.1400000001."+name, func(m *nats.Msg) {
		mu.Lock()
		body = string(m.Data)
		mu.Unlock()
		respond(t, m, allowReply)
	})

	code, stdout, stderr := runTimbus(t, context.Background(), "conform", "--nats-url", ns.ClientURL(), "--command", name)
	if code != exitOK {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	minimal := `{"CallbackCommand":"` + name + `"}`
	mu.Lock()
	if body != minimal {
		t.Errorf("decider got %s, want %s", body, minimal)
	}
	mu.Unlock()
	rows, _, tail := parseConformTable(t, stdout)
	if r := rows[name]; r.result != "PASS" {
		t.Errorf("row %+v, want PASS", r)
	}
	if len(tail) != 2 || !strings.Contains(tail[0], name+" has no documented sample") || !strings.Contains(tail[0], minimal) {
		t.Errorf("after the table:\n%s\nwant a note on the minimal body", strings.Join(tail, "\n"))
	}
}

func TestConformCommandList(t *testing.T) {
	clearEnv(t)
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	decide(t, nc, "timbus.decide.>", func(m *nats.Msg) { respond(t, m, allowReply) })

	// Repeated and comma-separated, in the order given, each once.
	code, stdout, stderr := runTimbus(t, context.Background(), "conform", "--nats-url", ns.ClientURL(),
		"--command", "Group.CallbackBeforeSendMsg, C2C.CallbackBeforeSendMsg", "--command", "Group.CallbackBeforeSendMsg",
		"--command", "Sns.CallbackPrevFriendResponse")
	if code != exitOK {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	_, order, _ := parseConformTable(t, stdout)
	if got := strings.Join(order, " "); got != "Group.CallbackBeforeSendMsg C2C.CallbackBeforeSendMsg Sns.CallbackPrevFriendResponse" {
		t.Errorf("rows = %s", got)
	}
}

func TestConformJSON(t *testing.T) {
	clearEnv(t)
	ns := natstest.Run(t)
	nc := natstest.Connect(t, ns)
	decide(t, nc, "timbus.decide.*."+createOA, func(m *nats.Msg) { respond(t, m, "{\n  \"ActionStatus\": \"OK\",\n  \"ErrorCode\": 1\n}") })
	sampled, unsampled := beforeCommands(t)

	code, stdout, stderr := runTimbus(t, context.Background(), "conform", "--nats-url", ns.ClientURL(), "--json", "--timeout", "300ms")
	if code != exitFailure {
		t.Errorf("exit code %d, want %d (only one command has a decider)", code, exitFailure)
	}
	var rows []struct {
		Command   string
		Result    string
		Code      *int
		LatencyMS *float64 `json:"latency_ms"`
		Reason    string
		Reply     *string
		Body      string
		Subject   string
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal([]byte(stdout), &rows); err != nil {
		t.Fatalf("stdout is not a JSON array: %v\n%s", err, stdout)
	}
	if len(rows) != len(sampled)+len(unsampled) {
		t.Errorf("%d rows, want %d", len(rows), len(sampled)+len(unsampled))
	}
	counts := map[string]int{}
	for _, r := range rows {
		counts[r.Result]++
		switch {
		case r.Command == createOA:
			if r.Result != "PASS" || r.Code == nil || *r.Code != 1 || r.LatencyMS == nil || r.Reply == nil ||
				!strings.Contains(*r.Reply, "\n") || r.Body != "sample" || r.Reason != "" ||
				r.Subject != "timbus.decide.1400000001."+createOA || !strings.HasPrefix(r.RequestID, "conform-") {
				t.Errorf("wrong row: %+v", r)
			}
		case r.Result == "FAIL":
			if r.Reason != "no decider listening" || r.Code != nil || r.LatencyMS == nil || r.Reply != nil {
				t.Errorf("wrong row: %+v", r)
			}
		case r.Result == "SKIP":
			if r.Reason != "no documented sample" || r.Code != nil || r.LatencyMS != nil || r.Body != "" || r.RequestID != "" {
				t.Errorf("wrong row: %+v", r)
			}
		default:
			t.Errorf("wrong row: %+v", r)
		}
	}
	if counts["PASS"] != 1 || counts["FAIL"] != len(sampled)-1 || counts["SKIP"] != len(unsampled) {
		t.Errorf("results %v", counts)
	}
	// The summary goes to stderr, keeping stdout pure JSON.
	want := "1 passed, " + strconv.Itoa(len(sampled)-1) + " failed, " + strconv.Itoa(len(unsampled)) + " skipped\n"
	if stderr != want {
		t.Errorf("stderr = %q, want %q", stderr, want)
	}
}

func TestConformNATSUnreachable(t *testing.T) {
	clearEnv(t)
	ns := natstest.Run(t)
	url := ns.ClientURL()
	ns.Shutdown()
	ns.WaitForShutdown()
	code, stdout, stderr := runTimbus(t, context.Background(), "conform", "--nats-url", url)
	if code != exitFailure || stdout != "" || !strings.Contains(stderr, "cannot connect to NATS at "+url) {
		t.Errorf("exit code %d, stdout %q, stderr %q; want %d and the connection error", code, stdout, stderr, exitFailure)
	}
}

func TestConformRefusesBadInput(t *testing.T) {
	url := "nats://127.0.0.1:1" // never dialled: the arguments are checked first
	tests := []struct {
		args []string
		want string
	}{
		{nil, "--nats-url is required"},
		{[]string{"--nats-url", url, "--timeout", "2s"}, "--timeout 2s"},
		{[]string{"--nats-url", url, "--timeout", "5s"}, "under Tencent's own 2s deadline"},
		{[]string{"--nats-url", url, "--timeout", "0s"}, "must be positive"},
		{[]string{"--nats-url", url, "--timeout", "soon"}, "timeout"},
		{[]string{"--nats-url", url, "--subject-prefix", "a b"}, "--subject-prefix"},
		{[]string{"--nats-url", url, "--subject-prefix", "timbus.>"}, "--subject-prefix"},
		{[]string{"--nats-url", url, "--subject-prefix", ""}, "--subject-prefix"},
		{[]string{"--nats-url", url, "--sdkappid", "abc"}, `--sdkappid "abc"`},
		{[]string{"--nats-url", url, "--command", "Group.CallbackBeforeSendMgs"}, `"Group.CallbackBeforeSendMgs": not a Tencent callback command`},
		{[]string{"--nats-url", url, "--command", "Group.CallbackAfterSendMsg"}, "does not wait for a verdict"},
		{[]string{"--nats-url", url, "--bogus"}, "bogus"},
		{[]string{"--nats-url", url, "extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			clearEnv(t)
			code, stdout, stderr := runTimbus(t, context.Background(), append([]string{"conform"}, tt.args...)...)
			if code != exitUsage {
				t.Errorf("exit code = %d, want %d", code, exitUsage)
			}
			if stdout != "" || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "timbus conform --help") {
				t.Errorf("stdout %q, stderr %q; want only an error mentioning %q", stdout, stderr, tt.want)
			}
		})
	}
}

func TestConformHelp(t *testing.T) {
	code, stdout, stderr := runTimbus(t, context.Background(), "conform", "--help")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	for _, want := range []string{"--nats-url", "TIMBUS_NATS_URL", "--sdkappid", `"1400000001"`, "--command", "--subject-prefix", "--timeout", "1.5s", "--json", "Exit status"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("help does not mention %q:\n%s", want, stdout)
		}
	}
}
