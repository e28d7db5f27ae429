// Package jsonscan walks JSON without decoding it: it validates a document and
// hands out the raw bytes of members and elements, so that the request path can
// inspect a callback body or a decider's reply without allocating or copying.
package jsonscan

import (
	"encoding/json"
	"errors"
)

// Sentinel errors. Callers test them with errors.Is.
var (
	ErrSyntax    = errors.New("not valid JSON")
	ErrNotObject = errors.New("not a JSON object")
	ErrNotArray  = errors.New("not a JSON array")
)

// Object checks that b holds exactly one valid JSON object (whitespace around
// it is allowed) and calls fn with the raw key (without quotes, escapes left
// as written) and raw value of each top-level member, in document order. It
// stops at the first error fn returns and returns it.
func Object(b []byte, fn func(key, value []byte) error) error {
	if !Valid(b) {
		return ErrSyntax
	}
	return members(b, fn)
}

// Members is Object for a value already known to be valid JSON, such as a
// member handed out by Object. It does not validate again.
func Members(v []byte, fn func(key, value []byte) error) error {
	return members(v, fn)
}

func members(b []byte, fn func(key, value []byte) error) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return ErrNotObject
	}
	i = skipSpace(b, i+1)
	if b[i] == '}' {
		return nil
	}
	for {
		start := i
		i = skipString(b, i)
		key := b[start+1 : i-1]
		i = skipSpace(b, i)
		i = skipSpace(b, i+1) // past ':'
		start = i
		i = skipValue(b, i)
		if err := fn(key, b[start:i]); err != nil {
			return err
		}
		i = skipSpace(b, i)
		if b[i] != ',' {
			return nil
		}
		i = skipSpace(b, i+1)
	}
}

// Elements calls fn with the raw bytes of each element of v, a valid JSON
// value handed out by Object or Members. It returns ErrNotArray if v is not an
// array.
func Elements(v []byte, fn func(elem []byte) error) error {
	i := skipSpace(v, 0)
	if i >= len(v) || v[i] != '[' {
		return ErrNotArray
	}
	i = skipSpace(v, i+1)
	if v[i] == ']' {
		return nil
	}
	for {
		start := i
		i = skipValue(v, i)
		if err := fn(v[start:i]); err != nil {
			return err
		}
		i = skipSpace(v, i)
		if v[i] != ',' {
			return nil
		}
		i = skipSpace(v, i+1)
	}
}

// String returns the contents of v if it is a JSON string. Escapes are
// decoded, which allocates only when the string holds a backslash.
func String(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' {
		return nil, false
	}
	raw := v[1 : len(v)-1]
	for _, c := range raw {
		if c == '\\' {
			var s string
			if json.Unmarshal(v, &s) != nil {
				return nil, false
			}
			return []byte(s), true
		}
	}
	return raw, true
}

// Int returns v as an integer if it is a JSON number without fraction or
// exponent that fits in an int64.
func Int(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	neg := v[0] == '-'
	digits := v
	if neg {
		digits = v[1:]
	}
	if len(digits) == 0 || len(digits) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// IsObject reports whether the valid JSON value v is an object.
func IsObject(v []byte) bool { return len(v) > 0 && v[0] == '{' }

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just past the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the index just past the valid JSON value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}
