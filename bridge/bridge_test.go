package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/timbus-dev/timbus/deciders/catalog"
	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/samples"
)

const (
	oaCreate      = "OfficialAccount.CallbackBeforeCreateOfficialAccount"
	oaCreateDeny  = `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"name reserved"}`
	allowAnswer   = `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`
	denyAnswer    = `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":1}`
	decideOA      = "timbus.decide." + testApp + "." + oaCreate
	shortDeadline = 300 * time.Millisecond
)

func TestBridge_Rejections(t *testing.T) {
	tb := startBridge(t, nil)
	all := subscribe(t, tb.nc, ">")
	body := sample(t, oaCreate)
	tests := []struct {
		name   string
		method string
		url    string
		body   []byte
		status int
		reason string
	}{
		{"GET", http.MethodGet, tb.callbackURL(oaCreate), nil, 405, "method_not_allowed"},
		{"PUT", http.MethodPut, tb.callbackURL(oaCreate), body, 405, "method_not_allowed"},
		{"unknown SdkAppid", "POST", tb.base + "/?SdkAppid=1400009999&CallbackCommand=" + oaCreate, body, 403, "unknown_sdkappid"},
		{"no SdkAppid", "POST", tb.base + "/?CallbackCommand=" + oaCreate, body, 403, "unknown_sdkappid"},
		{"no command", "POST", tb.base + "/?SdkAppid=" + testApp, body, 400, "missing_command"},
		{"command with wildcard", "POST", tb.base + "/?SdkAppid=" + testApp + "&CallbackCommand=Group.*", []byte(`{}`), 400, "invalid_command"},
		{"command without family", "POST", tb.base + "/?SdkAppid=" + testApp + "&CallbackCommand=CallbackBeforeSendMsg", []byte(`{}`), 400, "invalid_command"},
		{"malformed JSON", "POST", tb.callbackURL(oaCreate), []byte(`{"Name":`), 400, "invalid_body"},
		{"empty body", "POST", tb.callbackURL(oaCreate), nil, 400, "invalid_body"},
		{"array body", "POST", tb.callbackURL(oaCreate), []byte(`[{"Name":"x"}]`), 400, "invalid_body"},
		{"two objects", "POST", tb.callbackURL(oaCreate), []byte(`{"a":1}{"b":2}`), 400, "invalid_body"},
		{"string body", "POST", tb.callbackURL(oaCreate), []byte(`"hello"`), 400, "invalid_body"},
		{"body command not a string", "POST", tb.callbackURL(oaCreate), []byte(`{"CallbackCommand":7}`), 400, "invalid_body"},
		{"body command differs", "POST", tb.callbackURL(oaCreate), []byte(`{"CallbackCommand":"Group.CallbackBeforeSendMsg"}`), 400, "command_mismatch"},
		{"wrong path", "POST", tb.base + "/other?SdkAppid=" + testApp + "&CallbackCommand=" + oaCreate, body, 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, tt.url, bytes.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.status)
			}
			var got rejection
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatalf("answer is not JSON: %v", err)
			}
			if got.Reason != tt.reason || got.ActionStatus != "FAIL" || !strings.HasPrefix(got.ErrorInfo, "timbus: ") {
				t.Errorf("answer = %+v, want reason %q with a message", got, tt.reason)
			}
		})
	}
	// An oversized body: the bridge answers as soon as it reads the length,
	// so send the head alone, as an HTTP client racing the answer would lose.
	conn, err := net.Dial("tcp", tb.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /?SdkAppid=%s&CallbackCommand=%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{",
		testApp, oaCreate, DefaultConfig().MaxBodySize+1)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	var big rejection
	if err := json.NewDecoder(resp.Body).Decode(&big); err != nil || resp.StatusCode != 413 || big.Reason != "body_too_large" {
		t.Errorf("oversized body: %d %+v %v", resp.StatusCode, big, err)
	}
	resp.Body.Close()

	all.quiet(t, tb.nc, "marker.subject")
	// Each refusal is recorded for auditors, under its reason.
	waitFor(t, 2*time.Second, func() error {
		rejected := 0
		for _, m := range all.all() {
			if strings.HasPrefix(m.Subject, "timbus.audit.rejected.") {
				rejected++
			}
		}
		if rejected != len(tests)+1 {
			return fmt.Errorf("%d refusals audited, want %d", rejected, len(tests)+1)
		}
		return nil
	})
}

