package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/timbus-dev/timbus/deciders"
	"github.com/timbus-dev/timbus/internal/samples"
)

func testFilter(words ...string) *filter {
	return newFilter(words, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func TestFilter_Mask(t *testing.T) {
	f := testFilter("spam", " scam ", "", "scam artist", "垃圾", "Straße")
	tests := []struct {
		in, want string
		n        int
	}{
		{"hello", "hello", 0},
		{"spam", "****", 1},
		{"this is spam", "this is ****", 1},
		{"Spam and scam, not spammer: SPAM!", "**** and ****, not spammer: ****!", 3},
		{"(scam)", "(****)", 1},
		{"spam-scam", "****-****", 2},
		{"spamscam", "spamscam", 0},
		{"antispam", "antispam", 0},
		{"spam2", "spam2", 0},
		{"a scam artist", "a ***********", 1},
		{"这是垃圾信息", "这是**信息", 1},
		{"STRASSE", "STRASSE", 0},
		{"straße!", "******!", 1},
		{"spam\nspam", "****\n****", 2},
		{"", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, n := f.mask(tt.in)
			if got != tt.want || n != tt.n {
				t.Fatalf("mask(%q) = %q, %d; want %q, %d", tt.in, got, n, tt.want, tt.n)
			}
		})
	}
	if got, n := testFilter().mask("spam"); got != "spam" || n != 0 {
		t.Fatalf("empty list masked %q", got)
	}
}

// body returns the documented sample with its MsgBody replaced (raw JSON).
func body(t *testing.T, msgBody string) []byte {
	t.Helper()
	sample, ok := samples.Request(command)
	if !ok {
		t.Fatal("no sample")
	}
	if msgBody == "" {
		return sample
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(sample, &m); err != nil {
		t.Fatal(err)
	}
	m["MsgBody"] = json.RawMessage(msgBody)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	face   = `{"MsgType":"TIMFaceElem","MsgContent":{"Index":1,"Data":"spam"}}`
	custom = `{"MsgType":"TIMCustomElem","MsgContent":{"Data":"message","Desc":"scam","Ext":"url","Sound":"dingdong.aiff"}}`
)

func TestFilter_Decide(t *testing.T) {
	f := testFilter("spam", "scam")
	tests := []struct {
		name     string
		body     []byte
		want     string // the reply
		wantCode int    // the error code when the filter cannot decide
	}{
		{name: "documented sample", body: body(t, ""), want: `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`},
		{name: "banned words masked, other elements unchanged",
			body: body(t, `[{"MsgType":"TIMTextElem","MsgContent":{"Text":"Spam and scam!"}},`+face+`,`+
				`{"MsgType":"TIMTextElem","MsgContent":{"Text":"nothing bad here"}},`+custom+`]`),
			want: `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgBody":[` +
				`{"MsgType":"TIMTextElem","MsgContent":{"Text":"**** and ****!"}},` + face + `,` +
				`{"MsgType":"TIMTextElem","MsgContent":{"Text":"nothing bad here"}},` + custom + `]}`},
		{name: "only text elements are read", body: body(t, `[`+face+`,`+custom+`]`),
			want: `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`},
		{name: "no MsgBody", body: []byte(`{"CallbackCommand":"Group.CallbackBeforeSendMsg"}`), wantCode: 400},
		{name: "MsgBody not an array", body: body(t, face), wantCode: 400},
		{name: "text element without text", body: body(t, `[{"MsgType":"TIMTextElem","MsgContent":{"Text":1}}]`), wantCode: 400},
		{name: "not JSON", body: []byte(`<xml/>`), wantCode: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cb := &deciders.Callback{Body: tt.body}
			cb.Command = command
			v, err := f.decide(context.Background(), cb)
			if tt.wantCode != 0 {
				var de deciders.Error
				if !errors.As(err, &de) || de.Code != tt.wantCode || de.Description == "" {
					t.Fatalf("decide = %v, want a deciders.Error with code %d", err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatalf("decide: %v", err)
			}
			reply, err := v.Reply(command)
			if err != nil {
				t.Fatalf("verdict not valid for %s: %v", command, err)
			}
			if string(reply) != tt.want {
				t.Fatalf("reply\n got %s\nwant %s", reply, tt.want)
			}
		})
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(config) bool
		wantErr string
	}{
		{name: "defaults", check: func(c config) bool {
			return c.NATSURL == "nats://127.0.0.1:4222" && c.Decider.SubjectPrefix == "timbus" &&
				c.Decider.SdkAppID == "*" && strings.Join(c.Banned, ",") == "spam,scam"
		}},
		{name: "env", env: map[string]string{"NATS_URL": "nats://nats:4222"},
			check: func(c config) bool { return c.NATSURL == "nats://nats:4222" }},
		{name: "flags", args: []string{"--nats-url", "nats://x:1", "--subject-prefix", "acme.timbus", "--sdkappid", "1400000001", "--banned", " foo, ,bar baz,"},
			env: map[string]string{"NATS_URL": "nats://nats:4222"},
			check: func(c config) bool {
				return c.NATSURL == "nats://x:1" && c.Decider.SubjectPrefix == "acme.timbus" &&
					c.Decider.SdkAppID == "1400000001" && strings.Join(c.Banned, ",") == "foo,bar baz"
			}},
		{name: "bad prefix", args: []string{"--subject-prefix", "timbus.>"}, wantErr: "SubjectPrefix"},
		{name: "empty prefix", args: []string{"--subject-prefix", ""}, wantErr: "--subject-prefix"},
		{name: "bad app", args: []string{"--sdkappid", "app"}, wantErr: "SdkAppID"},
		{name: "empty url", args: []string{"--nats-url", ""}, wantErr: "--nats-url"},
		{name: "stray argument", args: []string{"spam"}, wantErr: "unexpected argument"},
		{name: "unknown flag", args: []string{"--blocked", "x"}, wantErr: "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr strings.Builder
			c, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, &stderr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error()+stderr.String(), tt.wantErr) {
					t.Fatalf("parseConfig(%q) = %v, stderr %q; want %q", tt.args, err, stderr.String(), tt.wantErr)
				}
				return
			}
			if err != nil || !tt.check(c) {
				t.Fatalf("parseConfig(%q) = %+v, %v", tt.args, c, err)
			}
		})
	}
	var stderr strings.Builder
	if got := run([]string{"--sdkappid", "x"}, func(string) string { return "" }, &stderr); got != 2 {
		t.Fatalf("run with a bad flag = %d, want 2", got)
	}
	if got := run([]string{"-h"}, func(string) string { return "" }, &stderr); got != 0 || !strings.Contains(stderr.String(), "-banned") {
		t.Fatalf("run -h = %d; usage:\n%s", got, &stderr)
	}
}
