package deciders_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/timbus-dev/timbus/deciders"
	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/ask"
	"github.com/timbus-dev/timbus/internal/natstest"
)

const (
	testApp    = "1400000001"
	createOA   = "OfficialAccount.CallbackBeforeCreateOfficialAccount"
	groupSend  = "Group.CallbackBeforeSendMsg"
	allowReply = `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`
)

// env is a NATS server, a decider on its own connection and a client
// connection playing the bridge.
type env struct {
	t       *testing.T
	d       *deciders.Decider
	dc      *nats.Conn // the decider's
	nc      *nats.Conn // the bridge's
	results *results
}

// results collects what OnResult hears.
type results struct {
	mu  sync.Mutex
	all []deciders.Result
}

func (r *results) add(res deciders.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, res)
}

// find returns the result for request id, waiting up to a second for it.
func (r *results) find(t *testing.T, id string) deciders.Result {
	t.Helper()
	for limit := time.Now().Add(time.Second); ; {
		r.mu.Lock()
		for _, res := range r.all {
			if res.Callback.RequestID == id {
				r.mu.Unlock()
				return res
			}
		}
		r.mu.Unlock()
		if time.Now().After(limit) {
			t.Fatalf("no result for request %s", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newEnv(t *testing.T, edit func(*deciders.Config)) *env {
	t.Helper()
	s := natstest.Run(t)
	e := &env{t: t, dc: natstest.Connect(t, s), nc: natstest.Connect(t, s), results: &results{}}
	cfg := deciders.Config{Name: "test-decider", Version: "1.2.3", Description: "for tests", OnResult: e.results.add}
	if edit != nil {
		edit(&cfg)
	}
	d, err := deciders.New(e.dc, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	e.d = d
	return e
}

// handle registers h and waits until the server knows the subscription.
func (e *env) handle(command string, h deciders.Handler) {
	e.t.Helper()
	if err := e.d.Handle(command, h); err != nil {
		e.t.Fatalf("Handle(%s): %v", command, err)
	}
	if err := e.dc.Flush(); err != nil {
		e.t.Fatal(err)
	}
}

var reqSeq struct {
	mu sync.Mutex
	n  int
}

// request builds a callback as the bridge sends it with --decide-headers all;
// a zero deadline sends it with a reply subject that holds neither deadline
// nor request id, as other clients do.
func request(app, command string, body []byte, deadline time.Time) *nats.Msg {
	reqSeq.mu.Lock()
	reqSeq.n++
	id := "req-" + strconv.Itoa(reqSeq.n)
	reqSeq.mu.Unlock()
	r := protocol.Request{ClientIP: "127.0.0.1", OptPlatform: "RESTAPI"}
	reply := nats.NewInbox()
	if !deadline.IsZero() {
		reply = string(protocol.AppendReply(nil, reply, deadline, id, "r"))
	}
	return &nats.Msg{
		Subject: protocol.Subject(protocol.DefaultSubjectPrefix, protocol.KindDecide, app, command),
		Reply:   reply,
		Header:  nats.Header(r.Header()),
		Data:    body,
	}
}

// idOf is the request id a decider reads from m.
func idOf(m *nats.Msg) string { return protocol.ParseRequest(m.Subject, m.Reply, m.Header).RequestID }

func soon() time.Time { return time.Now().Add(2 * time.Second) }

// ask sends a callback and returns the reply.
func (e *env) ask(m *nats.Msg) *nats.Msg {
	e.t.Helper()
	rep, err := ask.Request(e.nc, m, 3*time.Second)
	if err != nil {
		e.t.Fatalf("request %s: %v", m.Subject, err)
	}
	return rep
}

func errorHeaders(m *nats.Msg) (code, desc string) {
	return m.Header.Get(micro.ErrorCodeHeader), m.Header.Get(micro.ErrorHeader)
}

// TestDecider_UnnamedReplies: by default a verdict goes out bare, without
// headers, which cost the decider and timbus on every callback.
func TestDecider_UnnamedReplies(t *testing.T) {
	e := newEnv(t, nil)
	e.handle(createOA, func(context.Context, *deciders.Callback) (deciders.Verdict, error) { return deciders.Allow(), nil })
	rep := e.ask(request(testApp, createOA, sample(t, createOA), soon()))
	if string(rep.Data) != allowReply || len(rep.Header) != 0 {
		t.Fatalf("reply %s with headers %v, want %s bare", rep.Data, rep.Header, allowReply)
	}
}

func TestDecider_Replies(t *testing.T) {
	e := newEnv(t, func(c *deciders.Config) { c.NameReplies = true })
	var (
		mu   sync.Mutex
		next deciders.Handler
	)
	e.handle(">", func(ctx context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
		mu.Lock()
		h := next
		mu.Unlock()
		return h(ctx, cb)
	})
	tests := []struct {
		name     string
		command  string
		handler  deciders.Handler
		want     string // the reply, when there is no error
		wantCode string // the error code header, when there is one
		wantDesc string // contained in the error description
		outcome  deciders.Outcome
	}{
		{name: "allow", command: createOA,
			handler: func(context.Context, *deciders.Callback) (deciders.Verdict, error) { return deciders.Allow(), nil },
			want:    allowReply},
		{name: "custom deny", command: createOA,
			handler: func(_ context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
				f, err := cb.Fields()
				return deciders.DenyWith(120005, fmt.Sprintf("name %q is reserved", f.Name)), err
			},
			want: `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"name \"TestOfficialAccount\" is reserved"}`},
		{name: "modify", command: groupSend,
			handler: func(context.Context, *deciders.Callback) (deciders.Verdict, error) {
				return deciders.Modify([]deciders.MsgElem{deciders.TextElem("***")}), nil
			},
			want: `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"***"}}]}`},
		{name: "plain error", command: createOA,
			handler: func(context.Context, *deciders.Callback) (deciders.Verdict, error) {
				return deciders.Allow(), errors.New("database unavailable")
			},
			wantCode: "500", wantDesc: "database unavailable", outcome: deciders.Failed},
		{name: "error with a code", command: createOA,
			handler: func(context.Context, *deciders.Callback) (deciders.Verdict, error) {
				return deciders.Verdict{}, deciders.Error{Code: 503, Description: "database unavailable"}
			},
			wantCode: "503", wantDesc: "database unavailable", outcome: deciders.Failed},
		{name: "wrapped *Error", command: createOA,
			handler: func(context.Context, *deciders.Callback) (deciders.Verdict, error) {
				return deciders.Verdict{}, fmt.Errorf("lookup: %w", &deciders.Error{Code: 400, Description: "bad name"})
			},
			wantCode: "400", wantDesc: "bad name", outcome: deciders.Failed},
		{name: "error over several lines", command: createOA,
			handler: func(context.Context, *deciders.Callback) (deciders.Verdict, error) {
				return deciders.Verdict{}, errors.New("line one\r\nline two")
			},
			wantCode: "500", wantDesc: "line one  line two", outcome: deciders.Failed},
		{name: "body error", command: createOA,
			handler: func(_ context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
				var v struct{ Name int }
				return deciders.Allow(), cb.Decode(&v)
			},
			wantCode: "500", wantDesc: "deciders: bad callback body: json: cannot unmarshal", outcome: deciders.Failed},
		{name: "panic", command: createOA,
			handler:  func(context.Context, *deciders.Callback) (deciders.Verdict, error) { panic("boom") },
			wantCode: "500", wantDesc: "deciders: handler panicked: boom", outcome: deciders.Failed},
		{name: "invalid verdict", command: createOA,
			handler: func(context.Context, *deciders.Callback) (deciders.Verdict, error) {
				return deciders.DenyWith(5, "no"), nil
			},
			wantCode: "500", wantDesc: "ErrorCode 5 is not valid for this command (valid: 0, 1, 120001-130000)", outcome: deciders.Failed},
		{name: "modify a group creation", command: "Group.CallbackBeforeCreateGroup",
			handler: func(context.Context, *deciders.Callback) (deciders.Verdict, error) {
				return deciders.Modify([]deciders.MsgElem{deciders.TextElem("x")}), nil
			},
			wantCode: "500", wantDesc: `"MsgBody" is not a reply field of this command`, outcome: deciders.Failed},
		{name: "still serving after a panic", command: createOA,
			handler: func(context.Context, *deciders.Callback) (deciders.Verdict, error) { return deciders.Deny(), nil },
			want:    `{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":""}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			next = tt.handler
			mu.Unlock()
			req := request(testApp, tt.command, sample(t, tt.command), soon())
			rep := e.ask(req)
			code, desc := errorHeaders(rep)
			if tt.wantCode != "" {
				if code != tt.wantCode || !strings.Contains(desc, tt.wantDesc) {
					t.Fatalf("error headers %q %q, want %q and a description with %q", code, desc, tt.wantCode, tt.wantDesc)
				}
			} else if code != "" || desc != "" || string(rep.Data) != tt.want {
				t.Fatalf("reply %s (error %q %q)\nwant %s", rep.Data, code, desc, tt.want)
			}
			if got, want := rep.Header.Get(protocol.HeaderDecider), "test-decider/1.2.3/"+e.d.Info().ID; got != want {
				t.Fatalf("%s header %q, want %q", protocol.HeaderDecider, got, want)
			}
			res := e.results.find(t, idOf(req))
			if res.Outcome != tt.outcome || (res.Err != nil) != (tt.outcome == deciders.Failed) || res.Late {
				t.Fatalf("result %+v, want outcome %v", res, tt.outcome)
			}
			if res.Callback.Command != tt.command || res.Callback.SdkAppID != testApp || res.Callback.ClientIP != "127.0.0.1" {
				t.Fatalf("callback %+v", res.Callback.Request)
			}
		})
	}

	data := endpointData(t, e.d, "all")
	if data.Panics != 1 || data.InvalidVerdicts != 2 || data.Expired != 0 {
		t.Fatalf("endpoint data %+v, want 1 panic and 2 invalid verdicts", data)
	}
	var pe *deciders.PanicError
	e.results.mu.Lock()
	for _, r := range e.results.all {
		if errors.As(r.Err, &pe) {
			break
		}
	}
	e.results.mu.Unlock()
	if pe == nil || pe.Value != "boom" || !strings.Contains(string(pe.Stack), "decider_test.go") {
		t.Fatalf("panic error %+v: want the value and the handler's stack", pe)
	}
}

func endpointData(t *testing.T, d *deciders.Decider, name string) deciders.EndpointData {
	t.Helper()
	for _, ep := range d.Stats().Endpoints {
		if ep.Name == name {
			var data deciders.EndpointData
			if err := json.Unmarshal(ep.Data, &data); err != nil {
				t.Fatalf("endpoint data %s: %v", ep.Data, err)
			}
			return data
		}
	}
	t.Fatalf("no endpoint %s in %+v", name, d.Stats().Endpoints)
	return deciders.EndpointData{}
}

// The handler's context ends at the callback's deadline, to the millisecond
// the header carries.
func TestDecider_DeadlineContext(t *testing.T) {
	e := newEnv(t, nil)
	deadlines := make(chan time.Time, 1)
	e.handle(createOA, func(ctx context.Context, _ *deciders.Callback) (deciders.Verdict, error) {
		d, ok := ctx.Deadline()
		if !ok {
			d = time.Time{}
		}
		deadlines <- d
		return deciders.Allow(), nil
	})
	deadline := time.UnixMilli(time.Now().Add(1500 * time.Millisecond).UnixMilli())
	e.ask(request(testApp, createOA, sample(t, createOA), deadline))
	if got := <-deadlines; !got.Equal(deadline) {
		t.Fatalf("ctx deadline %v, want %v", got, deadline)
	}

	// No deadline in the reply subject: the bridge always sends one, other
	// clients may not.
	e.ask(request(testApp, createOA, sample(t, createOA), time.Time{}))
	if got := <-deadlines; !got.IsZero() {
		t.Fatalf("ctx deadline %v without a header, want none", got)
	}
	m := request(testApp, createOA, sample(t, createOA), time.Time{})
	m.Reply = nats.NewInbox() + ".soon.req-x.r"
	e.ask(m)
	if got := <-deadlines; !got.IsZero() {
		t.Fatalf("ctx deadline %v with a malformed header, want none", got)
	}
}

// A callback whose deadline has passed is dropped: no handler, no reply.
func TestDecider_ExpiredNotAnswered(t *testing.T) {
	e := newEnv(t, nil)
	called := make(chan string, 10)
	e.handle(createOA, func(_ context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
		called <- cb.RequestID
		return deciders.Allow(), nil
	})
	past := []time.Time{time.Now().Add(-time.Millisecond), time.Now().Add(-time.Hour), time.UnixMilli(1)}
	for _, deadline := range past {
		req := request(testApp, createOA, sample(t, createOA), deadline)
		rep, err := ask.Request(e.nc, req, 200*time.Millisecond)
		if !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("deadline %v: got %v, %v; want a timeout", deadline, rep, err)
		}
		if res := e.results.find(t, idOf(req)); res.Outcome != deciders.Expired {
			t.Fatalf("result %+v, want Expired", res)
		}
	}
	select {
	case id := <-called:
		t.Fatalf("handler called for %s", id)
	default:
	}
	if data := endpointData(t, e.d, "OfficialAccount-CallbackBeforeCreateOfficialAccount"); data.Expired != int64(len(past)) {
		t.Fatalf("endpoint data %+v, want %d expired", data, len(past))
	}
}

// A handler that overruns its deadline still answers, and is counted late.
func TestDecider_Late(t *testing.T) {
	e := newEnv(t, nil)
	e.handle(createOA, func(ctx context.Context, _ *deciders.Callback) (deciders.Verdict, error) {
		<-ctx.Done()
		return deciders.Allow(), nil
	})
	req := request(testApp, createOA, sample(t, createOA), time.Now().Add(50*time.Millisecond))
	if rep := e.ask(req); string(rep.Data) != allowReply {
		t.Fatalf("reply %s", rep.Data)
	}
	if res := e.results.find(t, idOf(req)); !res.Late || res.Outcome != deciders.Decided {
		t.Fatalf("result %+v, want a late decision", res)
	}
	if data := endpointData(t, e.d, "OfficialAccount-CallbackBeforeCreateOfficialAccount"); data.Late != 1 {
		t.Fatalf("endpoint data %+v, want 1 late", data)
	}
}

func TestDecider_Patterns(t *testing.T) {
	e := newEnv(t, func(c *deciders.Config) { c.SdkAppID = testApp })
	got := make(chan string, 10)
	handler := func(tag string) deciders.Handler {
		return func(_ context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
			got <- tag + " " + cb.Command
			return deciders.Allow(), nil
		}
	}
	e.handle("Group.CallbackBeforeCreateGroup", handler("group"))
	e.handle("*.CallbackBeforeSendMsg", handler("send"))
	e.handle(createOA, handler("create"))

	for _, tt := range []struct{ command, want string }{
		{"Group.CallbackBeforeSendMsg", "send Group.CallbackBeforeSendMsg"},
		{"Group.CallbackBeforeCreateGroup", "group Group.CallbackBeforeCreateGroup"},
		{"C2C.CallbackBeforeSendMsg", "send C2C.CallbackBeforeSendMsg"},
		{"OfficialAccount.CallbackBeforeSendMsg", "send OfficialAccount.CallbackBeforeSendMsg"},
		{createOA, "create " + createOA},
	} {
		if rep := e.ask(request(testApp, tt.command, []byte(`{}`), soon())); string(rep.Data) != allowReply {
			t.Fatalf("%s: reply %s", tt.command, rep.Data)
		}
		if g := <-got; g != tt.want {
			t.Fatalf("%s went to %q, want %q", tt.command, g, tt.want)
		}
	}

	// Another app, and a command nobody handles, find nobody.
	for _, m := range []*nats.Msg{
		request("1400000002", createOA, []byte(`{}`), soon()),
		request(testApp, "OfficialAccount.CallbackBeforeAddSubscriber", []byte(`{}`), soon()),
	} {
		if _, err := ask.Request(e.nc, m, time.Second); !errors.Is(err, nats.ErrNoResponders) {
			t.Fatalf("%s: %v, want no responders", m.Subject, err)
		}
	}

	info := e.d.Info()
	var subjects []string
	for _, ep := range info.Endpoints {
		subjects = append(subjects, ep.Name+" "+ep.Subject+" "+ep.QueueGroup+" "+ep.Metadata["command"])
	}
	want := []string{
		"Group-CallbackBeforeCreateGroup timbus.decide.1400000001.Group.CallbackBeforeCreateGroup test-decider Group.CallbackBeforeCreateGroup",
		"any-CallbackBeforeSendMsg timbus.decide.1400000001.*.CallbackBeforeSendMsg test-decider *.CallbackBeforeSendMsg",
		"OfficialAccount-CallbackBeforeCreateOfficialAccount timbus.decide.1400000001." + createOA + " test-decider " + createOA,
	}
	if strings.Join(subjects, "\n") != strings.Join(want, "\n") {
		t.Fatalf("endpoints\n%s\nwant\n%s", strings.Join(subjects, "\n"), strings.Join(want, "\n"))
	}
}

// Without the Timbus-* headers (a test tool, `nats request`), the command
// and app come from the subject, so that verdicts are still checked.
func TestDecider_CommandFromSubject(t *testing.T) {
	e := newEnv(t, func(c *deciders.Config) { c.SubjectPrefix = "acme.timbus" })
	commands := make(chan string, 1)
	e.handle("OfficialAccount.>", func(_ context.Context, cb *deciders.Callback) (deciders.Verdict, error) {
		commands <- cb.SdkAppID + " " + cb.Command
		return deciders.Drop(), nil
	})
	rep, err := e.nc.Request("acme.timbus.decide.1400000009."+createOA, sample(t, createOA), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := <-commands; got != "1400000009 "+createOA {
		t.Fatalf("callback app and command %q", got)
	}
	if code, desc := errorHeaders(rep); code != "500" || !strings.Contains(desc, "ErrorCode 2 is not valid") {
		t.Fatalf("error headers %q %q, want the invalid verdict", code, desc)
	}
}

func TestDecider_Discovery(t *testing.T) {
	e := newEnv(t, func(c *deciders.Config) { c.QueueGroup = "q-test" })
	e.handle(createOA, func(context.Context, *deciders.Callback) (deciders.Verdict, error) { return deciders.Allow(), nil })

	rep, err := e.nc.Request("$SRV.PING.test-decider", nil, time.Second)
	if err != nil {
		t.Fatalf("ping: %v", err)
	}
	var ping micro.Ping
	if err := json.Unmarshal(rep.Data, &ping); err != nil || ping.Name != "test-decider" || ping.Version != "1.2.3" {
		t.Fatalf("ping %s: %+v, %v", rep.Data, ping, err)
	}
	if ping.Metadata["timbus_protocol"] != protocol.Version || ping.Metadata["sdkappid"] != "*" {
		t.Fatalf("ping metadata %v", ping.Metadata)
	}

	rep, err = e.nc.Request("$SRV.INFO.test-decider", nil, time.Second)
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	var info micro.Info
	if err := json.Unmarshal(rep.Data, &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Endpoints) != 1 || info.Endpoints[0].Subject != "timbus.decide.*."+createOA ||
		info.Endpoints[0].QueueGroup != "q-test" || info.Description != "for tests" {
		t.Fatalf("info %s", rep.Data)
	}

	e.ask(request(testApp, createOA, sample(t, createOA), soon()))
	// micro counts a request only after its handler returns, which is after
	// the reply has gone out, so the count may trail the reply a little.
	for limit := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		rep, err = e.nc.Request("$SRV.STATS.test-decider", nil, time.Second)
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		var stats micro.Stats
		if err := json.Unmarshal(rep.Data, &stats); err != nil || len(stats.Endpoints) != 1 {
			t.Fatalf("stats %s: %v", rep.Data, err)
		}
		ep := stats.Endpoints[0]
		if !strings.Contains(string(ep.Data), `"expired":0`) || ep.NumRequests > 1 {
			t.Fatalf("endpoint stats %+v data %s", ep, ep.Data)
		}
		if ep.NumRequests == 1 {
			return
		}
		if time.Now().After(limit) {
			t.Fatalf("endpoint stats %+v: the request was not counted within 2 s", ep)
		}
	}
}

// Stop stops taking callbacks but lets the one in hand finish and answer.
func TestDecider_StopWaitsForInFlight(t *testing.T) {
	e := newEnv(t, nil)
	started, release := make(chan struct{}), make(chan struct{})
	e.handle(createOA, func(context.Context, *deciders.Callback) (deciders.Verdict, error) {
		close(started)
		<-release
		return deciders.Deny(), nil
	})
	replies := make(chan *nats.Msg, 1)
	go func() {
		rep, err := ask.Request(e.nc, request(testApp, createOA, sample(t, createOA), time.Time{}), 5*time.Second)
		if err != nil {
			t.Errorf("in-flight request: %v", err)
		}
		replies <- rep
	}()
	<-started

	stopped := make(chan error, 1)
	go func() { stopped <- e.d.Stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a handler was running", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Stop: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return after the handler finished")
	}
	if rep := <-replies; rep == nil || string(rep.Data) != `{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":""}` {
		t.Fatalf("in-flight reply %v", rep)
	}

	if _, err := ask.Request(e.nc, request(testApp, createOA, sample(t, createOA), soon()), time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request after Stop: %v, want no responders", err)
	}
	if _, err := e.nc.Request("$SRV.PING.test-decider", nil, 200*time.Millisecond); err == nil {
		t.Fatal("ping answered after Stop")
	}
	if err := e.d.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := e.d.Handle(groupSend, func(context.Context, *deciders.Callback) (deciders.Verdict, error) {
		return deciders.Allow(), nil
	}); !errors.Is(err, deciders.ErrStopped) {
		t.Fatalf("Handle after Stop: %v, want ErrStopped", err)
	}
}

// Callbacks already queued when Stop is called are answered too, not lost.
func TestDecider_StopAnswersQueued(t *testing.T) {
	e := newEnv(t, nil)
	started, release := make(chan struct{}, 10), make(chan struct{})
	var done atomic.Int32
	e.handle(createOA, func(context.Context, *deciders.Callback) (deciders.Verdict, error) {
		defer done.Add(1)
		started <- struct{}{}
		<-release
		time.Sleep(20 * time.Millisecond) // long enough for a Stop that does not wait to return
		return deciders.Allow(), nil
	})
	const n = 5
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			rep, err := ask.Request(e.nc, request(testApp, createOA, sample(t, createOA), time.Time{}), 5*time.Second)
			if err == nil && string(rep.Data) != allowReply {
				err = fmt.Errorf("reply %s", rep.Data)
			}
			errs <- err
		})
	}
	<-started // one in hand, the others queued behind it
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	stopped := make(chan error, 1)
	go func() { stopped <- e.d.Stop() }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := done.Load(); got != n {
		t.Fatalf("Stop returned after %d of %d callbacks", got, n)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("queued request: %v", err)
		}
	}
}

func TestDecider_HandleErrors(t *testing.T) {
	e := newEnv(t, nil)
	ok := func(context.Context, *deciders.Callback) (deciders.Verdict, error) { return deciders.Allow(), nil }
	e.handle("Group.>", ok)
	tests := []struct {
		command string
		h       deciders.Handler
		want    string
	}{
		{"", ok, "want <Family>.<Command>"},
		{"Group", ok, "want <Family>.<Command>"},
		{"*", ok, "want <Family>.<Command>"},
		{"Group.CallbackBeforeSendMsg.x", ok, "want <Family>.<Command>"},
		{"Group.Callback Before", ok, "letters, digits"},
		{">.CallbackBeforeSendMsg", ok, "'>' must come last"},
		{"C2C.CallbackAfterSendMsg", ok, "is a notification"},
		{"Foo.Unknown", ok, "is a notification"},
		{"Group.CallbackBeforeCreateGroup", ok, `overlaps "Group.>"`},
		{"*.CallbackBeforeSendMsg", ok, `overlaps "Group.>"`},
		{">", ok, `overlaps "Group.>"`},
		{"C2C.CallbackBeforeSendMsg", nil, "nil handler"},
	}
	for _, tt := range tests {
		t.Run(tt.command, func(t *testing.T) {
			err := e.d.Handle(tt.command, tt.h)
			if !errors.Is(err, deciders.ErrCommand) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Handle(%q) = %v, want ErrCommand with %q", tt.command, err, tt.want)
			}
		})
	}
	if rep := e.ask(request(testApp, "Group.CallbackBeforeInviteJoinGroup", []byte(`{}`), soon())); string(rep.Data) != allowReply {
		t.Fatalf("Group.> reply %s", rep.Data)
	}
	// Unknown "Before" commands are forwarded by the bridge, so they can be handled.
	e.handle("Foo.CallbackBeforeBar", ok)
	e.handle("C2C.*", ok)
}

func TestConfig_Validate(t *testing.T) {
	valid := deciders.Config{Name: "my_decider-1", Version: "1.0.0"}
	tests := []struct {
		name string
		edit func(*deciders.Config)
		want string // "" for valid
	}{
		{name: "minimal"},
		{name: "everything", edit: func(c *deciders.Config) {
			c.Version, c.SubjectPrefix, c.SdkAppID, c.QueueGroup = "2.0.0-rc.1+build5", "acme.timbus", "1400000001", "q.1"
		}},
		{name: "all apps", edit: func(c *deciders.Config) { c.SdkAppID = "*" }},
		{name: "no name", edit: func(c *deciders.Config) { c.Name = "" }, want: "Name"},
		{name: "name with a dot", edit: func(c *deciders.Config) { c.Name = "a.b" }, want: "Name"},
		{name: "no version", edit: func(c *deciders.Config) { c.Version = "" }, want: "Version"},
		{name: "version not semver", edit: func(c *deciders.Config) { c.Version = "v1" }, want: "Version"},
		{name: "wildcard prefix", edit: func(c *deciders.Config) { c.SubjectPrefix = "timbus.>" }, want: "SubjectPrefix"},
		{name: "empty prefix token", edit: func(c *deciders.Config) { c.SubjectPrefix = "a..b" }, want: "SubjectPrefix"},
		{name: "app not a number", edit: func(c *deciders.Config) { c.SdkAppID = "app.1" }, want: "SdkAppID"},
		{name: "queue with space", edit: func(c *deciders.Config) { c.QueueGroup = "a b" }, want: "QueueGroup"},
		{name: "queue wildcard", edit: func(c *deciders.Config) { c.QueueGroup = "q.*" }, want: "QueueGroup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid
			if tt.edit != nil {
				tt.edit(&c)
			}
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, deciders.ErrConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want ErrConfig naming %s", err, tt.want)
			}
		})
	}
}

func TestNew_Errors(t *testing.T) {
	if _, err := deciders.New(nil, deciders.Config{Name: "x", Version: "1.0.0"}); !errors.Is(err, deciders.ErrConfig) {
		t.Fatalf("New(nil) = %v", err)
	}
	s := natstest.Run(t)
	if _, err := deciders.New(natstest.Connect(t, s), deciders.Config{Name: "x"}); !errors.Is(err, deciders.ErrConfig) {
		t.Fatalf("New without version = %v", err)
	}
}

// A decider whose connection closes under it still stops cleanly.
func TestDecider_StopAfterConnectionClosed(t *testing.T) {
	e := newEnv(t, nil)
	e.handle(createOA, func(context.Context, *deciders.Callback) (deciders.Verdict, error) { return deciders.Allow(), nil })
	e.dc.Close()
	done := make(chan error, 1)
	go func() { done <- e.d.Stop() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop hangs on a closed connection")
	}
}
