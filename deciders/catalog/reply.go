package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/timbus-dev/timbus/internal/jsonscan"
)

// ErrInvalidReply is wrapped by every error ValidateReply returns.
var ErrInvalidReply = errors.New("invalid reply")

// ReplyError says why a decider's reply cannot be sent to Tencent.
type ReplyError struct {
	Command string
	Reason  string
}

func (e *ReplyError) Error() string {
	return fmt.Sprintf("catalog: invalid reply to %s: %s", e.Command, e.Reason)
}

func (e *ReplyError) Unwrap() error { return ErrInvalidReply }

// member names of every reply.
var (
	keyActionStatus = []byte("ActionStatus")
	keyErrorCode    = []byte("ErrorCode")
	keyErrorInfo    = []byte("ErrorInfo")
)

// ValidateReply checks a decider's reply against the command's rules and
// returns its ErrorCode. A valid reply is a JSON object with "ActionStatus":
// "OK", an integer "ErrorCode" valid for the command, an optional string
// "ErrorInfo", and only those extra fields the command understands, each in
// the shape Tencent documents. Members Tencent does not define pass through
// unchecked. ValidateReply does not allocate for a valid reply.
//
// Keys are compared decoded ("Error\u0043ode" is "ErrorCode"), and a reply
// Tencent's decoder might read otherwise than the bridge does is invalid: a
// key written twice, in the reply or in an object the rules look into (an
// element of MsgBody or ResultItem); a key that differs from one of the rules'
// names only in case ("errorCode"), which decoders matching names without
// case, such as encoding/json, take for it; and whatever jsonscan.Check
// refuses (invalid UTF-8, unpaired surrogate escapes, \u0000 in a key,
// nesting deeper than jsonscan.MaxDepth).
func (c *Command) ValidateReply(b []byte) (int, error) {
	var (
		seen   Field
		code   int64
		status bool
		hasCode,
		hasInfo bool
		reason string
	)
	err := jsonscan.Object(b, func(key, v []byte) error {
		switch {
		case bytes.Equal(key, keyActionStatus):
			s, ok := jsonscan.String(v)
			if status || !ok || string(s) != "OK" {
				reason = `"ActionStatus" must be "OK", once`
				return ErrInvalidReply
			}
			status = true
		case bytes.Equal(key, keyErrorCode):
			n, ok := jsonscan.Int(v)
			if hasCode || !ok {
				reason = `"ErrorCode" must be one integer`
				return ErrInvalidReply
			}
			code, hasCode = n, true
		case bytes.Equal(key, keyErrorInfo):
			if _, ok := jsonscan.String(v); hasInfo || !ok {
				reason = `"ErrorInfo" must be one string`
				return ErrInvalidReply
			}
			hasInfo = true
		default:
			f := fieldOf(key)
			if f == 0 {
				if name := lookalike(key, replyKeys); name != nil {
					reason = caseReason(key, name)
					return ErrInvalidReply
				}
				return nil // not Tencent's: passed through
			}
			if seen&f != 0 {
				reason = fmt.Sprintf("%q appears twice", key)
				return ErrInvalidReply
			}
			seen |= f
			if !c.Unlisted && c.Fields&f == 0 {
				reason = fmt.Sprintf("%q is not a reply field of this command (allowed: %v)", key, c.Fields.Names())
				return ErrInvalidReply
			}
			if r := c.checkShape(f, v); r != "" {
				reason = fmt.Sprintf("%q %s", key, r)
				return ErrInvalidReply
			}
		}
		return nil
	})
	switch {
	case reason != "":
	case errors.Is(err, jsonscan.ErrSyntax):
		reason = "not valid JSON"
	case errors.Is(err, jsonscan.ErrNotObject):
		reason = "not a JSON object"
	case err != nil: // the document breaks jsonscan's rules
		reason = err.Error()
	case !status:
		reason = `"ActionStatus" is missing`
	case !hasCode:
		reason = `"ErrorCode" is missing`
	case c.PerUser != "" && code != 0:
		reason = fmt.Sprintf("ErrorCode %d is ignored by Tencent for this command: refuse users through ResultItem and answer ErrorCode 0", code)
	case c.PerUser == "" && !c.ValidCode(int(code)):
		reason = fmt.Sprintf("ErrorCode %d is not valid for this command (valid: %s)", code, c.CodesString())
	case code != 0 && seen&(FieldMsgBody|FieldCloudCustomData) != 0:
		reason = fmt.Sprintf("ErrorCode %d with a modified message: MsgBody and CloudCustomData need ErrorCode 0", code)
	}
	if reason != "" {
		return 0, &ReplyError{Command: c.Name, Reason: reason}
	}
	return int(code), nil
}

// replyKeys are the member names ValidateReply reads at the top level.
var replyKeys = func() [][]byte {
	keys := [][]byte{keyActionStatus, keyErrorCode, keyErrorInfo}
	for _, fn := range fieldNames {
		keys = append(keys, []byte(fn.name))
	}
	return keys
}()

