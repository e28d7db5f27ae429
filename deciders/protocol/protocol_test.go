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
	if h[HeaderDeadline][0] != "1764203861123" || h[HeaderProtocol][0] != Version {
		t.Errorf("header %v", h)
	}
	if got := ParseRequest(h); got != r {
		t.Errorf("round trip: %+v, want %+v", got, r)
	}
	bare := Request{RequestID: "x", SdkAppID: "1", Command: "A.B"}.Header()
	for _, k := range []string{HeaderClientIP, HeaderOptPlatform, HeaderDeadline} {
		if _, ok := bare[k]; ok {
			t.Errorf("%s set without a value", k)
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
