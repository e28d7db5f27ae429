package bridge

import (
	"errors"
	"strings"
	"testing"
)

func TestRedactURLs(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://h3:4222", "nats://h3:4222"},
		{"nats://u:secret@h1:4222", "nats://u:REDACTED@h1:4222"},
		{"nats://tok3n@h2:4222", "nats://REDACTED@h2:4222"},
		{"nats://u:se%zzcret@h1:4222", "nats://REDACTED@h1:4222"}, // does not parse
		{"u:secret@h1:4222", "REDACTED@h1:4222"},
		{"nats://u:a@b@h1:4222", "nats://u:REDACTED@h1:4222"},
		{"nats://u:secret@h1:4222, nats://tok@h2", "nats://u:REDACTED@h1:4222,nats://REDACTED@h2"},
	}
	for _, tt := range tests {
		if got := RedactURLs(tt.in); got != tt.want {
			t.Errorf("RedactURLs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestURLErrorKeepsCause(t *testing.T) {
	cause := errors.New(`parse "nats://u:secret@h": bad`)
	err := error(urlError{cause, "nats://u:secret@h"})
	if strings.Contains(err.Error(), "secret") || !errors.Is(err, cause) {
		t.Errorf("%v; errors.Is = %v", err, errors.Is(err, cause))
	}
}

func TestRedactSign(t *testing.T) {
	tests := []struct{ in, want string }{
		{"no signature here", "no signature here"},
		{"SdkAppid=1&Sign=abc123&RequestTime=1", "SdkAppid=1&Sign=REDACTED&RequestTime=1"},
		{"Sign=abc", "Sign=REDACTED"},
		{`"POST /?sign=ABC HTTP/1.1\r\n"`, `"POST /?sign=REDACTED HTTP/1.1\r\n"`},
		{"a=1&SIGN=x&Sign=y", "a=1&SIGN=REDACTED&Sign=REDACTED"},
		{"NoSign=keep&Sign=", "NoSign=keep&Sign="},
		{"Designation=x", "Designation=x"},
	}
	for _, tt := range tests {
		if got := string(redactSign([]byte(tt.in))); got != tt.want {
			t.Errorf("redactSign(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
