// Package catalog knows every Tencent Cloud Chat callback command: whether
// Tencent waits for a verdict, which ErrorCodes a verdict may carry and which
// extra reply fields it may hold. The bridge uses it to route a callback and to
// check a decider's reply before Tencent sees it.
package catalog

import (
	"fmt"
	"sort"
	"strings"
)

// Kind says how Tencent treats the reply to a command.
type Kind uint8

const (
	// After commands notify; Tencent ignores the reply's code.
	After Kind = iota
	// Before commands wait for a verdict that can block the action.
	Before
	// BeforeModify commands wait for a verdict that can also rewrite the message.
	BeforeModify
	// ReplyData commands wait for a reply that carries data (Chatbot.OnC2CSignalMessage).
	ReplyData
)

// NeedsReply reports whether Tencent waits for a decider's answer.
func (k Kind) NeedsReply() bool { return k != After }

func (k Kind) String() string {
	switch k {
	case Before:
		return "before"
	case BeforeModify:
		return "before-modify"
	case ReplyData:
		return "reply-data"
	default:
		return "after"
	}
}

// Field is a set of reply fields a command's verdict may carry beyond
// ActionStatus, ErrorCode and ErrorInfo.
type Field uint16

const (
	FieldMsgBody Field = 1 << iota
	FieldCloudCustomData
	FieldRefusedMembers
	FieldRefusedSubscribers
	FieldResultItem
	FieldRspData
)

// fieldNames maps each Field to its JSON member name in a reply.
var fieldNames = [...]struct {
	field Field
	name  string
}{
	{FieldMsgBody, "MsgBody"},
	{FieldCloudCustomData, "CloudCustomData"},
	{FieldRefusedMembers, "RefusedMembers_Account"},
	{FieldRefusedSubscribers, "RefusedSubscribers_Account"},
	{FieldResultItem, "ResultItem"},
	{FieldRspData, "RspData"},
}

// Names lists the JSON member names in the set, in a stable order.
func (f Field) Names() []string {
	var names []string
	for _, fn := range fieldNames {
		if f&fn.field != 0 {
			names = append(names, fn.name)
		}
	}
	return names
}

// Range is an inclusive range of custom ErrorCodes; the zero Range is empty.
type Range struct{ Min, Max int }

// Contains reports whether code lies in r.
func (r Range) Contains(code int) bool { return r.Max != 0 && code >= r.Min && code <= r.Max }

// The custom deny code families Tencent documents.
var (
	RangeC2C   = Range{120001, 130000} // C2C and OfficialAccount commands
	RangeGroup = Range{10100, 10200}   // group and topic commands
	RangeSns   = Range{38000, 39000}   // per-user ResultCode in Sns ResultItem
)

// Command describes one callback command.
type Command struct {
	Name string
	Kind Kind
	// Codes are the discrete ErrorCodes a reply may carry: 0 allows, 1 denies,
	// 2 (where documented) drops the message silently.
	Codes []int
	// Custom is the range of app-defined deny codes, empty if none is documented.
	Custom Range
	// Fields are the extra reply members the command understands.
	Fields Field
	// Doc is the documentation page the rules come from.
	Doc string
	// Unlisted marks a command timbus does not know; its replies are only
	// checked for shape, since its rules are not known.
	Unlisted bool
	// PerUser names the request member listing the users a verdict is about
	// (Sns commands). Such commands are decided per user through ResultItem:
	// the top-level ErrorCode must be 0, and Codes and Custom apply to each
	// ResultItem's ResultCode instead.
	PerUser string
}

// ValidCode reports whether a reply may carry ErrorCode code.
func (c *Command) ValidCode(code int) bool {
	if c.Unlisted {
		return true
	}
	for _, v := range c.Codes {
		if v == code {
			return true
		}
	}
	return c.Custom.Contains(code)
}

