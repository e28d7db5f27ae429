package deciders_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/timbus-dev/timbus/deciders"
	"github.com/timbus-dev/timbus/deciders/catalog"
	"github.com/timbus-dev/timbus/internal/samples"
)

func TestVerdict_MarshalJSON(t *testing.T) {
	face := deciders.MsgElem{MsgType: "TIMFaceElem", MsgContent: json.RawMessage(`{"Index": 1, "Data": "x"}`)}
	tests := []struct {
		name string
		v    deciders.Verdict
		want string
	}{
		{"zero", deciders.Verdict{}, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`},
		{"allow", deciders.Allow(), `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`},
		{"deny", deciders.Deny(), `{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":""}`},
		{"deny with", deciders.DenyWith(120005, `name "admin" is reserved`),
			`{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"name \"admin\" is reserved"}`},
		{"drop", deciders.Drop(), `{"ActionStatus":"OK","ErrorCode":2,"ErrorInfo":""}`},
		{"modify", deciders.Modify([]deciders.MsgElem{deciders.TextElem("***"), face}),
			`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"***"}},{"MsgType":"TIMFaceElem","MsgContent":{"Index":1,"Data":"x"}}]}`},
		{"modify nothing", deciders.Modify(nil), `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgBody":[]}`},
		{"modify and custom data", deciders.Modify([]deciders.MsgElem{deciders.TextElem("hi")}).WithCloudCustomData("cd"),
			`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}],"CloudCustomData":"cd"}`},
		{"custom data only, emptied", deciders.Allow().WithCloudCustomData(""),
			`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","CloudCustomData":""}`},
		{"refuse members", deciders.RefuseMembers("a", "b"),
			`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","RefusedMembers_Account":["a","b"]}`},
		{"refuse no members", deciders.RefuseMembers(),
			`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","RefusedMembers_Account":[]}`},
		{"refuse subscribers", deciders.RefuseSubscribers("c"),
			`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","RefusedSubscribers_Account":["c"]}`},
		{"result items", deciders.ResultItems(
			deciders.ResultItem{ToAccount: "id1"},
			deciders.ResultItem{ToAccount: "id2", ResultCode: 38001, ResultInfo: "blocked"}),
			`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ResultItem":[{"To_Account":"id1","ResultCode":0,"ResultInfo":""},{"To_Account":"id2","ResultCode":38001,"ResultInfo":"blocked"}]}`},
		{"rsp data", deciders.RspData(`{"k":1}`), `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","RspData":"{\"k\":1}"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("json\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// The helpers render Tencent's documented replies.
func TestVerdict_MatchesDocumentedReplies(t *testing.T) {
	custom := deciders.MsgElem{MsgType: "TIMCustomElem",
		MsgContent: json.RawMessage(`{"Desc": " CustomElement.MemberLevel ", "Data": " LV1"}`)}
	verdicts := map[string]deciders.Verdict{
		"C2C.CallbackBeforeSendMsg.modify": deciders.Modify([]deciders.MsgElem{deciders.TextElem("red packet"), custom}).
			WithCloudCustomData("your new cloud custom data"),
		"Chatbot.OnC2CSignalMessage.reply":                         deciders.RspData(`{"msg":"这是回复给机器人的自定义透传内容"}`),
		"Group.CallbackBeforeInviteJoinGroup.partial":              deciders.RefuseMembers("jared"),
		"OfficialAccount.CallbackBeforeAddSubscriber.partial":      deciders.RefuseSubscribers("jared"),
		"OfficialAccount.CallbackBeforeCreateOfficialAccount.deny": deciders.Deny(),
		"Sns.CallbackPrevFriendAdd.allow": deciders.ResultItems(
			deciders.ResultItem{ToAccount: "id1"}, deciders.ResultItem{ToAccount: "id2"}),
	}
	for _, s := range samples.Replies() {
		t.Run(s.Name, func(t *testing.T) {
			v, ok := verdicts[s.Name]
			if !ok {
				t.Fatalf("no verdict for documented reply %s", s.Name)
			}
			got, err := v.Reply(s.Command)
			if err != nil {
				t.Fatalf("Reply(%s): %v", s.Command, err)
			}
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(s.Body, &w); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("reply\n got %s\nwant %s", got, s.Body)
			}
		})
	}
}

func TestVerdict_Reply(t *testing.T) {
	text := []deciders.MsgElem{deciders.TextElem("hi")}
	tests := []struct {
		name    string
		command string
		v       deciders.Verdict
		wantErr string // "" for a valid verdict
	}{
		{name: "allow", command: "Group.CallbackBeforeSendMsg", v: deciders.Allow()},
		{name: "group custom code", command: "Group.CallbackBeforeSendMsg", v: deciders.DenyWith(10101, "read-only")},
		{name: "drop message", command: "C2C.CallbackBeforeSendMsg", v: deciders.Drop()},
		{name: "modify", command: "OfficialAccount.CallbackBeforeSendMsg", v: deciders.Modify(text)},
		{name: "unknown command takes any code", command: "Foo.CallbackBeforeBar", v: deciders.DenyWith(5, "")},
		{name: "code outside the range", command: "OfficialAccount.CallbackBeforeCreateOfficialAccount", v: deciders.DenyWith(5, "no"),
			wantErr: "ErrorCode 5 is not valid for this command (valid: 0, 1, 120001-130000)"},
		{name: "group code on c2c", command: "C2C.CallbackBeforeSendMsg", v: deciders.DenyWith(10101, "no"),
			wantErr: "ErrorCode 10101 is not valid"},
		{name: "drop a group creation", command: "Group.CallbackBeforeCreateGroup", v: deciders.Drop(),
			wantErr: "ErrorCode 2 is not valid"},
		{name: "modify what is not a message", command: "Group.CallbackBeforeCreateGroup", v: deciders.Modify(text),
			wantErr: `"MsgBody" is not a reply field of this command`},
		{name: "modify with nothing", command: "Group.CallbackBeforeSendMsg", v: deciders.Modify(nil),
			wantErr: `"MsgBody" must be a non-empty array`},
		{name: "modify with a deny code", command: "Group.CallbackBeforeSendMsg", v: deciders.DenyWith(10101, "").WithCloudCustomData("x"),
			wantErr: "MsgBody and CloudCustomData need ErrorCode 0"},
		{name: "element without content", command: "Group.CallbackBeforeSendMsg",
			v: deciders.Modify([]deciders.MsgElem{{MsgType: "TIMTextElem"}}), wantErr: `"MsgBody" must be`},
		{name: "content not JSON", command: "Group.CallbackBeforeSendMsg",
			v: deciders.Modify([]deciders.MsgElem{{MsgType: "TIMTextElem", MsgContent: json.RawMessage(`{`)}}), wantErr: "MsgContent"},
		{name: "sns top-level deny", command: "Sns.CallbackPrevFriendAdd", v: deciders.Deny(),
			wantErr: "refuse users through ResultItem"},
		{name: "sns per user", command: "Sns.CallbackPrevFriendAdd",
			v: deciders.ResultItems(deciders.ResultItem{ToAccount: "a", ResultCode: 38001, ResultInfo: "no"})},
		{name: "sns code out of range", command: "Sns.CallbackPrevFriendResponse",
			v: deciders.ResultItems(deciders.ResultItem{ToAccount: "a", ResultCode: 120001}), wantErr: `"ResultItem" must be`},
		{name: "refused members elsewhere", command: "Group.CallbackBeforeCreateGroup", v: deciders.RefuseMembers("a"),
			wantErr: `"RefusedMembers_Account" is not a reply field`},
		{name: "chatbot data", command: "Chatbot.OnC2CSignalMessage", v: deciders.RspData("x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.v.Reply(tt.command)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Reply(%s): %v", tt.command, err)
				}
				want, _ := json.Marshal(tt.v)
				if string(b) != string(want) {
					t.Fatalf("Reply = %s, want %s", b, want)
				}
				return
			}
			if !errors.Is(err, deciders.ErrInvalidVerdict) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Reply(%s) = %s, %v; want ErrInvalidVerdict naming %q", tt.command, b, err, tt.wantErr)
			}
		})
	}
}

func TestVerdict_ReplyErrorHasReason(t *testing.T) {
	_, err := deciders.DenyWith(5, "").Reply("OfficialAccount.CallbackBeforeCreateOfficialAccount")
	var re *catalog.ReplyError
	if !errors.As(err, &re) || re.Command != "OfficialAccount.CallbackBeforeCreateOfficialAccount" || !strings.Contains(re.Reason, "ErrorCode 5") {
		t.Fatalf("err %v: want a *catalog.ReplyError with the reason", err)
	}
}

func TestVerdict_Accessors(t *testing.T) {
	v := deciders.DenyWith(10101, "read-only")
	if v.Code() != 10101 || v.Info() != "read-only" {
		t.Fatalf("Code, Info = %d, %q", v.Code(), v.Info())
	}
	if v := deciders.Modify(nil).WithCloudCustomData("x"); v.Code() != 0 {
		t.Fatalf("Modify code %d", v.Code())
	}
}

// TestVerdictReply_PlainIsMarshalJSON: the shortcut for verdicts with a code
// alone writes what MarshalJSON writes, for every command and code.
func TestVerdictReply_PlainIsMarshalJSON(t *testing.T) {
	commands := append(catalog.All(), catalog.Unlisted("Some.CallbackBeforeThing"))
	for _, cmd := range commands {
		codes := []int{0, 1, 2, 3, cmd.Custom.Min, cmd.Custom.Max, 120001, -1}
		for _, code := range codes {
			v := deciders.DenyWith(code, "")
			got, err := v.Reply(cmd.Name)
			want, merr := v.MarshalJSON()
			if merr != nil {
				t.Fatal(merr)
			}
			_, verr := cmd.ValidateReply(want)
			if (err == nil) != (verr == nil) {
				t.Errorf("%s code %d: Reply error %v, ValidateReply error %v", cmd.Name, code, err, verr)
			}
			if err == nil && string(got) != string(want) {
				t.Errorf("%s code %d: Reply %s, MarshalJSON %s", cmd.Name, code, got, want)
			}
		}
	}
}
