// Package nodegroupfilter_test runs the Node.js example decider (main.js) as
// its own process against a real bridge on an embedded NATS server, and
// plays Tencent over HTTP.
package nodegroupfilter_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/ask"
	"github.com/timbus-dev/timbus/internal/exampletest"
	"github.com/timbus-dev/timbus/internal/needs"
)

const (
	command = "Group.CallbackBeforeSendMsg"
	// defaultAnswer is the bridge's default verdict (allow), sent when the
	// decider reports an error.
	defaultAnswer = `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`
	allow         = `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`
	blocked       = `{"ActionStatus":"OK","ErrorCode":10101,"ErrorInfo":"message blocked"}`

	// bridgeTimeout is the bridge's wait for the decider: as long as the
	// bridge allows (under Tencent's 2s), so that a loaded machine running
	// -race does not turn an answer into a timeout.
	bridgeTimeout = 1900 * time.Millisecond
	// testTimeout is the wait for direct NATS requests.
	testTimeout = 5 * time.Second
)

// requireNode skips the test (needs.Tools) unless Node.js 20 or later and
// the example's node_modules are there.
func requireNode(t *testing.T) {
	t.Helper()
	needs.Tools(t, "Node.js 20 or later, npm, and `npm ci` in deciders/examples/node-groupfilter — "+
		"install node and npm, then run `make deps`",
		needs.Runs("node (20 or later)", "node", "-e", "process.exit(Number(process.versions.node.split('.')[0]) >= 20 ? 0 : 1)"),
		needs.File("node_modules (npm ci)", filepath.Join("node_modules", "@nats-io", "transport-node", "package.json")))
}

// lines collects what a logger writes while the test reads it.
type lines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// bridgeLine is one "callback" line of the bridge's log.
type bridgeLine struct {
	RequestID string `json:"request_id"`
	Command   string `json:"command"`
	Outcome   string `json:"outcome"`
	Reason    string `json:"reason"`
}

func (l *lines) callbacks(t *testing.T) []bridgeLine {
	t.Helper()
	var out []bridgeLine
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	for sc.Scan() {
		var bl bridgeLine
		if err := json.Unmarshal(sc.Bytes(), &bl); err != nil {
			t.Fatalf("bridge log line %q: %v", sc.Text(), err)
		}
		if bl.RequestID != "" {
			out = append(out, bl)
		}
	}
	return out
}

// setup starts a bridge and the decider with extra environment entries, and
// returns once the decider answers.
func setup(t *testing.T, env ...string) (*exampletest.Env, *exampletest.Process, *lines) {
	t.Helper()
	requireNode(t)
	logs := &lines{}
	e := exampletest.Start(t, exampletest.Options{Logs: logs, Timeout: bridgeTimeout})
	p := exampletest.Run(t, append([]string{"NATS_URL=" + e.NATSURL}, env...), ".", "node", "main.js")
	e.WaitForDecider(t, command, 20*time.Second)
	return e, p, logs
}

