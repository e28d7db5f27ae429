package deciders

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/deciders/protocol"
)

// ErrBody is wrapped by the errors of Callback.Fields and Callback.Decode: the
// body does not have the shape the caller asked for.
var ErrBody = errors.New("deciders: bad callback body")

// Callback is one "before" callback, as timbus handed it to the decider.
type Callback struct {
	// Request holds what the subject (SdkAppid, command) and the Timbus-*
	// headers (request id, client IP, platform, deadline; zero when there is
	// none) say.
	protocol.Request
	// Header holds every header of the request, for those the SDK does not
	// read itself.
	Header nats.Header
	// Body is Tencent's callback body, byte for byte.
	Body []byte
}

// Decode unmarshals the body into v, for the members Fields does not cover.
// encoding/json matches member names case-insensitively; Fields does not.
// As Fields does, Decode refuses a body that is not an object or holds a
// top-level name twice once decoded; it does not look for repeated names
// deeper in the body.
func (c *Callback) Decode(v any) error {
	if _, err := object(c.Body); err != nil && json.Valid(c.Body) {
		return fmt.Errorf("%w: %w", ErrBody, err)
	}
	if err := json.Unmarshal(c.Body, v); err != nil { // syntax errors as encoding/json words them
		return fmt.Errorf("%w: %w", ErrBody, err)
	}
	return nil
}

// Fields parses the members most commands share. It parses Body on every
// call, so keep the result rather than calling it twice.
func (c *Callback) Fields() (Fields, error) {
	var f Fields
	if err := json.Unmarshal(c.Body, &f); err != nil {
		return Fields{}, fmt.Errorf("%w: %w", ErrBody, err)
	}
	return f, nil
}

// Fields are the body members most callbacks share. A member the body does
// not hold, or holds as null, is left at its zero value. Member names must
// match exactly: "name" is not "Name".
type Fields struct {
	CallbackCommand string
	FromAccount     string `json:"From_Account"`
	ToAccount       string `json:"To_Account"`
	OperatorAccount string `json:"Operator_Account"`
	OwnerAccount    string `json:"Owner_Account"`
	GroupID         string `json:"GroupId"`
	Type            string // group type, e.g. "Public", "Community"
	Name            string // group or official account name
	MsgBody         []MsgElem
	CloudCustomData string
	EventTime       EventTime
}

// UnmarshalJSON reads a callback body. Unlike encoding/json's struct
// decoding, it matches member names exactly, so that a look-alike member
// cannot stand in for the real one, and an error names the member at fault.
// Names are compared decoded ("Callback\u0043ommand" is "CallbackCommand"),
// and a body holding a name twice, in the object or in a MsgBody element, is
// refused.
func (f *Fields) UnmarshalJSON(b []byte) error {
	members, err := object(b)
	if err != nil {
		return err
	}
	*f = Fields{}
	for _, m := range [...]struct {
		name string
		dst  any
	}{
		{"CallbackCommand", &f.CallbackCommand},
		{"From_Account", &f.FromAccount},
		{"To_Account", &f.ToAccount},
		{"Operator_Account", &f.OperatorAccount},
		{"Owner_Account", &f.OwnerAccount},
		{"GroupId", &f.GroupID},
		{"Type", &f.Type},
		{"Name", &f.Name},
		{"MsgBody", &f.MsgBody},
		{"CloudCustomData", &f.CloudCustomData},
		{"EventTime", &f.EventTime},
	} {
		if err := member(members, m.name, m.dst); err != nil {
			return err
		}
	}
	return nil
}

// object splits a JSON object into its members, keyed by decoded name. A key
// written twice, even in two spellings ("Name" and "N\u0061me"), is an
// error: decoders disagree on which of the two values counts, so a body
// holding both could mean one thing to the decider and another to Tencent.
func object(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errNotObject
	}
	members := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errNotObject
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errNotObject
		}
		if _, dup := members[key]; dup {
			return nil, fmt.Errorf("%w %.64q", errDuplicateKey, key)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, errNotObject
		}
		members[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, errNotObject
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errNotObject
	}
	return members, nil
}

var (
	errNotObject    = errors.New("not a JSON object")
	errDuplicateKey = errors.New("duplicate key")
)

// member decodes members[name] into dst; a missing or null member leaves dst
// alone.
func member(members map[string]json.RawMessage, name string, dst any) error {
	raw, ok := members[name]
	if !ok || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field == "" {
			return fmt.Errorf("%q is a JSON %s, want %s", name, ute.Value, ute.Type)
		}
		return fmt.Errorf("%q: %w", name, err)
	}
	return nil
}

// MsgTypeText is the MsgType of a text element.
const MsgTypeText = "TIMTextElem"

// MsgElem is one element of a message, as in MsgBody. MsgContent is kept as
// raw JSON, so that an element the decider does not touch goes back to
// Tencent as it came.
type MsgElem struct {
	MsgType    string
	MsgContent json.RawMessage
}

// TextElem returns a text element.
func TextElem(text string) MsgElem {
	content, _ := json.Marshal(struct{ Text string }{text}) // cannot fail
	return MsgElem{MsgType: MsgTypeText, MsgContent: content}
}

// Text returns the text of a text element. ok is false for other elements
// and for a text element without a string Text.
func (e MsgElem) Text() (text string, ok bool) {
	if e.MsgType != MsgTypeText {
		return "", false
	}
	members, err := object(e.MsgContent)
	if err != nil {
		return "", false
	}
	raw, found := members["Text"]
	if !found || len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	if json.Unmarshal(raw, &text) != nil {
		return "", false
	}
	return text, true
}

// UnmarshalJSON reads an element, matching member names exactly.
func (e *MsgElem) UnmarshalJSON(b []byte) error {
	members, err := object(b)
	if err != nil {
		return err
	}
	*e = MsgElem{}
	if err := member(members, "MsgType", &e.MsgType); err != nil {
		return err
	}
	if raw, ok := members["MsgContent"]; ok {
		e.MsgContent = append(json.RawMessage(nil), raw...)
	}
	return nil
}

// EventTime is a Tencent event time in Unix milliseconds. Tencent sends it as
// a JSON number or as a string of digits; both unmarshal.
type EventTime int64

// Time returns t as a time.Time; the zero EventTime gives the zero Time.
func (t EventTime) Time() time.Time {
	if t == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(t))
}

// UnmarshalJSON accepts 1670574414123 and "1670574414123".
func (t *EventTime) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		return nil
	}
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("%s is not an integer number of milliseconds", b)
	}
	*t = EventTime(ms)
	return nil
}