// CodesString renders the valid codes for people, e.g. "0, 1, 2, 120001-130000".
func (c *Command) CodesString() string {
	if c.Unlisted {
		return "any"
	}
	parts := make([]string, 0, len(c.Codes)+1)
	for _, v := range c.Codes {
		parts = append(parts, fmt.Sprint(v))
	}
	if c.Custom.Max != 0 {
		parts = append(parts, fmt.Sprintf("%d-%d", c.Custom.Min, c.Custom.Max))
	}
	return strings.Join(parts, ", ")
}

var (
	allowDeny     = []int{0, 1}
	allowDenyDrop = []int{0, 1, 2}
)

func after(name, doc string) Command { return Command{Name: name, Kind: After, Doc: doc} }

// table holds all 57 documented commands, from the command list page and each
// command's own page (https://trtc.io/document/<n> unless marked CN, which is
// https://cloud.tencent.com/document/product/269/<n>).
var table = []Command{
	after("Alert.RequestOverLimit", "60256"),
	after("State.StateChange", "34357"),
	after("Profile.CallbackPortraitSet", "48733"),
	// Sns verdicts are per user: ResultItem[].ResultCode 0 allows that user,
	// anything else refuses them; IM ignores a non-zero top-level ErrorCode.
	{Name: "Sns.CallbackPrevFriendAdd", Kind: Before, Codes: allowDeny, Custom: RangeSns, Fields: FieldResultItem, PerUser: "FriendItem", Doc: "43468"},
	{Name: "Sns.CallbackPrevFriendResponse", Kind: Before, Codes: allowDeny, Custom: RangeSns, Fields: FieldResultItem, PerUser: "ResponseFriendItem", Doc: "43467"},
	after("Sns.CallbackFriendAdd", "34359"),
	after("Sns.CallbackFriendDelete", "34360"),
	after("Sns.CallbackBlackListAdd", "34361"),
	after("Sns.CallbackBlackListDelete", "34362"),
	after("Follow.CallbackAfterFollowAdd", "70355"),
	after("Follow.CallbackAfterFollowDelete", "70356"),
	{Name: "C2C.CallbackBeforeSendMsg", Kind: BeforeModify, Codes: allowDenyDrop, Custom: RangeC2C, Fields: FieldMsgBody | FieldCloudCustomData, Doc: "34364"},
	after("C2C.CallbackAfterSendMsg", "34365"),
	after("C2C.CallbackAfterMsgReport", "43465"),
	after("C2C.CallbackAfterMsgWithDraw", "43466"),
	after("C2C.CallbackAfterC2CMsgExtension", "76006"),
	{Name: "Group.CallbackBeforeCreateGroup", Kind: Before, Codes: allowDeny, Custom: RangeGroup, Doc: "34368"},
	after("Group.CallbackAfterCreateGroup", "34369"),
	{Name: "Group.CallbackBeforeApplyJoinGroup", Kind: Before, Codes: allowDeny, Custom: RangeGroup, Doc: "34370"},
	{Name: "Group.CallbackBeforeInviteJoinGroup", Kind: Before, Codes: allowDeny, Custom: RangeGroup, Fields: FieldRefusedMembers, Doc: "34371"},
	after("Group.CallbackAfterNewMemberJoin", "34372"),
	after("Group.CallbackAfterMemberExit", "34373"),
	{Name: "Group.CallbackBeforeSendMsg", Kind: BeforeModify, Codes: allowDenyDrop, Custom: RangeGroup, Fields: FieldMsgBody | FieldCloudCustomData, Doc: "34374"},
	after("Group.CallbackAfterSendMsg", "34375"),
	after("Group.CallbackAfterGroupFull", "34376"),
	after("Group.CallbackAfterGroupDestroyed", "34377"),
	after("Group.CallbackAfterGroupInfoChanged", "34378"),
	after("Group.CallbackOnMemberStateChange", "48734"),
	after("Group.CallbackSendMsgException", "49462"),
	after("Group.CallbackAfterRecallMsg", "46979"),
	{Name: "Group.CallbackBeforeCreateTopic", Kind: Before, Codes: allowDeny, Custom: RangeGroup, Doc: "49463"},
	after("Group.CallbackAfterCreateTopic", "49464"),
	after("Group.CallbackAfterTopicDestroyed", "49465"),
	after("Group.CallbackAfterTopicInfoChanged", "49466"),
	after("Group.CallbackAfterMemberFieldChanged", "60393"),
	after("Group.CallbackAfterGroupAttrChanged", "60394"),
	after("Group.CallbackAfterReadReceipt", "60395"),
	after("Group.CallbackAfterChangeGroupOwner", "60396"),
	after("Group.CallbackOnDailyGroupQuotaAlarm", "57455"),
	after("Group.CallbackAfterGroupMsgExtension", "76007"),
	after("ContentCallback.ResultNotify", "CN/95616"),
	after("Bot.OnC2CMessage", "68952"),
	after("Bot.OnGroupMessage", "68953"),
	// With ErrorCode 0 Tencent forwards RspData to the chatbot; with 1 it drops it.
	{Name: "Chatbot.OnC2CSignalMessage", Kind: ReplyData, Codes: allowDeny, Fields: FieldRspData, Doc: "CN/103730"},
	{Name: "OfficialAccount.CallbackBeforeCreateOfficialAccount", Kind: Before, Codes: allowDeny, Custom: RangeC2C, Doc: "60795"},
	after("OfficialAccount.CallbackAfterCreateOfficialAccount", "60796"),
	after("OfficialAccount.CallbackAfterOfficialAccountInfoChanged", "60797"),
	after("OfficialAccount.CallbackAfterOfficialAccountDestroyed", "60798"),
	{Name: "OfficialAccount.CallbackBeforeAddSubscriber", Kind: Before, Codes: allowDeny, Fields: FieldRefusedSubscribers, Doc: "60799"},
	after("OfficialAccount.CallbackAfterAddSubscriber", "60800"),
	after("OfficialAccount.CallbackAfterOfficialAccountFull", "60801"),
	after("OfficialAccount.CallbackAfterDeleteSubscriber", "60802"),
	{Name: "OfficialAccount.CallbackBeforeSendMsg", Kind: BeforeModify, Codes: allowDenyDrop, Custom: RangeC2C, Fields: FieldMsgBody | FieldCloudCustomData, Doc: "60803"},
	after("OfficialAccount.CallbackAfterSendMsg", "60804"),
	after("OfficialAccount.CallbackAfterMsgWithDraw", "60805"),
	after("Push.OfflinePush", "CN/102567"),
	after("Push.AllMemberPush", "CN/102568"),
}