// withMsgBody returns the documented sample with its MsgBody replaced by
// msgBody (raw JSON).
func withMsgBody(t *testing.T, msgBody string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(exampletest.Sample(t, command), &m); err != nil {
		t.Fatal(err)
	}
	m["MsgBody"] = json.RawMessage(msgBody)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// eventually polls cond for up to 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for limit := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(limit) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestGroupFilter_OverHTTP(t *testing.T) {
	e, p, logs := setup(t)

	face := `{"MsgType":"TIMFaceElem","MsgContent":{"Index":1,"Data":"spam"}}`
	custom := `{"MsgType":"TIMCustomElem","MsgContent":{"Data":"message","Desc":"notification","Ext":"url","Sound":"dingdong.aiff"}}`
	tests := []struct {
		name    string
		body    []byte
		want    string
		outcome string // the bridge's outcome
		verdict string // what the decider logs: verdict=… for decisions, "error" for a bad body
	}{
		{name: "documented sample", body: exampletest.Sample(t, command),
			want: allow, outcome: "decided", verdict: "verdict=allow"},
		{name: "banned words masked, other elements unchanged",
			body: withMsgBody(t, `[`+
				`{"MsgType":"TIMTextElem","MsgContent":{"Text":"Spam and scam, not spammer: SPAM!"}},`+
				face+`,`+
				`{"MsgType":"TIMTextElem","MsgContent":{"Text":"nothing bad here"}},`+
				custom+`,`+
				`{"MsgType":"TIMTextElem","MsgContent":{"Text":"(scam)"}}]`),
			want: `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgBody":[` +
				`{"MsgType":"TIMTextElem","MsgContent":{"Text":"**** and ****, not spammer: ****!"}},` +
				face + `,` +
				`{"MsgType":"TIMTextElem","MsgContent":{"Text":"nothing bad here"}},` +
				custom + `,` +
				`{"MsgType":"TIMTextElem","MsgContent":{"Text":"(****)"}}]}`,
			outcome: "decided", verdict: "verdict=mask"},
		{name: "blocked word",
			body: withMsgBody(t, `[{"MsgType":"TIMTextElem","MsgContent":{"Text":"this is forbidden"}}]`),
			want: blocked, outcome: "decided", verdict: "verdict=block"},
		{name: "blocked word wins over banned, in any element and case",
			body: withMsgBody(t, `[{"MsgType":"TIMTextElem","MsgContent":{"Text":"spam"}},{"MsgType":"TIMTextElem","MsgContent":{"Text":"FORBIDDEN."}}]`),
			want: blocked, outcome: "decided", verdict: "verdict=block"},
		{name: "look-alike words allowed",
			body: withMsgBody(t, `[{"MsgType":"TIMTextElem","MsgContent":{"Text":"spammers scammed forbiddenness"}}]`),
			want: allow, outcome: "decided", verdict: "verdict=allow"},
		{name: "only text elements are read",
			body: withMsgBody(t, `[`+face+`]`),
			want: allow, outcome: "decided", verdict: "verdict=allow"},
		{name: "MsgBody not an array", body: withMsgBody(t, `{"MsgType":"TIMTextElem","MsgContent":{"Text":"spam"}}`),
			want: defaultAnswer, outcome: "decider_error", verdict: "msg=error"},
		{name: "no MsgBody", body: []byte(`{"CallbackCommand":"Group.CallbackBeforeSendMsg","GroupId":"@TGS#2J4SZEAEL"}`),
			want: defaultAnswer, outcome: "decider_error", verdict: "msg=error"},
		{name: "text element without Text", body: withMsgBody(t, `[{"MsgType":"TIMTextElem","MsgContent":{"Text":1}}]`),
			want: defaultAnswer, outcome: "decider_error", verdict: "msg=error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(logs.callbacks(t))
			status, answer := e.Post(t, command, tt.body)
			if status != http.StatusOK {
				t.Fatalf("status %d, answer %s", status, answer)
			}
			if answer != tt.want {
				t.Fatalf("answer\n got %s\nwant %s", answer, tt.want)
			}
			var line bridgeLine
			eventually(t, "the bridge's log line", func() bool {
				cbs := logs.callbacks(t)
				if len(cbs) > before {
					line = cbs[len(cbs)-1]
					return true
				}
				return false
			})
			if line.Outcome != tt.outcome || line.Command != command {
				t.Fatalf("bridge logged %+v, want outcome %s", line, tt.outcome)
			}
			if tt.outcome == "decider_error" && !strings.Contains(line.Reason, "decider reported an error: 400 bad callback body") {
				t.Fatalf("bridge reason %q, want the decider's 400 bad callback body", line.Reason)
			}
			// One decider line per decision, with the bridge's request id and
			// the app read from the subject.
			eventually(t, "the decider's log line for "+line.RequestID, func() bool {
				for _, l := range strings.Split(p.Output(), "\n") {
					if strings.Contains(l, "request_id="+line.RequestID+" sdkappid="+exampletest.SdkAppID+" ") && strings.Contains(l, tt.verdict) {
						return true
					}
				}
				return false
			})
		})
	}
}

// request builds the NATS request the bridge would send: the deadline and
// the request id in the reply subject; a zero deadline leaves out both, as
// `nats request` does.
func request(id string, body []byte, deadline time.Time) *nats.Msg {
	reply := nats.NewInbox()
	if !deadline.IsZero() {
		reply = string(protocol.AppendReply(nil, reply, deadline, id, "r"))
	}
	return &nats.Msg{
		Subject: protocol.Subject(protocol.DefaultSubjectPrefix, protocol.KindDecide, exampletest.SdkAppID, command),
		Reply:   reply,
		Data:    body,
	}
}

