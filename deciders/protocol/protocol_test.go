package protocol

import (
	"strings"
	"testing"
	"time"
)

func TestSubject(t *testing.T) {
	if got := Subject("timbus", KindDecide, "1400000001", "Group.CallbackBeforeSendMsg"); got != "timbus.decide.1400000001.Group.CallbackBeforeSendMsg" {
		t.Errorf("got %s", got)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	r := Request{RequestID: "abc-1", SdkAppID: "1400000001", Command: "Group.CallbackBeforeSendMsg",
		ClientIP: "1.2.3.4", OptPlatform: "iOS", Deadline: time.UnixMilli(1764203861123)}
	reply := string(AppendReply(nil, "_INBOX.x7", r.Deadline, r.RequestID, "9_kq"))
	if reply != "_INBOX.x7.1764203861123.abc-1.9_kq" {
		t.Errorf("reply subject %s", reply)
	}
	h := r.Header()
	if len(h) != 2 {
		t.Errorf("header %v", h)
	}
	if got := ParseRequest(Subject("prod.timbus", KindDecide, r.SdkAppID, r.Command), reply, h); got != r {
		t.Errorf("round trip: %+v, want %+v", got, r)
	}
	if bare := (Request{RequestID: "x", SdkAppID: "1", Command: "A.B"}).Header(); len(bare) != 0 {
		t.Errorf("headers without values: %v", bare)
	}
	// An event: no reply subject, the request id in its header.
	event := ParseRequest("timbus.event.1.A.B", "", map[string][]string{HeaderRequestID: {"ev-1"}})
	if event.RequestID != "ev-1" || !event.Deadline.IsZero() || event.Command != "A.B" {
		t.Errorf("event: %+v", event)
	}
}

func TestParseReply(t *testing.T) {
	tests := []struct {
		reply    string
		deadline int64
		id       string
	}{
		{"_INBOX.abc.1764203861123.cb87a6f6d2cb-1f.3_x1", 1764203861123, "cb87a6f6d2cb-1f"},
		{"a.1.b.c", 1, "b"},
		{"_INBOX.abc.def", 0, ""},                     // nats request's own inbox
		{"_INBOX.abc", 0, ""},                         // too short
		{"1764203861123.id.tok", 0, ""},               // no inbox
		{"_INBOX.soon.id.tok", 0, ""},                 // not a number
		{"_INBOX.-5.id.tok", 0, ""},                   // before 1970
		{"_INBOX.+5.id.tok", 0, ""},                   // signed
		{"_INBOX.0.id.tok", 0, ""},                    // zero
		{"_INBOX.99999999999999999999.id.tok", 0, ""}, // overflow
		{"_INBOX.5..tok", 0, ""},                      // empty id
		{"_INBOX.5.id.", 0, ""},                       // empty token
	}
	for _, tt := range tests {
		deadline, id, ok := ParseReply(tt.reply)
		if ok != (tt.deadline > 0) || id != tt.id || (ok && deadline.UnixMilli() != tt.deadline) {
			t.Errorf("ParseReply(%q) = %v, %q, %v", tt.reply, deadline, id, ok)
		}
	}
}

func TestValidToken(t *testing.T) {
	for s, want := range map[string]bool{"cb87a6f6d2cb-1f": true, "replay-x_1": true, "": false, "a.b": false, "a b": false, "*": false, "a>": false, "a\n": false} {
		if ValidToken(s) != want {
			t.Errorf("ValidToken(%q) = %v", s, !want)
		}
	}
}

func TestParseSubject(t *testing.T) {
	tests := []struct {
		subject            string
		kind, app, command string
	}{
		{"timbus.decide.1400000001.Group.CallbackBeforeSendMsg", KindDecide, "1400000001", "Group.CallbackBeforeSendMsg"},
		{"prod.eu.timbus.event.1400000002.C2C.CallbackAfterSendMsg", KindEvent, "1400000002", "C2C.CallbackAfterSendMsg"},
		{"timbus.audit.1.A.B", KindAudit, "1", "A.B"},
		{"decide.1400000001.Group.CallbackBeforeSendMsg", "", "", ""}, // no prefix
		{"timbus.decide.1400000001.CallbackBeforeSendMsg", "", "", ""},
		{"timbus.decide..Group.CallbackBeforeSendMsg", "", "", ""},
		{"timbus.decide.1400000001.Group.", "", "", ""},
		{".decide.1400000001.Group.CallbackBeforeSendMsg", "", "", ""},
		{"a..decide.1.Group.X", "", "", ""},
		{"", "", "", ""},
	}
	for _, tt := range tests {
		kind, app, command, ok := ParseSubject(tt.subject)
		if ok != (tt.kind != "") || kind != tt.kind || app != tt.app || command != tt.command {
			t.Errorf("ParseSubject(%q) = %q, %q, %q, %v; want %q, %q, %q", tt.subject, kind, app, command, ok, tt.kind, tt.app, tt.command)
		}
		if ok && Subject(tt.subject[:len(tt.subject)-len(kind)-len(app)-len(command)-3], kind, app, command) != tt.subject {
			t.Errorf("ParseSubject(%q) does not round-trip", tt.subject)
		}
	}
}

func TestValidPrefix(t *testing.T) {
	for p, ok := range map[string]bool{"timbus": true, "prod.timbus": true, "": false, "a..b": false, "a.*": false, "a.>": false, "a b": false} {
		if ValidPrefix(p) != ok {
			t.Errorf("ValidPrefix(%q) != %v", p, ok)
		}
	}
}

// FuzzParseSubject: what ParseSubject accepts, Subject writes back the same.
func FuzzParseSubject(f *testing.F) {
	f.Add("timbus.decide.1400000001.Group.CallbackBeforeSendMsg")
	f.Add("a.b.event.1.C2C.X")
	f.Add("..decide.1.A.B")
	f.Fuzz(func(t *testing.T, subject string) {
		kind, app, command, ok := ParseSubject(subject)
		if !ok {
			return
		}
		prefix := subject[:len(subject)-len(kind)-len(app)-len(command)-3]
		if prefix == "" || kind == "" || app == "" || Subject(prefix, kind, app, command) != subject {
			t.Fatalf("ParseSubject(%q) = %q, %q, %q (prefix %q)", subject, kind, app, command, prefix)
		}
	})
}

// FuzzParseReply: what ParseReply accepts, AppendReply writes back the same.
func FuzzParseReply(f *testing.F) {
	f.Add("_INBOX.abc.1764203861123.cb87a6f6d2cb-1f.3_x1")
	f.Add("a.0012.b.c")
	f.Fuzz(func(t *testing.T, reply string) {
		deadline, id, ok := ParseReply(reply)
		if !ok {
			return
		}
		if id == "" || strings.Contains(id, ".") || deadline.UnixMilli() <= 0 {
			t.Fatalf("ParseReply(%q) = %v, %q", reply, deadline, id)
		}
		inbox := reply[:strings.LastIndexByte(reply[:strings.LastIndexByte(reply[:strings.LastIndexByte(reply, '.')], '.')], '.')]
		token := reply[strings.LastIndexByte(reply, '.')+1:]
		again := string(AppendReply(nil, inbox, deadline, id, token))
		if d2, id2, ok2 := ParseReply(again); !ok2 || !d2.Equal(deadline) || id2 != id {
			t.Fatalf("%q: written back as %q, read as %v %q %v", reply, again, d2, id2, ok2)
		}
	})
}

var sinkRequest Request

// BenchmarkParseRequest is what a Go decider spends reading each request's
// subject and reply subject.
func BenchmarkParseRequest(b *testing.B) {
	subject := "timbus.decide.1400000001.OfficialAccount.CallbackBeforeCreateOfficialAccount"
	reply := "_INBOX.cA4PuRnJBhcyRNA3o5ACo0.1796109681710.d63c9ab870df-1f.1_1398cbzxcy31x"
	for b.Loop() {
		sinkRequest = ParseRequest(subject, reply, nil)
	}
}

func TestEachRecord(t *testing.T) {
	seq := func(records ...string) string {
		var b strings.Builder
		for _, r := range records {
			b.WriteString("\x1e" + r + "\n")
		}
		return b.String()
	}
	tests := []struct {
		message string
		want    []string
	}{
		{`{"a":1}`, []string{`{"a":1}`}},
		{"{\n \"a\": 1\n}", []string{"{\n \"a\": 1\n}"}}, // one record holding line feeds
		{seq(`{"a":1}`, "{\"b\":\n2}\n", `{"c":3}`), []string{`{"a":1}`, "{\"b\":\n2}", `{"c":3}`}},
		{seq(`{"a":1}`), []string{`{"a":1}`}},
		{"", nil},
		{"\x1e\n\x1e{}\n", []string{"{}"}},
	}
	for _, tt := range tests {
		var got []string
		EachRecord([]byte(tt.message), func(r []byte) bool { got = append(got, string(r)); return true })
		if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
			t.Errorf("EachRecord(%q) = %q, want %q", tt.message, got, tt.want)
		}
	}
	n := 0
	EachRecord([]byte(seq("{}", "{}", "{}")), func([]byte) bool { n++; return n < 2 })
	if n != 2 {
		t.Errorf("EachRecord went on after fn returned false: %d calls", n)
	}
}
