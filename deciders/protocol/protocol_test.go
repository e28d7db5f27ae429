package protocol

import (
	"testing"
	"time"
)

func TestSubject(t *testing.T) {
	if got := Subject("timbus", KindDecide, "1400000001", "Group.CallbackBeforeSendMsg"); got != "timbus.decide.1400000001.Group.CallbackBeforeSendMsg" {
		t.Errorf("got %s", got)
	}
}

func TestRequestHeaderRoundTrip(t *testing.T) {
	r := Request{RequestID: "abc-1", SdkAppID: "1400000001", Command: "Group.CallbackBeforeSendMsg",
		ClientIP: "1.2.3.4", OptPlatform: "iOS", Deadline: time.UnixMilli(1764203861123)}
	h := r.Header()
	if h[HeaderDeadline][0] != "1764203861123" || len(h) != 4 {
		t.Errorf("header %v", h)
	}
	if got := ParseRequest(Subject("prod.timbus", KindDecide, r.SdkAppID, r.Command), h); got != r {
		t.Errorf("round trip: %+v, want %+v", got, r)
	}
	bare := Request{RequestID: "x", SdkAppID: "1", Command: "A.B"}.Header()
	for _, k := range []string{HeaderClientIP, HeaderOptPlatform, HeaderDeadline} {
		if _, ok := bare[k]; ok {
			t.Errorf("%s set without a value", k)
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

func TestParseDeadline(t *testing.T) {
	for v, ok := range map[string]bool{"1764203861123": true, "": false, "soon": false, "-5": false, "1.5": false} {
		if _, got := ParseDeadline(v); got != ok {
			t.Errorf("ParseDeadline(%q) ok = %v", v, got)
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
