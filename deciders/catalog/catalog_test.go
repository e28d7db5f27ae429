package catalog

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/timbus-dev/timbus/internal/benchratio"
	"github.com/timbus-dev/timbus/internal/samples"
)

func TestCatalog_Counts(t *testing.T) {
	kinds := map[Kind]int{}
	for _, c := range All() {
		kinds[c.Kind]++
		if !ValidName(c.Name) {
			t.Errorf("%s is not a valid command name", c.Name)
		}
	}
	// The documentation lists 57 commands: 11 before (3 of them may rewrite
	// the message), 1 that replies with data and 45 notifications.
	if got := len(All()); got != 57 {
		t.Errorf("%d commands, want 57", got)
	}
	if kinds[Before]+kinds[BeforeModify] != 11 || kinds[BeforeModify] != 3 || kinds[ReplyData] != 1 || kinds[After] != 45 {
		t.Errorf("kinds = %v", kinds)
	}
}

func TestUnlisted(t *testing.T) {
	tests := []struct {
		name string
		kind Kind
	}{
		{"Group.CallbackBeforeSomethingNew", Before},
		{"Sns.CallbackPrevSomething", Before},
		{"Group.CallbackAfterSomethingNew", After},
		{"Bot.OnSomething", After},
	}
	for _, tt := range tests {
		if got := Unlisted(tt.name); got.Kind != tt.kind || !got.Unlisted {
			t.Errorf("Unlisted(%s) = %v, want %v", tt.name, got.Kind, tt.kind)
		}
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"Group.CallbackBeforeSendMsg": true,
		"C2C.CallbackAfterSendMsg":    true,
		"Group":                       false,
		"Group.":                      false,
		".Send":                       false,
		"Group.Send.More":             false,
		"Group.*":                     false,
		"Group.>":                     false,
		"Group.Send Msg":              false,
		"Group.Sénd":                  false,
		strings.Repeat("A", 100) + "." + strings.Repeat("B", 100): false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestValidateReply(t *testing.T) {
	tests := []struct {
		command string
		reply   string
		code    int
		reason  string // "" means valid
	}{
		// Each family's codes.
		{"OfficialAccount.CallbackBeforeCreateOfficialAccount", `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`, 0, ""},
		{"OfficialAccount.CallbackBeforeCreateOfficialAccount", `{"ActionStatus":"OK","ErrorCode":1}`, 1, ""},
		{"OfficialAccount.CallbackBeforeCreateOfficialAccount", `{"ActionStatus":"OK","ErrorCode":120001}`, 120001, ""},
		{"OfficialAccount.CallbackBeforeCreateOfficialAccount", `{"ActionStatus":"OK","ErrorCode":130000}`, 130000, ""},
		{"OfficialAccount.CallbackBeforeCreateOfficialAccount", `{"ActionStatus":"OK","ErrorCode":120000}`, 0, "not valid for this command"},
		{"OfficialAccount.CallbackBeforeCreateOfficialAccount", `{"ActionStatus":"OK","ErrorCode":130001}`, 0, "not valid for this command"},
		{"OfficialAccount.CallbackBeforeCreateOfficialAccount", `{"ActionStatus":"OK","ErrorCode":2}`, 0, "not valid for this command"},
		{"OfficialAccount.CallbackBeforeCreateOfficialAccount", `{"ActionStatus":"OK","ErrorCode":-1}`, 0, "not valid for this command"},
		{"OfficialAccount.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":2}`, 2, ""},
		{"C2C.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":125000}`, 125000, ""},
		{"C2C.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":10100}`, 0, "not valid"},
		{"Group.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":10100}`, 10100, ""},
		{"Group.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":10200}`, 10200, ""},
		{"Group.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":10201}`, 0, "not valid"},
		{"Group.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":120001}`, 0, "not valid"},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":2}`, 0, "not valid"},
		{"OfficialAccount.CallbackBeforeAddSubscriber", `{"ActionStatus":"OK","ErrorCode":120001}`, 0, "not valid"},
		{"Chatbot.OnC2CSignalMessage", `{"ActionStatus":"OK","ErrorCode":1}`, 1, ""},
		// Rewritten messages.
		{"Group.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"***"}}],"CloudCustomData":"x"}`, 0, ""},
		{"Group.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"***"}}]}`, 0, "need ErrorCode 0"},
		{"Group.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":0,"MsgBody":[]}`, 0, "non-empty array"},
		{"Group.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":0,"MsgBody":{"MsgType":"TIMTextElem"}}`, 0, "non-empty array"},
		{"Group.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":"hi"}]}`, 0, "non-empty array"},
		{"Group.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":0,"MsgBody":[{"MsgContent":{}}]}`, 0, "non-empty array"},
		{"Group.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":0,"CloudCustomData":7}`, 0, "must be a string"},
		{"OfficialAccount.CallbackBeforeCreateOfficialAccount", `{"ActionStatus":"OK","ErrorCode":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{}}]}`, 0, "not a reply field of this command"},
		// Partial refusals.
		{"Group.CallbackBeforeInviteJoinGroup", `{"ActionStatus":"OK","ErrorCode":0,"RefusedMembers_Account":["jared","bob"]}`, 0, ""},
		{"Group.CallbackBeforeInviteJoinGroup", `{"ActionStatus":"OK","ErrorCode":0,"RefusedMembers_Account":"jared"}`, 0, "array of account strings"},
		{"Group.CallbackBeforeInviteJoinGroup", `{"ActionStatus":"OK","ErrorCode":0,"RefusedSubscribers_Account":["jared"]}`, 0, "not a reply field"},
		{"OfficialAccount.CallbackBeforeAddSubscriber", `{"ActionStatus":"OK","ErrorCode":0,"RefusedSubscribers_Account":["jared"]}`, 0, ""},
		{"OfficialAccount.CallbackBeforeAddSubscriber", `{"ActionStatus":"OK","ErrorCode":0,"RefusedSubscribers_Account":[1]}`, 0, "array of account strings"},
		// Per-user Sns verdicts.
		{"Sns.CallbackPrevFriendAdd", `{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{"To_Account":"a","ResultCode":0,"ResultInfo":""},{"To_Account":"b","ResultCode":38001,"ResultInfo":"no"}]}`, 0, ""},
		{"Sns.CallbackPrevFriendAdd", `{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{"To_Account":"a","ResultCode":5}]}`, 0, "ResultItem"},
		{"Sns.CallbackPrevFriendAdd", `{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{"ResultCode":0}]}`, 0, "ResultItem"},
		{"Sns.CallbackPrevFriendAdd", `{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{"To_Account":"a","ResultCode":0,"ResultInfo":3}]}`, 0, "ResultItem"},
		{"Sns.CallbackPrevFriendAdd", `{"ActionStatus":"OK","ErrorCode":1}`, 0, "ignored by Tencent"},
		{"Chatbot.OnC2CSignalMessage", `{"ActionStatus":"OK","ErrorCode":0,"RspData":"{\"msg\":\"hi\"}"}`, 0, ""},
		{"Chatbot.OnC2CSignalMessage", `{"ActionStatus":"OK","ErrorCode":0,"RspData":{"msg":"hi"}}`, 0, "must be a string"},
		// Shape of the verdict itself.
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"FAIL","ErrorCode":0}`, 0, "ActionStatus"},
		{"Group.CallbackBeforeCreateGroup", `{"ErrorCode":0}`, 0, `"ActionStatus" is missing`},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK"}`, 0, `"ErrorCode" is missing`},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":0.5}`, 0, "integer"},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":1e0}`, 0, "integer"},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":0,"ErrorCode":1}`, 0, `duplicate key "ErrorCode"`},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":null}`, 0, "ErrorInfo"},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"\u00e9t\u00e9"}`, 0, ""},
		{"Group.CallbackBeforeCreateGroup", `[{"ActionStatus":"OK","ErrorCode":0}]`, 0, "not a JSON object"},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":0`, 0, "not valid JSON"},
		{"Group.CallbackBeforeCreateGroup", ``, 0, "not valid JSON"},
		{"Group.CallbackBeforeCreateGroup", "\n {\"ActionStatus\" : \"OK\" ,\n\"ErrorCode\" : 10150 } \n", 10150, ""},
		// Keys are read decoded, as Tencent's decoder reads them: a key written
		// twice, however escaped, is ambiguous.
		{"Group.CallbackBeforeCreateGroup", `{"Action\u0053tatus":"OK","Error\u0043ode":10150}`, 10150, ""},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","Error\u0043ode":999999}`, 0, `duplicate key "ErrorCode" (written "Error\u0043ode")`},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","Action\u0053tatus":"FAIL","ErrorCode":0}`, 0, `duplicate key "ActionStatus"`},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":0,"Extra":1,"Extra":2}`, 0, `duplicate key "Extra"`},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":0,"Extr\u0061":1,"Extra":2}`, 0, `duplicate key "Extra"`},
		{"OfficialAccount.CallbackBeforeCreateOfficialAccount", `{"ActionStatus":"OK","ErrorCode":0,"Msg\u0042ody":[{"MsgType":"TIMTextElem","MsgContent":{}}]}`, 0, `"MsgBody" is not a reply field of this command`},
		{"C2C.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":0,"Msg\u0042ody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"x"}}]}`, 0, ""},
		// ... and so is one that differs from a rule's name only in case.
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":0,"errorcode":5}`, 0, `"errorcode" differs from "ErrorCode" only in case`},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","errorCode":5}`, 0, `"errorCode" differs from "ErrorCode"`},
		{"Group.CallbackBeforeCreateGroup", `{"actionstatus":"FAIL","ActionStatus":"OK","ErrorCode":0}`, 0, `"actionstatus" differs from "ActionStatus"`},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":0,"ACTIONSTATU\u017f":"FAIL"}`, 0, `differs from "ActionStatus"`}, // ſ folds to s
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":0,"errorinfo":""}`, 0, `differs from "ErrorInfo"`},
		{"OfficialAccount.CallbackBeforeCreateOfficialAccount", `{"ActionStatus":"OK","ErrorCode":0,"msgbody":[]}`, 0, `"msgbody" differs from "MsgBody"`},
		{"Group.CallbackBeforeInviteJoinGroup", `{"ActionStatus":"OK","ErrorCode":0,"refusedmembers_account":["a"]}`, 0, `differs from "RefusedMembers_Account"`},
		// Inside the elements the rules read, too.
		{"C2C.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":0,"MsgBody":[{"Msg\u0054ype":"TIMTextElem","MsgContent":{}}]}`, 0, ""},
		{"C2C.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{}},{"MsgType":"TIMTextElem","MsgType":"","MsgContent":{}}]}`, 0, `element 1: duplicate key "MsgType"`},
		{"C2C.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{},"Msg\u0043ontent":"x"}]}`, 0, `duplicate key "MsgContent"`},
		{"C2C.CallbackBeforeSendMsg", `{"ActionStatus":"OK","ErrorCode":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{},"msgcontent":"x"}]}`, 0, `"msgcontent" differs from "MsgContent"`},
		{"Sns.CallbackPrevFriendAdd", `{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{"To_Account":"a","ResultCode":0,"Result\u0043ode":1}]}`, 0, `element 0: duplicate key "ResultCode"`},
		{"Sns.CallbackPrevFriendAdd", `{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{"To_Account":"a","to_account":"b","ResultCode":0}]}`, 0, `"to_account" differs from "To_Account"`},
		{"Sns.CallbackPrevFriendAdd", `{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{"To_Account":"a","ResultCode":0,"resultinfo":""}]}`, 0, `differs from "ResultInfo"`},
		// Replies no decoder should have to guess at.
		{"Group.CallbackBeforeCreateGroup", "{\"ActionStatus\":\"OK\",\"ErrorCode\":1,\"ErrorInfo\":\"\xff\"}", 0, "not valid UTF-8"},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":"\ud800"}`, 0, "unpaired UTF-16 surrogate"},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":"\ud83d\ude00"}`, 1, ""},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":0,"ErrorCode\u0000":1}`, 0, "NUL"},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":0,"x":` + strings.Repeat("[", 63) + strings.Repeat("]", 63) + `}`, 0, ""},
		{"Group.CallbackBeforeCreateGroup", `{"ActionStatus":"OK","ErrorCode":0,"x":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `}`, 0, "nested deeper than the limit of 64 levels"},
	}
	for _, tt := range tests {
		t.Run(tt.command+" "+tt.reply, func(t *testing.T) {
			cmd, ok := Lookup(tt.command)
			if !ok {
				t.Fatalf("no command %s", tt.command)
			}
			code, err := cmd.ValidateReply([]byte(tt.reply))
			if tt.reason == "" {
				if err != nil || code != tt.code {
					t.Fatalf("got %d, %v; want %d, valid", code, err, tt.code)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalidReply) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("err = %v; want invalid because %q", err, tt.reason)
			}
		})
	}
}

// TestValidateReply_Samples: every documented reply is valid for its command.
func TestValidateReply_Samples(t *testing.T) {
	replies := samples.Replies()
	if len(replies) < 6 {
		t.Fatalf("%d reply samples", len(replies))
	}
	for _, s := range replies {
		cmd, ok := Lookup(s.Command)
		if !ok {
			t.Fatalf("%s: no command %s", s.Name, s.Command)
		}
		if _, err := cmd.ValidateReply(s.Body); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
	}
}

func TestUnlisted_ValidateReply(t *testing.T) {
	cmd := Unlisted("Future.CallbackBeforeThing")
	if code, err := cmd.ValidateReply([]byte(`{"ActionStatus":"OK","ErrorCode":777}`)); err != nil || code != 777 {
		t.Errorf("unlisted command: %d, %v", code, err)
	}
	if _, err := cmd.ValidateReply([]byte(`{"ActionStatus":"OK","ErrorCode":0,"MsgBody":"x"}`)); err == nil {
		t.Error("unlisted command: a malformed MsgBody passed")
	}
}

func TestSamples(t *testing.T) {
	requests := samples.Requests()
	if len(requests) < 20 {
		t.Fatalf("%d request samples", len(requests))
	}
	for _, s := range requests {
		if _, ok := Lookup(s.Command); !ok {
			t.Errorf("sample %s: command not in the catalog", s.Name)
		}
		if b, ok := samples.Request(s.Command); !ok || string(b) != string(s.Body) {
			t.Errorf("samples.Request(%s) differs from samples.Requests", s.Command)
		}
	}
}

func TestPerUserAnswer(t *testing.T) {
	cmd, _ := Lookup("Sns.CallbackPrevFriendResponse")
	body, ok := samples.Request("Sns.CallbackPrevFriendResponse")
	if !ok {
		t.Fatal("no sample")
	}
	got := string(cmd.PerUserAnswer(body, 1, "busy"))
	want := `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"ResultItem":[{"To_Account":"id1","ResultCode":1,"ResultInfo":"busy"},{"To_Account":"id2","ResultCode":1,"ResultInfo":"busy"}]}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if _, err := cmd.ValidateReply([]byte(got)); err != nil {
		t.Errorf("the default per-user answer is not a valid reply: %v", err)
	}
}