// TestBridge_Decide covers every way a before callback can end.
func TestBridge_Decide(t *testing.T) {
	tests := []struct {
		name    string
		config  func(*Config)
		handle  func(*nats.Msg) *nats.Msg // nil: no decider at all
		answer  string
		outcome protocol.Outcome
		minWait time.Duration // the answer must not come sooner
	}{
		{name: "custom deny passes through", handle: replyWith(oaCreateDeny), answer: oaCreateDeny, outcome: protocol.OutcomeDecided},
		{name: "allow", handle: replyWith(`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`), answer: `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`, outcome: protocol.OutcomeDecided},
		{name: "plain deny", handle: replyWith(denyAnswer), answer: denyAnswer, outcome: protocol.OutcomeDecided},
		{name: "extra fields pass through", handle: replyWith(`{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":"no","Trace":{"rule":7}}`),
			answer: `{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":"no","Trace":{"rule":7}}`, outcome: protocol.OutcomeDecided},
		{name: "code outside the command's range", handle: replyWith(`{"ActionStatus":"OK","ErrorCode":10100,"ErrorInfo":"x"}`), answer: allowAnswer, outcome: protocol.OutcomeInvalidReply},
		{name: "silent drop is not an OfficialAccount create code", handle: replyWith(`{"ActionStatus":"OK","ErrorCode":2}`), answer: allowAnswer, outcome: protocol.OutcomeInvalidReply},
		{name: "not JSON", handle: replyWith(`deny!`), answer: allowAnswer, outcome: protocol.OutcomeInvalidReply},
		{name: "empty reply", handle: replyWith(``), answer: allowAnswer, outcome: protocol.OutcomeInvalidReply},
		{name: "no ActionStatus", handle: replyWith(`{"ErrorCode":1}`), answer: allowAnswer, outcome: protocol.OutcomeInvalidReply},
		{name: "ErrorCode as string", handle: replyWith(`{"ActionStatus":"OK","ErrorCode":"1"}`), answer: allowAnswer, outcome: protocol.OutcomeInvalidReply},
		{name: "message rewrite on a command that cannot", handle: replyWith(`{"ActionStatus":"OK","ErrorCode":0,"MsgBody":[]}`), answer: allowAnswer, outcome: protocol.OutcomeInvalidReply},
		{name: "invalid reply gets the configured default", config: func(c *Config) { c.Default = Deny },
			handle: replyWith(`{"ActionStatus":"OK","ErrorCode":99}`), answer: denyAnswer, outcome: protocol.OutcomeInvalidReply},
		{name: "decider error header", handle: func(*nats.Msg) *nats.Msg {
			m := nats.NewMsg("")
			m.Header.Set(micro.ErrorHeader, "database down")
			m.Header.Set(micro.ErrorCodeHeader, "503")
			m.Data = []byte(denyAnswer)
			return m
		}, answer: allowAnswer, outcome: protocol.OutcomeDeciderError},
		{name: "no deciders", answer: allowAnswer, outcome: protocol.OutcomeNoDeciders},
		{name: "no deciders with default deny", config: func(c *Config) { c.Default = Deny }, answer: denyAnswer, outcome: protocol.OutcomeNoDeciders},
		{name: "per-command default", config: func(c *Config) {
			v := Verdict{Code: 120009, Info: "try later"}
			c.Commands = map[string]CommandConfig{oaCreate: {Default: &v}}
		}, answer: `{"ActionStatus":"OK","ErrorInfo":"try later","ErrorCode":120009}`, outcome: protocol.OutcomeNoDeciders},
		{name: "decider slower than the timeout", config: func(c *Config) { c.Timeout = shortDeadline },
			handle: func(m *nats.Msg) *nats.Msg {
				time.Sleep(shortDeadline + 300*time.Millisecond)
				return &nats.Msg{Data: []byte(oaCreateDeny)}
			}, answer: allowAnswer, outcome: protocol.OutcomeTimeout, minWait: shortDeadline},
		{name: "silent decider", config: func(c *Config) { c.Timeout = shortDeadline },
			handle: func(*nats.Msg) *nats.Msg { return nil }, answer: allowAnswer, outcome: protocol.OutcomeTimeout, minWait: shortDeadline},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := startBridge(t, tt.config)
			if tt.handle != nil {
				decider(t, tb.nc, decideOA, tt.handle)
			}
			got := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate))
			if got.status != http.StatusOK || got.body != tt.answer {
				t.Errorf("answer = %d %s, want 200 %s", got.status, got.body, tt.answer)
			}
			if got.elapsed < tt.minWait {
				t.Errorf("answered after %v, before the %v timeout", got.elapsed, tt.minWait)
			}
			// Never later than the deadline plus a little; the slack covers a
			// loaded CI machine, not the bridge.
			if limit := tb.cfg.Timeout + 250*time.Millisecond; got.elapsed > limit {
				t.Errorf("answered after %v, later than %v", got.elapsed, limit)
			}
			line := tb.lastCallbackLog(t)
			if line["outcome"] != string(tt.outcome) {
				t.Errorf("logged outcome = %v, want %s (line %v)", line["outcome"], tt.outcome, line)
			}
			if tt.outcome != protocol.OutcomeDecided && tt.outcome != protocol.OutcomeNoDeciders && line["reason"] == nil {
				t.Errorf("default sent without a logged reason: %v", line)
			}
		})
	}
}

