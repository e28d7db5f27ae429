package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/timbus-dev/timbus/deciders"
)

// command is the one Tencent callback this decider answers.
const command = "OfficialAccount.CallbackBeforeCreateOfficialAccount"

// errBadBody is wrapped by every error decide returns: the body is not one
// this decider can judge, which is its failure, not a reason to deny.
var errBadBody = errors.New("bad callback body")

// policy refuses official account names on a reserved list.
type policy struct {
	reserved map[string]struct{} // normalized names
	code     int
}

// decision is the verdict on one callback.
type decision struct {
	name    string // as Tencent sent it
	verdict deciders.Verdict
}

func newPolicy(reserved []string, code int) *policy {
	p := &policy{reserved: make(map[string]struct{}, len(reserved)), code: code}
	for _, name := range reserved {
		p.reserved[normalize(name)] = struct{}{}
	}
	return p
}

// normalize makes " Admin" and "ADMIN" the same name as "admin", so that a
// look-alike cannot slip past the list.
func normalize(name string) string {
	return strings.ToLower(strings.TrimSpace(name))
}

// decide judges the callback body Tencent sent.
func (p *policy) decide(body []byte) (decision, error) {
	name, err := nameOf(body)
	if err != nil {
		return decision{}, err
	}
	if _, ok := p.reserved[normalize(name)]; !ok {
		return decision{name: name, verdict: deciders.Allow()}, nil
	}
	return decision{
		name:    name,
		verdict: deciders.DenyWith(p.code, fmt.Sprintf("official account name %q is reserved", name)),
	}, nil
}

// nameOf returns the body's "Name". It matches the member name exactly, unlike
// encoding/json's struct decoding, which would also take "name".
func nameOf(body []byte) (string, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil {
		return "", fmt.Errorf("%w: not a JSON object: %v", errBadBody, err)
	}
	raw, ok := members["Name"]
	if !ok {
		return "", fmt.Errorf("%w: no \"Name\"", errBadBody)
	}
	var name string
	// null would decode into "" without an error.
	if err := json.Unmarshal(raw, &name); err != nil || raw[0] != '"' {
		return "", fmt.Errorf("%w: \"Name\" is not a string", errBadBody)
	}
	return name, nil
}