// lookalike returns the name among names that key equals but for case, as
// encoding/json matches names (bytes.EqualFold), or nil. The names are ASCII,
// and a character that folds to an ASCII one is never shorter than it (the
// Kelvin sign, a 3-byte K, folds to k), so shorter keys are passed over.
func lookalike(key []byte, names [][]byte) []byte {
	for _, name := range names {
		if len(key) >= len(name) && bytes.EqualFold(key, name) {
			return name
		}
	}
	return nil
}

func caseReason(key, name []byte) string {
	return fmt.Sprintf("%q differs from %q only in case, and decoders that ignore case would read it as that member", key, name)
}

func fieldOf(key []byte) Field {
	for _, fn := range fieldNames {
		if string(key) == fn.name {
			return fn.field
		}
	}
	return 0
}

var (
	keyMsgType    = []byte("MsgType")
	keyMsgContent = []byte("MsgContent")
	keyToAccount  = []byte("To_Account")
	keyResultCode = []byte("ResultCode")
	keyResultInfo = []byte("ResultInfo")
	errShape      = errors.New("shape")

	// The member names checkShape reads in an element of MsgBody, of ResultItem.
	msgElemKeys    = [][]byte{keyMsgType, keyMsgContent}
	resultItemKeys = [][]byte{keyToAccount, keyResultCode, keyResultInfo}
)

// checkShape returns why v does not have the documented shape of field f, or "".
func (c *Command) checkShape(f Field, v []byte) string {
	switch f {
	case FieldCloudCustomData, FieldRspData:
		if _, ok := jsonscan.String(v); !ok {
			return "must be a string"
		}
	case FieldRefusedMembers, FieldRefusedSubscribers:
		err := jsonscan.Elements(v, func(e []byte) error {
			if _, ok := jsonscan.String(e); !ok {
				return errShape
			}
			return nil
		})
		if err != nil {
			return "must be an array of account strings"
		}
	case FieldMsgBody:
		n := 0
		var why string
		err := jsonscan.Elements(v, func(e []byte) error {
			n++
			var typ, content bool
			if !jsonscan.IsObject(e) {
				return errShape
			}
			err := jsonscan.Members(e, func(k, ev []byte) error {
				switch {
				case bytes.Equal(k, keyMsgType):
					s, ok := jsonscan.String(ev)
					typ = ok && len(s) > 0
				case bytes.Equal(k, keyMsgContent):
					content = jsonscan.IsObject(ev)
				default:
					if name := lookalike(k, msgElemKeys); name != nil {
						why = caseReason(k, name)
						return errShape
					}
				}
				return nil
			})
			if err != nil && why == "" {
				why = err.Error()
			}
			if err != nil || !typ || !content {
				return errShape
			}
			return nil
		})
		if why != "" {
			return fmt.Sprintf("element %d: %s", n-1, why)
		}
		if err != nil || n == 0 {
			return `must be a non-empty array of {"MsgType": string, "MsgContent": object}`
		}
	case FieldResultItem:
		n := 0
		var why string
		err := jsonscan.Elements(v, func(e []byte) error {
			n++
			if !jsonscan.IsObject(e) {
				return errShape
			}
			var account, result, bad bool
			err := jsonscan.Members(e, func(k, ev []byte) error {
				switch {
				case bytes.Equal(k, keyToAccount):
					s, ok := jsonscan.String(ev)
					account = ok && len(s) > 0
				case bytes.Equal(k, keyResultCode):
					n, ok := jsonscan.Int(ev)
					result = ok && c.ValidCode(int(n))
				case bytes.Equal(k, keyResultInfo):
					_, ok := jsonscan.String(ev)
					bad = bad || !ok
				default:
					if name := lookalike(k, resultItemKeys); name != nil {
						why = caseReason(k, name)
						return errShape
					}
				}
				return nil
			})
			if err != nil && why == "" {
				why = err.Error()
			}
			if err != nil || !account || !result || bad {
				return errShape
			}
			return nil
		})
		if why != "" {
			return fmt.Sprintf("element %d: %s", n-1, why)
		}
		if err != nil {
			return `must be an array of {"To_Account": string, "ResultCode": ` + c.CodesString() + `, "ResultInfo": string}`
		}
	}
	return ""
}

// PerUserAnswer renders a verdict for a PerUser command as Tencent expects
// it: ErrorCode 0 and one ResultItem per user named in the request body, each
// carrying code and info. Users are taken from the body's PerUser list (their
// "To_Account"); a body without one yields an empty ResultItem list.
func (c *Command) PerUserAnswer(body []byte, code int, info string) []byte {
	type item struct {
		ToAccount  string `json:"To_Account"`
		ResultCode int
		ResultInfo string
	}
	var req map[string]json.RawMessage
	_ = json.Unmarshal(body, &req)
	var users []struct {
		ToAccount string `json:"To_Account"`
	}
	_ = json.Unmarshal(req[c.PerUser], &users)
	items := make([]item, 0, len(users))
	for _, u := range users {
		items = append(items, item{ToAccount: u.ToAccount, ResultCode: code, ResultInfo: info})
	}
	out, _ := json.Marshal(struct {
		ActionStatus string
		ErrorInfo    string
		ErrorCode    int
		ResultItem   []item
	}{"OK", "", 0, items})
	return out
}