// lastCallbackLog returns the last "callback" log line as a map.
func (tb *testBridge) lastCallbackLog(t *testing.T) map[string]any {
	t.Helper()
	var last map[string]any
	waitFor(t, 2*time.Second, func() error {
		for _, l := range tb.logs.lines() {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["message"] == "callback" {
				last = m
			}
		}
		if last == nil {
			return errNotYet
		}
		return nil
	})
	return last
}

func TestBridge_NoDecidersIsFast(t *testing.T) {
	tb := startBridge(t, nil) // 1500ms timeout
	for i := 0; i < 5; i++ {
		got := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate))
		if got.body != allowAnswer {
			t.Fatalf("answer = %s", got.body)
		}
		// No responders is known at once; anything near the timeout means the
		// bridge waited for nobody.
		if got.elapsed > tb.cfg.Timeout/3 {
			t.Fatalf("no-deciders answer took %v of a %v timeout", got.elapsed, tb.cfg.Timeout)
		}
	}
}

// TestBridge_RequestToDeciders checks what a decider receives: the subject,
// the body unchanged, and the headers.
func TestBridge_RequestToDeciders(t *testing.T) {
	tb := startBridge(t, nil)
	got := make(chan *nats.Msg, 1)
	decider(t, tb.nc, "timbus.decide.*.OfficialAccount.>", func(m *nats.Msg) *nats.Msg {
		got <- m
		return &nats.Msg{Data: []byte(oaCreateDeny)}
	})
	body := sample(t, oaCreate)
	before := time.Now()
	post(t, tb.callbackURL(oaCreate), body)
	m := <-got
	if m.Subject != decideOA {
		t.Errorf("subject = %s, want %s", m.Subject, decideOA)
	}
	if !bytes.Equal(m.Data, body) {
		t.Errorf("payload differs from the callback body:\n%s\n%s", m.Data, body)
	}
	// At the defaults a decide request carries no headers: each would cost
	// the bridge and every decider per callback. The subject names app and
	// command, the reply subject deadline and request id.
	if len(m.Header) != 0 {
		t.Errorf("headers %v, want none", m.Header)
	}
	req := protocol.ParseRequest(m.Subject, m.Reply, m.Header)
	if req.SdkAppID != testApp || req.Command != oaCreate || len(req.RequestID) < 8 {
		t.Errorf("request %+v", req)
	}
	if lo, hi := before.Add(tb.cfg.Timeout-50*time.Millisecond), time.Now().Add(tb.cfg.Timeout); req.Deadline.Before(lo) || req.Deadline.After(hi) {
		t.Errorf("deadline %v not about %v after arrival", req.Deadline, tb.cfg.Timeout)
	}

	// Request ids differ between callbacks, and the log names the same id.
	post(t, tb.callbackURL(oaCreate), body)
	_, secondID, _ := protocol.ParseReply((<-got).Reply)
	if secondID == req.RequestID {
		t.Error("two callbacks share a request id")
	}
	if line := tb.lastCallbackLog(t); line["request_id"] != secondID {
		t.Errorf("logged request_id %v, decider saw %s", line["request_id"], secondID)
	}
}

