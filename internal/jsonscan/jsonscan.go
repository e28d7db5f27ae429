// Package jsonscan walks JSON without decoding it: it validates a document and
// hands out the raw bytes of members and elements, so that the request path can
// inspect a callback body or a decider's reply without allocating or copying.
//
// Object and Members hand out keys decoded, and refuse an object that holds a
// key twice once decoded: "Error\u0043ode" is "ErrorCode", and a reader of
// the document would take one of the two values, which one depending on its
// decoder.
//
// Why not encoding/json: it has no way to look into a document without
// decoding it (a json.Decoder's tokens and an Unmarshal into
// json.RawMessage values allocate); json.Valid accepts invalid UTF-8
// ("\xff" inside a string), which Check refuses; and Unmarshal takes the last of two keys that
// match, case-insensitively ({"ErrorCode":1,"errorcode":0} gives 0), where
// a reply's reader must see the one value every decoder sees. It is slower
// too: BenchmarkValid and BenchmarkCheck report this package's time over
// json.Valid's in the same run ("x_encoding_json"): 0.34 for Valid, 0.24
// (ASCII) and 0.29 (Chinese text) for Check on the 2-core dev machine,
// with 0 allocs.
package jsonscan

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"
)

// Sentinel errors. Callers test them with errors.Is.
var (
	ErrSyntax       = errors.New("not valid JSON")
	ErrNotObject    = errors.New("not a JSON object")
	ErrNotArray     = errors.New("not a JSON array")
	ErrUTF8         = errors.New("a string is not valid UTF-8")
	ErrDepth        = errors.New("nested deeper than the limit")
	ErrNULKey       = errors.New(`a key holds the NUL character \u0000`)
	ErrDuplicateKey = errors.New("duplicate key")
)

// Object checks b with Check, so that b holds exactly one valid JSON object
// (whitespace around it is allowed) within Check's limits, and calls fn with
// the key and raw value of each top-level member, in document order. The key
// is decoded: escapes are resolved, which copies only a key holding a
// backslash; fn must not keep it after it returns. A key that repeats an
// earlier one, once decoded, makes Object return an error wrapping
// ErrDuplicateKey instead of calling fn for it. Object stops at the first
// error fn returns and returns it.
func Object(b []byte, fn func(key, value []byte) error) error {
	if err := Check(b); err != nil {
		return err
	}
	return members(b, fn)
}

// Members is Object for a value already checked, such as a member handed out
// by Object. It does not validate again, but it decodes keys and refuses
// duplicates as Object does.
func Members(v []byte, fn func(key, value []byte) error) error {
	return members(v, fn)
}

// keysInline is how many keys of one object members tells apart by
// comparing each new key with those before it, without allocating. Past it,
// a map of the decoded keys takes over, so that an object with a great many
// keys costs linear time, and memory no larger than its keys.
const keysInline = 32

// keySeed seeds the hashes of long keys: a sender cannot choose keys that
// collide.
var keySeed = maphash.MakeSeed()

// fingerprint tells decoded keys apart. A key of up to 16 bytes is its own
// fingerprint: its bytes, zero-padded, and its length. A longer key's is a
// hash and its length, with the top bit set; two such keys alike need a
// full comparison.
type fingerprint [3]uint64

const longKey = 1 << 63

func fingerprintOf(key []byte) fingerprint {
	if len(key) > 16 {
		return fingerprint{maphash.Bytes(keySeed, key), 0, longKey | uint64(len(key))}
	}
	var buf [16]byte
	copy(buf[:], key)
	return fingerprint{binary.LittleEndian.Uint64(buf[:8]), binary.LittleEndian.Uint64(buf[8:]), uint64(len(key))}
}

// span is where a key is written in the document, and whether it holds an
// escape.
type span struct {
	start, end int
	escaped    bool
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
	var (
		prints   [keysInline]fingerprint
		spans    [keysInline]span
		n        int
		seenBits uint64              // see below
		many     map[string]struct{} // past keysInline keys
		decoded  []byte              // the current key, if it has escapes
	)
	for {
		start := i
		var escaped bool
		i, escaped = skipStringEscaped(b, i)
		raw := b[start+1 : i-1]
		key := raw
		if escaped {
			decoded = appendUnescaped(decoded[:0], raw)
			key = decoded
		}
		if n < keysInline {
			fp := fingerprintOf(key)
			// One bit per key, at a place chosen by its fingerprint: a key
			// whose bit is not yet set is new, and needs no comparison.
			bit := uint64(1) << ((fp[0]*0x9E3779B97F4A7C15 ^ fp[1]*0xC2B2AE3D27D4EB4F ^ fp[2]) >> 58)
			if seenBits&bit != 0 {
				for j := range n {
					if prints[j] == fp && (fp[2]&longKey == 0 || spans[j].is(b, key)) {
						return duplicate(key, raw)
					}
				}
			}
			seenBits |= bit
			prints[n], spans[n] = fp, span{start + 1, i - 1, escaped}
		} else {
			if many == nil {
				many = make(map[string]struct{}, 2*keysInline)
				for _, s := range spans[:] {
					many[string(appendUnescaped(nil, b[s.start:s.end]))] = struct{}{}
				}
			}
			if _, dup := many[string(key)]; dup {
				return duplicate(key, raw)
			}
			many[string(key)] = struct{}{}
		}
		n++
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

// is reports whether the key written at s in b decodes to key.
func (s span) is(b, key []byte) bool {
	raw := b[s.start:s.end]
	if !s.escaped {
		return bytes.Equal(raw, key)
	}
	var buf [128]byte
	return bytes.Equal(appendUnescaped(buf[:0], raw), key)
}

// duplicate says which key repeats, cut to 64 characters: the error ends up
// in logs and answers, and a key can be as long as the document.
func duplicate(key, raw []byte) error {
	if bytes.Equal(key, raw) {
		return fmt.Errorf("%w %.64q", ErrDuplicateKey, key)
	}
	return fmt.Errorf("%w %.64q (written \"%.64s\")", ErrDuplicateKey, key, raw)
}

// appendUnescaped appends the decoding of raw, the inside of a valid JSON
// string, to dst. As encoding/json does, it decodes an unpaired surrogate
// escape to U+FFFD; bytes that are not escapes are copied as they are.
func appendUnescaped(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		j := bytes.IndexByte(raw[i:], '\\')
		if j < 0 {
			return append(dst, raw[i:]...)
		}
		dst = append(dst, raw[i:i+j]...)
		i += j + 1 // past the backslash
		if i >= len(raw) {
			return dst
		}
		c := raw[i]
		i++
		switch c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(raw, i)
			if !ok {
				return dst
			}
			i += 4
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					if low, ok := hex4(raw, i+2); ok {
						r2 = low
					}
				}
				if r = utf16.DecodeRune(r, r2); r != utf8.RuneError {
					i += 6
				}
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
	}
	return dst
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
	i, _ = skipStringEscaped(b, i)
	return i
}

// skipStringEscaped is skipString, and reports whether the string holds an
// escape.
func skipStringEscaped(b []byte, i int) (int, bool) {
	escaped := false
	for i++; i < len(b); i++ {
		// Skip runs without quote or backslash eight bytes at a time.
		for i+8 <= len(b) {
			w := binary.LittleEndian.Uint64(b[i:])
			q, bs := w^(ones*'"'), w^(ones*'\\')
			if m := ((q-ones) & ^q | (bs-ones) & ^bs) & highs; m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i >= len(b) {
			break
		}
		switch b[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			return i + 1, escaped
		}
	}
	return i, escaped
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