// The bridge hides what the decider put on the wire; these look at it
// directly.
func TestGroupFilter_Wire(t *testing.T) {
	e, p, _ := setup(t)
	nc, err := nats.Connect(e.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	// The bridge refuses bodies that are not JSON objects itself; the
	// decider must still cope with them.
	for _, tt := range []struct {
		name string
		body []byte
		desc string
	}{
		{"MsgBody not an array", withMsgBody(t, `"spam"`), "bad callback body: MsgBody is not an array"},
		{"not an object", []byte(`[{"MsgBody":[]}]`), "bad callback body: not a JSON object"},
		{"not JSON", []byte(`<xml/>`), "bad callback body: not JSON"},
	} {
		t.Run("error headers/"+tt.name, func(t *testing.T) {
			rep, err := ask.Request(nc, request("wire-err", tt.body, time.Now().Add(testTimeout)), testTimeout)
			if err != nil {
				t.Fatal(err)
			}
			code, desc := rep.Header.Get(protocol.HeaderServiceErrorCode), rep.Header.Get(protocol.HeaderServiceError)
			if code != "400" || !strings.HasPrefix(desc, tt.desc) {
				t.Fatalf("error headers %q %q, want 400 and %q", code, desc, tt.desc)
			}
			if len(rep.Data) != 0 {
				t.Fatalf("error reply carries data %q", rep.Data)
			}
		})
	}

	t.Run("passed deadline not answered", func(t *testing.T) {
		_, err := ask.Request(nc, request("wire-late", exampletest.Sample(t, command), time.Now().Add(-time.Second)), 500*time.Millisecond)
		if !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("got %v, want no reply (timeout)", err)
		}
		eventually(t, "the skip log line", func() bool {
			return strings.Contains(p.Output(), "msg=\"skipped: deadline passed\" request_id=wire-late ")
		})
	})

	t.Run("no deadline answered", func(t *testing.T) {
		m := request("wire-nodeadline", exampletest.Sample(t, command), time.Time{})
		rep, err := ask.Request(nc, m, testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if string(rep.Data) != allow {
			t.Fatalf("reply %s, want %s", rep.Data, allow)
		}
	})
}

// BANNED, BLOCKED and SUBJECT_PREFIX configure it; SIGTERM drains and stops
// it cleanly.
func TestGroupFilter_ConfigAndStop(t *testing.T) {
	requireNode(t)
	const prefix = "acme.timbus"
	e := exampletest.Start(t, exampletest.Options{SubjectPrefix: prefix, Timeout: bridgeTimeout})
	p := exampletest.Run(t, []string{"NATS_URL=" + e.NATSURL, "SUBJECT_PREFIX=" + prefix, "BANNED=darn, heck ,,垃圾", "BLOCKED=bad word"},
		".", "node", "main.js")
	nc, err := nats.Connect(e.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	subject := protocol.Subject(prefix, protocol.KindDecide, exampletest.SdkAppID, command)
	eventually(t, "the decider on "+subject, func() bool {
		_, err := nc.Request(subject, exampletest.Sample(t, command), time.Second)
		return err == nil
	})

	for _, tt := range []struct{ text, want string }{
		{"Darn it, heck", `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"**** it, ****"}}]}`},
		// Chinese has no spaces between words; one star per character.
		{"这是垃圾!", `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"这是**!"}}]}`},
		{"spam scam forbidden", allow},
		{"a BAD  word", allow},
		{"a bad word", blocked},
	} {
		body := withMsgBody(t, `[{"MsgType":"TIMTextElem","MsgContent":{"Text":"`+tt.text+`"}}]`)
		if _, answer := e.Post(t, command, body); answer != tt.want {
			t.Errorf("%q: answer\n got %s\nwant %s", tt.text, answer, tt.want)
		}
	}

	p.Stop(5 * time.Second)
	if !p.Exited() {
		t.Fatal("still running after SIGTERM")
	}
	out := p.Output()
	if !strings.Contains(out, "msg=stopping signal=SIGTERM") || !strings.Contains(out, "msg=stopped") {
		t.Fatalf("no clean stop after SIGTERM:\n%s", out)
	}
}

// The conformance kit passes against the decider.
func TestGroupFilter_Conforms(t *testing.T) {
	e, _, _ := setup(t)
	e.Conform(t, command)
}
