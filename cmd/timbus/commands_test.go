package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// cellSep splits a table line: tabwriter pads columns with at least two
// spaces, and no cell holds two spaces in a row.
var cellSep = regexp.MustCompile(`\s{2,}`)

func TestCommandsTable(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want map[string][]string // command → its whole row
	}{
		{
			name: "defaults",
			want: map[string][]string{
				"OfficialAccount.CallbackBeforeCreateOfficialAccount": {"OfficialAccount.CallbackBeforeCreateOfficialAccount", "before", "0, 1, 120001-130000", "-", "timbus.decide.<SdkAppid>.OfficialAccount.CallbackBeforeCreateOfficialAccount"},
				"Group.CallbackAfterNewMemberJoin":                    {"Group.CallbackAfterNewMemberJoin", "after", "-", "-", "timbus.event.<SdkAppid>.Group.CallbackAfterNewMemberJoin"},
				"C2C.CallbackBeforeSendMsg":                           {"C2C.CallbackBeforeSendMsg", "before-modify", "0, 1, 2, 120001-130000", "MsgBody, CloudCustomData", "timbus.decide.<SdkAppid>.C2C.CallbackBeforeSendMsg"},
			},
		},
		{
			name: "app and prefix",
			args: []string{"--sdkappid", "1400000001", "--subject-prefix", "acme.im"},
			want: map[string][]string{
				"Chatbot.OnC2CSignalMessage": {"Chatbot.OnC2CSignalMessage", "reply-data", "0, 1", "RspData", "acme.im.decide.1400000001.Chatbot.OnC2CSignalMessage"},
				"Push.OfflinePush":           {"Push.OfflinePush", "after", "-", "-", "acme.im.event.1400000001.Push.OfflinePush"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runTimbus(t, context.Background(), append([]string{"commands"}, tt.args...)...)
			if code != exitOK {
				t.Fatalf("exit code %d, stderr %q", code, stderr)
			}
			lines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
			if got := cellSep.Split(lines[0], -1); strings.Join(got, "|") != "COMMAND|KIND|CODES|FIELDS|SUBJECT" {
				t.Errorf("header = %q", got)
			}
			rows := map[string][]string{}
			for _, line := range lines[1:] {
				cells := cellSep.Split(strings.TrimSpace(line), -1)
				if len(cells) != 5 {
					t.Errorf("row %q has %d cells, want 5", line, len(cells))
				}
				rows[cells[0]] = cells
			}
			if len(lines)-1 != 57 || len(rows) != 57 {
				t.Errorf("table has %d rows naming %d commands, want 57", len(lines)-1, len(rows))
			}
			for name, want := range tt.want {
				if got := strings.Join(rows[name], "|"); got != strings.Join(want, "|") {
					t.Errorf("row %s = %q, want %q", name, got, strings.Join(want, "|"))
				}
			}
		})
	}
}

func TestCommandsJSON(t *testing.T) {
	code, stdout, stderr := runTimbus(t, context.Background(), "commands", "--json", "--sdkappid", "1400000001")
	if code != exitOK {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	var rows []struct {
		Command     string
		Kind        string
		NeedsReply  bool `json:"needs_reply"`
		Codes       []int
		CustomCodes *struct{ Min, Max int } `json:"custom_codes"`
		Fields      []string
		Subject     string
	}
	if err := json.Unmarshal([]byte(stdout), &rows); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, stdout)
	}
	if len(rows) != 57 {
		t.Errorf("%d commands, want 57", len(rows))
	}
	found := 0
	for _, r := range rows {
		if r.Codes == nil || r.Fields == nil {
			t.Errorf("%s: codes and fields must be arrays, even empty", r.Command)
		}
		switch r.Command {
		case "Group.CallbackBeforeInviteJoinGroup":
			found++
			if !r.NeedsReply || r.Kind != "before" || r.CustomCodes == nil || r.CustomCodes.Min != 10100 || r.CustomCodes.Max != 10200 ||
				strings.Join(r.Fields, ",") != "RefusedMembers_Account" ||
				r.Subject != "timbus.decide.1400000001.Group.CallbackBeforeInviteJoinGroup" {
				t.Errorf("wrong row: %+v", r)
			}
		case "State.StateChange":
			found++
			if r.NeedsReply || r.Kind != "after" || len(r.Codes) != 0 || r.CustomCodes != nil ||
				r.Subject != "timbus.event.1400000001.State.StateChange" {
				t.Errorf("wrong row: %+v", r)
			}
		}
	}
	if found != 2 {
		t.Errorf("found %d of the 2 commands checked", found)
	}
}

func TestCommandsRefusesBadInput(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--sdkappid", "abc"}, "sdkappid=abc"},
		{[]string{"--subject-prefix", "a b"}, "subject-prefix"},
		{[]string{"--subject-prefix", "timbus.>"}, "subject-prefix"},
		{[]string{"--bogus"}, "bogus"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runTimbus(t, context.Background(), append([]string{"commands"}, tt.args...)...)
			if code != exitUsage {
				t.Errorf("exit code = %d, want %d", code, exitUsage)
			}
			if stdout != "" || !strings.Contains(stderr, tt.want) {
				t.Errorf("stdout %q, stderr %q; want only an error mentioning %q", stdout, stderr, tt.want)
			}
		})
	}
}