func TestBridge_MissingOptionalQuery(t *testing.T) {
	tb := startBridge(t, nil)
	sub := subscribe(t, tb.nc, "timbus.event.>")
	// Alert.RequestOverLimit comes without ClientIP; push callbacks without OptPlatform too.
	a := post(t, tb.base+"/?SdkAppid="+testApp+"&CallbackCommand=Alert.RequestOverLimit&OptPlatform=RESTAPI&contenttype=json",
		sample(t, "Alert.RequestOverLimit"))
	if a.status != 200 || a.body != allowAnswer {
		t.Fatalf("answer = %d %s", a.status, a.body)
	}
	waitFor(t, 2*time.Second, func() error {
		if len(sub.all()) == 0 {
			return errNotYet
		}
		return nil
	})
	m := sub.all()[0]
	if _, ok := m.Header[protocol.HeaderClientIP]; ok {
		t.Errorf("ClientIP header set though Tencent sent none: %v", m.Header)
	}
	if m.Reply != "" {
		t.Errorf("an event with a reply subject (and so a deadline): %s", m.Reply)
	}
}

// TestBridge_Samples sends every documented sample through the real bridge
// and NATS and checks where it lands and what Tencent gets back.
func TestBridge_Samples(t *testing.T) {
	tb := startBridge(t, nil)
	const verdict = `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","SeenBy":"test"}`
	decisions := subscribe(t, tb.nc, "timbus.decide.>")
	events := subscribe(t, tb.nc, "timbus.event.>")
	decider(t, tb.nc, "timbus.decide.>", replyWith(verdict))
	samples := samples.Requests()
	if len(samples) < 20 {
		t.Fatalf("%d samples", len(samples))
	}
	for _, s := range samples {
		command, body := s.Command, s.Body
		t.Run(command, func(t *testing.T) {
			cmd, ok := catalog.Lookup(command)
			if !ok {
				t.Fatalf("%s not in the catalog", command)
			}
			nd, ne := len(decisions.all()), len(events.all())
			got := post(t, tb.callbackURL(command), body)
			kind, capture, want := protocol.KindEvent, events, allowAnswer
			if cmd.Kind.NeedsReply() {
				kind, capture, want = protocol.KindDecide, decisions, verdict
			}
			if got.status != 200 || got.body != want {
				t.Fatalf("answer = %d %s, want 200 %s", got.status, got.body, want)
			}
			subject := protocol.Subject("timbus", kind, testApp, command)
			waitFor(t, 2*time.Second, func() error {
				msgs := capture.all()
				if len(msgs) == 0 || msgs[len(msgs)-1].Subject != subject {
					return fmt.Errorf("nothing on %s", subject)
				}
				last := msgs[len(msgs)-1]
				if !bytes.Equal(last.Data, body) {
					return fmt.Errorf("body changed on the way")
				}
				if _, app, cmd, _ := protocol.ParseSubject(last.Subject); app != testApp || cmd != command {
					return fmt.Errorf("subject %s: app %q, command %q", last.Subject, app, cmd)
				}
				req := protocol.ParseRequest(last.Subject, last.Reply, last.Header)
				if req.RequestID == "" {
					return fmt.Errorf("no request id")
				}
				if !cmd.Kind.NeedsReply() {
					// Events carry the query's values; decide requests,
					// at the defaults, no headers.
					if req.ClientIP != "10.0.0.7" || req.OptPlatform != "RESTAPI" {
						return fmt.Errorf("event headers %v", last.Header)
					}
				} else if len(last.Header) != 0 {
					return fmt.Errorf("decide request headers %v", last.Header)
				}
				if req.Deadline.IsZero() != !cmd.Kind.NeedsReply() {
					return fmt.Errorf("deadline %v on a %v command", req.Deadline, cmd.Kind)
				}
				return nil
			})
			if cmd.Kind.NeedsReply() && len(events.all()) != ne || !cmd.Kind.NeedsReply() && len(decisions.all()) != nd {
				t.Error("published on both the decide and the event subject")
			}
		})
	}
}

