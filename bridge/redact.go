package bridge

import (
	"bytes"
	"net/url"
	"strings"
)

// Redacted stands in for a secret in anything timbus prints.
const Redacted = "REDACTED"

// RedactURLs returns a comma-separated list of NATS URLs with the
// credentials of each replaced: the password of user:password, or the whole
// user part when it is a token. A URL that does not parse loses everything
// between its scheme and its last '@', since its credentials cannot be told
// apart from the rest.
func RedactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		parts[i] = redactURL(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

func redactURL(s string) string {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		start := strings.Index(s, "://")
		if start < 0 || start > at {
			start = -3
		}
		return s[:start+3] + Redacted + s[at:]
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), Redacted)
	} else {
		u.User = url.User(Redacted) // a token
	}
	return u.String()
}

// redactURLsIn returns text with each URL of list in it redacted: errors of
// NATS clients and of url.Parse quote the URL they failed on.
func redactURLsIn(text, list string) string {
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u != "" {
			text = strings.ReplaceAll(text, u, redactURL(u))
		}
	}
	return text
}

// urlError is err with the URLs of list redacted from its text, and err
// still under it for errors.Is.
type urlError struct {
	err  error
	list string
}

func (e urlError) Error() string { return redactURLsIn(e.err.Error(), e.list) }
func (e urlError) Unwrap() error { return e.err }

// signParam is the query parameter holding a callback's signature. A
// captured Sign passes the check with any body until its RequestTime falls
// out of the window, so it is a secret for that long.
var signParam = []byte("sign=")

// redactSign returns text with the value of every Sign query parameter in
// it replaced, whatever its case, wherever it stands: fasthttp quotes the
// bytes it could not parse in its errors, and refusals carry the query.
// Text without one is returned as is, without copying.
func redactSign(text []byte) []byte {
	if !containsFold(text, signParam) {
		return text
	}
	out := make([]byte, 0, len(text))
	for len(text) > 0 {
		i := indexFold(text, signParam)
		if i < 0 {
			return append(out, text...)
		}
		// Only a parameter name: at the start, or after ?, & or a quote.
		end := i + len(signParam)
		out = append(out, text[:end]...)
		text = text[end:]
		if i > 0 && !bytes.ContainsRune([]byte("?&\"' \\"), rune(out[len(out)-len(signParam)-1])) {
			continue
		}
		n := 0
		for n < len(text) && !bytes.ContainsRune([]byte("&\"' \\#\r\n"), rune(text[n])) {
			n++
		}
		if n > 0 {
			out = append(out, Redacted...)
		}
		text = text[n:]
	}
	return out
}

func containsFold(s, sub []byte) bool { return indexFold(s, sub) >= 0 }

// indexFold is bytes.Index, ASCII case-insensitive; sub is lower case.
func indexFold(s, sub []byte) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		match := true
		for j, c := range sub {
			if b := s[i+j]; b != c && !('A' <= b && b <= 'Z' && b+'a'-'A' == c) {
				match = false
				break
			}
		}
		if match {
			return i
		}
	}
	return -1
}
