package main

import (
	"encoding/json"
	"errors"
	"os"
	"testing"
)

// sampleBody returns Tencent's documented sample callback with "Name" set to
// name, or removed when name is nil.
func sampleBody(t testing.TB, name any) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + command + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if name == nil {
		delete(m, "Name")
	} else {
		m["Name"] = name
	}
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPolicy_Decide(t *testing.T) {
	p := newPolicy([]string{"admin", " Boss ", "Tencent Official"}, 120042)
	tests := []struct {
		name      string
		body      []byte
		wantName  string
		wantCode  int
		wantReply string
		wantErr   bool
	}{
		{name: "sample allowed", body: sampleBody(t, "TestOfficialAccount"), wantName: "TestOfficialAccount",
			wantReply: `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`},
		{name: "reserved", body: sampleBody(t, "admin"), wantName: "admin", wantCode: 120042,
			wantReply: `{"ActionStatus":"OK","ErrorCode":120042,"ErrorInfo":"official account name \"admin\" is reserved"}`},
		{name: "upper case", body: sampleBody(t, "ADMIN"), wantName: "ADMIN", wantCode: 120042},
		{name: "surrounding space", body: sampleBody(t, "\t admin \n"), wantName: "\t admin \n", wantCode: 120042},
		{name: "list entry trimmed and folded", body: sampleBody(t, "boss"), wantName: "boss", wantCode: 120042},
		{name: "inner space kept", body: sampleBody(t, "tencent official"), wantName: "tencent official", wantCode: 120042},
		{name: "prefix is not the name", body: sampleBody(t, "administrator"), wantName: "administrator"},
		{name: "empty name", body: sampleBody(t, ""), wantName: ""},
		{name: "quote in name escaped", body: sampleBody(t, `a"b`), wantName: `a"b`,
			wantReply: `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`},
		{name: "no name", body: sampleBody(t, nil), wantErr: true},
		{name: "name not a string", body: sampleBody(t, 42), wantErr: true},
		{name: "name null", body: []byte(`{"Name":null}`), wantErr: true},
		{name: "lower-case member", body: []byte(`{"name":"admin"}`), wantErr: true},
		{name: "array", body: []byte(`["admin"]`), wantErr: true},
		{name: "null", body: []byte(`null`), wantErr: true},
		{name: "garbage", body: []byte(`not json`), wantErr: true},
		{name: "trailing garbage", body: []byte(`{"Name":"admin"}x`), wantErr: true},
		{name: "empty", body: nil, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.decide(tt.body)
			if tt.wantErr {
				if !errors.Is(err, errBadBody) {
					t.Fatalf("decide(%s) = %+v, %v; want errBadBody", tt.body, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("decide(%s): %v", tt.body, err)
			}
			if got.name != tt.wantName || got.verdict.Code() != tt.wantCode {
				t.Fatalf("decide(%s) = name %q code %d, want %q %d", tt.body, got.name, got.verdict.Code(), tt.wantName, tt.wantCode)
			}
			reply, err := got.verdict.Reply(command)
			if err != nil {
				t.Fatalf("decide(%s): verdict not valid for %s: %v", tt.body, command, err)
			}
			if tt.wantReply != "" && string(reply) != tt.wantReply {
				t.Fatalf("decide(%s) reply\n got %s\nwant %s", tt.body, reply, tt.wantReply)
			}
		})
	}
}

func TestPolicy_EmptyListAllowsAll(t *testing.T) {
	got, err := newPolicy(nil, 120005).decide(sampleBody(t, "admin"))
	if err != nil || got.verdict.Code() != 0 {
		t.Fatalf("decide = %+v, %v; want code 0", got, err)
	}
}