func TestBridge_UnlistedCommands(t *testing.T) {
	tb := startBridge(t, nil)
	all := subscribe(t, tb.nc, "timbus.*."+testApp+".Future.>")
	decider(t, tb.nc, "timbus.decide."+testApp+".Future.CallbackBeforeThing", replyWith(`{"ActionStatus":"OK","ErrorCode":4242}`))
	got := post(t, tb.callbackURL("Future.CallbackBeforeThing"), []byte(`{"CallbackCommand":"Future.CallbackBeforeThing"}`))
	if got.body != `{"ActionStatus":"OK","ErrorCode":4242}` {
		t.Errorf("unlisted before command: answer %s", got.body)
	}
	got = post(t, tb.callbackURL("Future.CallbackAfterThing"), []byte(`{"CallbackCommand":"Future.CallbackAfterThing"}`))
	if got.body != allowAnswer {
		t.Errorf("unlisted after command: answer %s", got.body)
	}
	post(t, tb.callbackURL("Future.CallbackAfterThing"), []byte(`{}`))
	waitFor(t, 2*time.Second, func() error {
		var subjects []string
		for _, m := range all.all() {
			if !strings.Contains(m.Subject, ".audit.") {
				subjects = append(subjects, m.Subject)
			}
		}
		want := []string{"timbus.decide." + testApp + ".Future.CallbackBeforeThing", "timbus.event." + testApp + ".Future.CallbackAfterThing", "timbus.event." + testApp + ".Future.CallbackAfterThing"}
		if fmt.Sprint(subjects) != fmt.Sprint(want) {
			return fmt.Errorf("subjects %v, want %v", subjects, want)
		}
		return nil
	})
	warnings := 0
	for _, l := range tb.logs.lines() {
		if strings.Contains(l, "not in the catalog") && strings.Contains(l, "Future.CallbackAfterThing") {
			warnings++
		}
	}
	if warnings != 1 {
		t.Errorf("%d warnings for one unlisted command, want 1", warnings)
	}
}

func TestBridge_QueueGroupSpread(t *testing.T) {
	tb := startBridge(t, nil)
	const deciders, callbacks = 3, 60
	var counts [deciders]atomic.Int32
	for i := 0; i < deciders; i++ {
		nc := connect(t, tb)
		decider(t, nc, decideOA, func(*nats.Msg) *nats.Msg {
			counts[i].Add(1)
			return &nats.Msg{Data: []byte(oaCreateDeny)}
		})
	}
	body := sample(t, oaCreate)
	var wg sync.WaitGroup
	var wrong atomic.Int32
	for i := 0; i < callbacks; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := post(t, tb.callbackURL(oaCreate), body); got.body != oaCreateDeny {
				wrong.Add(1)
			}
		}()
	}
	wg.Wait()
	total := int32(0)
	for i := range counts {
		n := counts[i].Load()
		if n == 0 {
			t.Errorf("decider %d got no work", i)
		}
		total += n
	}
	if total != callbacks || wrong.Load() != 0 {
		t.Errorf("deciders handled %d of %d, %d wrong answers", total, callbacks, wrong.Load())
	}
}

