package deciders

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/timbus-dev/timbus/deciders/catalog"
)

// ErrInvalidVerdict is wrapped by the error Verdict.Reply returns for a
// verdict the command does not accept, such as a code outside its range or a
// MsgBody for a command that cannot rewrite messages. The same error also
// wraps the *catalog.ReplyError with the reason.
var ErrInvalidVerdict = errors.New("deciders: invalid verdict")

// Verdict is a decider's answer to a callback: Tencent's reply JSON, built
// with Allow, Deny, DenyWith, Drop, Modify, RefuseMembers, RefuseSubscribers,
// ResultItems or RspData. The zero Verdict allows.
//
// Which codes and extra fields a verdict may carry depends on the command
// (deciders/PROTOCOL.md, section 4); a Decider checks every verdict before it
// replies, and Reply does the same check for tests.
type Verdict struct {
	code int
	info string
	// set marks the extra fields the verdict carries; an empty list that is
	// set is sent as [] rather than left out.
	set                catalog.Field
	msgBody            []MsgElem
	cloudCustomData    string
	refusedMembers     []string
	refusedSubscribers []string
	resultItems        []ResultItem
	rspData            string
}

// ResultItem is the verdict on one user of an Sns command
// (Sns.CallbackPrevFriendAdd, Sns.CallbackPrevFriendResponse): ResultCode 0
// lets that user through; 1 or a custom code in 38000-39000 refuses them, and
// Tencent shows ResultInfo.
type ResultItem struct {
	ToAccount  string `json:"To_Account"`
	ResultCode int
	ResultInfo string
}

// Allow lets the action happen unchanged (ErrorCode 0).
func Allow() Verdict { return Verdict{} }

// Deny refuses the action (ErrorCode 1).
func Deny() Verdict { return Verdict{code: 1} }

// DenyWith refuses the action with a custom code, which Tencent hands to the
// client app with info. Each command has its own range (120001-130000 for
// C2C and OfficialAccount commands, 10100-10200 for Group commands).
func DenyWith(code int, info string) Verdict { return Verdict{code: code, info: info} }

// Drop discards a message while its sender sees it as sent (ErrorCode 2,
// the …BeforeSendMsg commands only).
func Drop() Verdict { return Verdict{code: 2} }

// Modify lets a message through with msgBody in place of its elements
// (ErrorCode 0, the …BeforeSendMsg commands only). msgBody replaces the
// whole message, so it must hold the elements left unchanged too.
func Modify(msgBody []MsgElem) Verdict {
	if msgBody == nil {
		msgBody = []MsgElem{}
	}
	return Verdict{set: catalog.FieldMsgBody, msgBody: msgBody}
}

// WithCloudCustomData returns v that also replaces the message's custom data
// with s (…BeforeSendMsg commands, ErrorCode 0 only).
func (v Verdict) WithCloudCustomData(s string) Verdict {
	v.set |= catalog.FieldCloudCustomData
	v.cloudCustomData = s
	return v
}

// RefuseMembers lets a group invitation through for everyone but accounts
// (Group.CallbackBeforeInviteJoinGroup).
func RefuseMembers(accounts ...string) Verdict {
	if accounts == nil {
		accounts = []string{}
	}
	return Verdict{set: catalog.FieldRefusedMembers, refusedMembers: accounts}
}

// RefuseSubscribers lets everyone but accounts subscribe
// (OfficialAccount.CallbackBeforeAddSubscriber).
func RefuseSubscribers(accounts ...string) Verdict {
	if accounts == nil {
		accounts = []string{}
	}
	return Verdict{set: catalog.FieldRefusedSubscribers, refusedSubscribers: accounts}
}

// ResultItems decides per user, for the Sns commands; the top-level code stays
// 0, as Tencent requires.
func ResultItems(items ...ResultItem) Verdict {
	if items == nil {
		items = []ResultItem{}
	}
	return Verdict{set: catalog.FieldResultItem, resultItems: items}
}