var byName = func() map[string]*Command {
	m := make(map[string]*Command, len(table))
	for i := range table {
		m[table[i].Name] = &table[i]
	}
	return m
}()

// Lookup returns the documented command with this name.
func Lookup(name string) (*Command, bool) {
	c, ok := byName[name]
	return c, ok
}

// All returns every documented command, sorted by name.
func All() []*Command {
	out := make([]*Command, 0, len(table))
	for i := range table {
		out = append(out, &table[i])
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Unlisted describes a command timbus does not know. Tencent adds commands
// over time; by its naming convention "Before" and "Prev" commands wait for a
// verdict, and the rest are notifications.
func Unlisted(name string) *Command {
	c := &Command{Name: name, Kind: After, Unlisted: true}
	if _, cmd, ok := strings.Cut(name, "."); ok &&
		(strings.Contains(cmd, "Before") || strings.Contains(cmd, "Prev")) {
		c.Kind = Before
	}
	return c
}

// ValidName reports whether name has the shape of a Tencent command,
// "<Family>.<Command>" of ASCII letters, digits and underscores, so that it is
// safe as two NATS subject tokens.
func ValidName(name string) bool {
	family, cmd, ok := strings.Cut(name, ".")
	return ok && len(name) <= 128 && ValidToken(family) && ValidToken(cmd)
}

// ValidToken reports whether s can be one part of a command name: ASCII
// letters, digits and underscores.
func ValidToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