func connect(t *testing.T, tb *testBridge) *nats.Conn {
	nc, err := nats.Connect(tb.ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestBridge_NATSDown: with its NATS server gone, the bridge still answers
// every before callback with the default, at once and with 200.
func TestBridge_NATSDown(t *testing.T) {
	tb := startBridge(t, func(c *Config) { c.Default = Deny })
	decider(t, tb.nc, decideOA, replyWith(oaCreateDeny))
	// An auditor listens, so records are worth holding through the outage
	// (records nobody hears are counted unheard instead: hearing).
	subscribe(t, tb.nc, "timbus.audit.>")
	if got := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate)); got.body != oaCreateDeny {
		t.Fatalf("before the outage: %s", got.body)
	}
	tb.auditSettled(t) // the record of the callback before the outage is out
	tb.ns.Shutdown()
	tb.ns.WaitForShutdown()
	waitFor(t, 5*time.Second, func() error {
		if tb.nc.IsConnected() || tb.Bridge.nc.IsConnected() {
			return errNotYet
		}
		return nil
	})
	for i := 0; i < 3; i++ {
		got := post(t, tb.callbackURL(oaCreate), sample(t, oaCreate))
		if got.status != 200 || got.body != denyAnswer {
			t.Fatalf("during the outage: %d %s", got.status, got.body)
		}
		if got.elapsed > tb.cfg.Timeout {
			t.Fatalf("during the outage the answer took %v", got.elapsed)
		}
		line := tb.lastCallbackLog(t)
		if o := line["outcome"]; o != string(protocol.OutcomeNATSError) {
			t.Fatalf("outcome %v, want nats_error", o)
		}
		// The reason names the outage, not the reconnect buffer the
		// client keeps none of.
		if why, _ := line[logKeyReason].(string); !strings.Contains(why, ErrNATS.Error()+": connection ") {
			t.Fatalf("reason %q, want it to say NATS is unavailable and the connection's state", line[logKeyReason])
		}
	}
	// Their audit records wait for NATS; a shutdown before it is back
	// gives them up and says so.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := tb.Shutdown(ctx); !errors.Is(err, ErrNATS) || !strings.Contains(err.Error(), "3 audit records not acknowledged") {
		t.Errorf("Shutdown with NATS gone: %v, want the 3 audit records given up", err)
	}
}

// TestBridge_ShutdownFinishesInFlight: callbacks being decided when Shutdown
// starts still get their decider's answer; new connections are refused.
func TestBridge_ShutdownFinishesInFlight(t *testing.T) {
	tb := startBridge(t, nil)
	arrived := make(chan struct{}, 4)
	decider(t, tb.nc, decideOA, func(*nats.Msg) *nats.Msg {
		arrived <- struct{}{}
		time.Sleep(400 * time.Millisecond)
		return &nats.Msg{Data: []byte(oaCreateDeny)}
	})
	const inFlight = 3
	answers := make(chan answer, inFlight)
	for i := 0; i < inFlight; i++ {
		go func() { answers <- post(t, tb.callbackURL(oaCreate), sample(t, oaCreate)) }()
	}
	for i := 0; i < inFlight; i++ {
		<-arrived
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tb.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for i := 0; i < inFlight; i++ {
		if got := <-answers; got.status != 200 || got.body != oaCreateDeny {
			t.Errorf("in-flight callback got %d %s", got.status, got.body)
		}
	}
	if _, err := http.Post(tb.callbackURL(oaCreate), "application/json", strings.NewReader("{}")); err == nil {
		t.Error("a new callback was accepted after Shutdown")
	}
	if err := tb.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestBridge_EmbeddedNATS(t *testing.T) {
	b := startEmbedded(t, "", nil)
	defer b.Shutdown(context.Background())
	nc, err := nats.Connect(b.NATSURL())
	if err != nil {
		t.Fatalf("deciders cannot reach the embedded server at %s: %v", b.NATSURL(), err)
	}
	defer nc.Close()
	if !strings.HasPrefix(b.NATSURL(), "nats://127.0.0.1:") {
		t.Errorf("embedded server URL %s", b.NATSURL())
	}
	decider(t, nc, decideOA, replyWith(oaCreateDeny))
	got := post(t, "http://"+b.Addr()+"/?SdkAppid="+testApp+"&CallbackCommand="+oaCreate, sample(t, oaCreate))
	if got.body != oaCreateDeny {
		t.Errorf("answer through the embedded server: %s", got.body)
	}
}

func TestBridge_StartErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSListen = busy.Addr().String()
	cfg.Apps = []App{{ID: testApp}}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err == nil || !errors.Is(err, ErrNATS) {
		t.Errorf("busy NATS port: err = %v, want ErrNATS", err)
	}

	tb := startBridge(t, nil)
	cfg = tb.cfg
	cfg.Listen = tb.Addr()
	b, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); !errors.Is(err, ErrListen) {
		t.Errorf("busy HTTP port: err = %v, want ErrListen", err)
	}
	if err := tb.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: err = %v, want ErrStarted", err)
	}
}