// RspData forwards data to the chatbot (Chatbot.OnC2CSignalMessage); Deny
// drops the signal instead.
func RspData(data string) Verdict {
	return Verdict{set: catalog.FieldRspData, rspData: data}
}

// Code is the verdict's ErrorCode: 0 allows.
func (v Verdict) Code() int { return v.code }

// Info is the verdict's ErrorInfo.
func (v Verdict) Info() string { return v.info }

// MarshalJSON renders Tencent's reply:
// {"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""} and the extra fields set.
func (v Verdict) MarshalJSON() ([]byte, error) {
	w := struct {
		ActionStatus       string
		ErrorCode          int
		ErrorInfo          string
		MsgBody            *[]MsgElem    `json:",omitempty"`
		CloudCustomData    *string       `json:",omitempty"`
		RefusedMembers     *[]string     `json:"RefusedMembers_Account,omitempty"`
		RefusedSubscribers *[]string     `json:"RefusedSubscribers_Account,omitempty"`
		ResultItem         *[]ResultItem `json:",omitempty"`
		RspData            *string       `json:",omitempty"`
	}{ActionStatus: "OK", ErrorCode: v.code, ErrorInfo: v.info}
	// Pointers, so that a field that is set goes out even when empty: left
	// out, Modify(nil) would read as a plain allow; sent as [], it is refused
	// as the mistake it is.
	if v.set&catalog.FieldMsgBody != 0 {
		for i, e := range v.msgBody {
			if len(e.MsgContent) > 0 && !json.Valid(e.MsgContent) {
				return nil, fmt.Errorf("MsgBody[%d].MsgContent is not valid JSON: %.40q", i, e.MsgContent)
			}
		}
		w.MsgBody = &v.msgBody
	}
	if v.set&catalog.FieldCloudCustomData != 0 {
		w.CloudCustomData = &v.cloudCustomData
	}
	if v.set&catalog.FieldRefusedMembers != 0 {
		w.RefusedMembers = &v.refusedMembers
	}
	if v.set&catalog.FieldRefusedSubscribers != 0 {
		w.RefusedSubscribers = &v.refusedSubscribers
	}
	if v.set&catalog.FieldResultItem != 0 {
		w.ResultItem = &v.resultItems
	}
	if v.set&catalog.FieldRspData != 0 {
		w.RspData = &v.rspData
	}
	return json.Marshal(w)
}

// A verdict with a code alone is sent as plainReplyHead, the code and
// plainReplyTail: what MarshalJSON writes for it.
const (
	plainReplyHead = `{"ActionStatus":"OK","ErrorCode":`
	plainReplyTail = `,"ErrorInfo":""}`
)

// Reply returns the JSON a Decider sends for v in answer to command, or an
// error wrapping ErrInvalidVerdict that says which of the command's rules v
// breaks. A command timbus does not know is checked for shape only, as the
// bridge does.
func (v Verdict) Reply(command string) ([]byte, error) {
	return v.appendReply(nil, command)
}

// appendReply is Reply, appending to dst where the verdict is plain.
func (v Verdict) appendReply(dst []byte, command string) ([]byte, error) {
	cmd, ok := catalog.Lookup(command)
	if !ok {
		cmd = catalog.Unlisted(command)
	}
	if v.set == 0 && v.info == "" && cmd.PerUser == "" && cmd.ValidCode(v.code) {
		// Allow, Deny, Drop and bare codes, the most common verdicts: the
		// reply is known valid without encoding and parsing it back.
		dst = append(dst, plainReplyHead...)
		dst = strconv.AppendInt(dst, int64(v.code), 10)
		return append(dst, plainReplyTail...), nil
	}
	b, err := v.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidVerdict, err)
	}
	if _, err := cmd.ValidateReply(b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidVerdict, err)
	}
	return b, nil
}
