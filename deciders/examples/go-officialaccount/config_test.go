package main

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestParseConfig(t *testing.T) {
	defaults := config{
		NATSURL:       "nats://127.0.0.1:4222",
		SubjectPrefix: "timbus",
		SdkAppID:      "*",
		Reserved:      []string{"admin", "official", "tencent", "timbus"},
		Code:          120005,
		QueueGroup:    "timbus-officialaccount",
		LogLevel:      zerolog.InfoLevel,
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    func(*config)
		wantErr string
	}{
		{name: "defaults"},
		{
			name: "env NATS_URL",
			env:  map[string]string{"NATS_URL": "nats://nats:4222"},
			want: func(c *config) { c.NATSURL = "nats://nats:4222" },
		},
		{
			name: "flag beats env",
			args: []string{"--nats-url", "nats://flag:4222"},
			env:  map[string]string{"NATS_URL": "nats://env:4222"},
			want: func(c *config) { c.NATSURL = "nats://flag:4222" },
		},
		{
			name: "every flag",
			args: []string{"--subject-prefix", "acme.timbus", "--sdkappid", "1400000001", "--reserved", " Admin, boss,,",
				"--code", "130000", "--queue", "q1", "--log-level", "debug"},
			want: func(c *config) {
				c.SubjectPrefix, c.SdkAppID, c.Reserved, c.Code, c.QueueGroup, c.LogLevel =
					"acme.timbus", "1400000001", []string{"Admin", "boss"}, 130000, "q1", zerolog.DebugLevel
			},
		},
		{name: "lowest code", args: []string{"--code", "120001"}, want: func(c *config) { c.Code = 120001 }},
		{name: "empty reserved list", args: []string{"--reserved", ""}, want: func(c *config) { c.Reserved = nil }},
		{name: "code 1", args: []string{"--code", "1"}, wantErr: "120001-130000"},
		{name: "code below range", args: []string{"--code", "120000"}, wantErr: "120001-130000"},
		{name: "code above range", args: []string{"--code", "130001"}, wantErr: "120001-130000"},
		{name: "code not a number", args: []string{"--code", "deny"}, wantErr: "invalid value"},
		{name: "wildcard prefix", args: []string{"--subject-prefix", "timbus.>"}, wantErr: "--subject-prefix"},
		{name: "empty prefix token", args: []string{"--subject-prefix", "a..b"}, wantErr: "--subject-prefix"},
		{name: "sdkappid not a number", args: []string{"--sdkappid", "app.1"}, wantErr: "--sdkappid"},
		{name: "empty queue", args: []string{"--queue", ""}, wantErr: "--queue"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, wantErr: "--log-level"},
		{name: "stray argument", args: []string{"admin"}, wantErr: "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			got, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, &stderr)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("parseConfig(%q) = %+v, want an error containing %q", tt.args, got, tt.wantErr)
				}
				if msg := err.Error() + stderr.String(); !strings.Contains(msg, tt.wantErr) {
					t.Fatalf("parseConfig(%q) error %q, stderr %q; want %q in them", tt.args, err, stderr.String(), tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseConfig(%q): %v", tt.args, err)
			}
			want := defaults
			want.Reserved = slices.Clone(defaults.Reserved)
			if tt.want != nil {
				tt.want(&want)
			}
			if !equalConfig(got, want) {
				t.Fatalf("parseConfig(%q)\n got %+v\nwant %+v", tt.args, got, want)
			}
		})
	}
}

func equalConfig(a, b config) bool {
	ra, rb := a.Reserved, b.Reserved
	a.Reserved, b.Reserved = nil, nil
	return reflect.DeepEqual(a, b) && slices.Equal(ra, rb)
}

// A bad code must stop the program before it connects anywhere, with the
// usage exit code and a message naming the range.
func TestRun_RefusesBadCode(t *testing.T) {
	for _, code := range []string{"0", "1", "120000", "130001", "-120005"} {
		t.Run(code, func(t *testing.T) {
			var stderr bytes.Buffer
			// An address nothing listens on: reaching it would mean run got past validation.
			env := func(string) string { return "nats://127.0.0.1:1" }
			if got := run([]string{"--code", code}, env, &stderr); got != 2 {
				t.Fatalf("run --code %s = %d, want 2; stderr: %s", code, got, &stderr)
			}
			if !strings.Contains(stderr.String(), "120001-130000") {
				t.Fatalf("stderr %q does not name the valid range", &stderr)
			}
		})
	}
}

func TestRun_Help(t *testing.T) {
	var stderr bytes.Buffer
	if got := run([]string{"-h"}, func(string) string { return "" }, &stderr); got != 0 {
		t.Fatalf("run -h = %d, want 0", got)
	}
	if !strings.Contains(stderr.String(), "--reserved") && !strings.Contains(stderr.String(), "-reserved") {
		t.Fatalf("usage does not list -reserved:\n%s", &stderr)
	}
}