func FuzzValidateReply(f *testing.F) {
	for _, s := range samples.Replies() {
		f.Add(s.Body)
	}
	f.Add([]byte(`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","Error\u0043ode":999999}`))
	f.Add([]byte(`{"ActionStatus":"OK","ErrorCode":0,"Msg\u0042ody":[{"MsgType":"T","MsgContent":{}}]}`))
	f.Add([]byte(`{"ActionStatus":"OK","ErrorCode":0,"errorcode":5}`))
	f.Add([]byte(`{"ActionStatus":"OK","ErrorCode":0,"ResultItem":[{"To_Account":"a","ResultCode":0}]}`))
	f.Add([]byte(`{"ActionStatus":"OK","ErrorCode":0,"MsgBody":[{"MsgType":"T","MsgContent":{}}],"x":[1,{"y":"\"}"}]}`))
	commands := All()
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range commands {
			code, err := c.ValidateReply(b)
			if err == nil && !c.ValidCode(code) && c.PerUser == "" {
				t.Fatalf("%s: accepted invalid code %d", c.Name, code)
			}
		}
	})
}

// BenchmarkValidateReply measures ValidateReply on a reply that modifies the
// message; "x_encoding_json" is its time over decoding the same reply with
// encoding/json (which checks nothing), measured in the same run.
func BenchmarkValidateReply(b *testing.B) {
	cmd, _ := Lookup("C2C.CallbackBeforeSendMsg")
	var reply []byte
	for _, s := range samples.Replies() {
		if s.Name == "C2C.CallbackBeforeSendMsg.modify" {
			reply = s.Body
		}
	}
	b.SetBytes(int64(len(reply)))
	var decoded map[string]any
	benchratio.Run(b, "x_encoding_json", func() {
		if err := json.Unmarshal(reply, &decoded); err != nil {
			b.Fatal(err)
		}
	}, func() {
		if _, err := cmd.ValidateReply(reply); err != nil {
			b.Fatal(err)
		}
	})
}
