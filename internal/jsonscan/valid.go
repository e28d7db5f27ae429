package jsonscan

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"unicode/utf8"
)

// maxDepth is encoding/json's nesting limit, so that Valid accepts exactly
// what json.Valid accepts.
const maxDepth = 10000

// MaxDepth is the nesting limit of Check and Object: a document may hold
// containers inside containers up to MaxDepth levels, the outermost counting
// as one. Tencent's callbacks nest fewer than 10 levels; decoders that recurse
// need not be trusted with more. It is also the size of the validator's stack
// buffer, so that Check does not allocate unless it fails.
const MaxDepth = 64

// fault says why a document was refused, and which error Check returns.
type fault uint8

const (
	faultNone      fault = iota
	faultSyntax          // not JSON at all
	faultUTF8            // a string holds bytes that are not UTF-8
	faultSurrogate       // a \u escape of half a surrogate pair
	faultDepth           // nested deeper than the limit
	faultNULKey          // an object key holds \u0000
)

// Valid reports whether b is one valid JSON value, with whitespace around it
// allowed. It accepts exactly what encoding/json's Valid accepts (strings are
// not checked for valid UTF-8, nesting is limited to 10000 levels) in one
// pass without allocating for documents nested less than 64 levels; it is
// several times faster because it is a plain loop, not a state machine of
// function values.
func Valid(b []byte) bool {
	f, _ := scan(b, false)
	return f == faultNone
}

// Check is the validation of a document timbus forwards or accepts from a
// decider: b must be one valid JSON value, as for Valid, and in addition
//   - every string, keys included, must be valid UTF-8, and a \u escape of a
//     UTF-16 surrogate must be the first half of a pair followed by the second
//     half: a lone surrogate is not a character, and decoders disagree on it
//     (encoding/json substitutes U+FFFD, others fail or keep it);
//   - no object key may hold \u0000, which C decoders read as the key's end;
//   - nesting may not exceed MaxDepth levels.
//
// It returns nil or an error wrapping ErrSyntax, ErrUTF8, ErrNULKey or
// ErrDepth that says where the document broke the rule. It takes one pass and
// does not allocate unless it fails.
func Check(b []byte) error {
	f, at := scan(b, true)
	switch f {
	case faultNone:
		return nil
	case faultUTF8:
		return fmt.Errorf("%w at byte %d", ErrUTF8, at)
	case faultSurrogate:
		return fmt.Errorf("%w: an unpaired UTF-16 surrogate escape at byte %d", ErrUTF8, at)
	case faultDepth:
		return fmt.Errorf("%w of %d levels at byte %d", ErrDepth, MaxDepth, at)
	case faultNULKey:
		return fmt.Errorf("%w at byte %d", ErrNULKey, at)
	}
	return fmt.Errorf("%w: at byte %d", ErrSyntax, at)
}

// scan validates b and returns faultNone, or the first fault and the index
// where it was found. strict selects Check's rules over Valid's.
func scan(b []byte, strict bool) (fault, int) {
	limit := maxDepth
	if strict {
		limit = MaxDepth
	}
	var stackBuf [MaxDepth]byte
	stack := stackBuf[:0] // '{' or '[' per open container
	var f fault
	i := skipSpace(b, 0)
	for {
		// A value starts at b[i].
		if i >= len(b) {
			return faultSyntax, i
		}
		switch c := b[i]; c {
		case '{', '[':
			if len(stack) == limit {
				return faultDepth, i
			}
			stack = append(stack, c)
			i = skipSpace(b, i+1)
			if i < len(b) && b[i] == closer(c) {
				stack = stack[:len(stack)-1]
				i++
				break
			}
			if c == '{' {
				if i, f = memberKey(b, i, strict); f != faultNone {
					return f, i
				}
			}
			continue
		case '"':
			if i, f = stringEnd(b, i, strict, false); f != faultNone {
				return f, i
			}
		case 't', 'f', 'n':
			j := literalEnd(b, i)
			if j < 0 {
				return faultSyntax, i
			}
			i = j
		default:
			start := i
			if i = numberEnd(b, i); i < 0 {
				return faultSyntax, start
			}
		}
		// A value ended just before b[i]: close containers, or go on to the
		// next member or element.
		for {
			i = skipSpace(b, i)
			if len(stack) == 0 {
				if i != len(b) {
					return faultSyntax, i
				}
				return faultNone, 0
			}
			if i >= len(b) {
				return faultSyntax, i
			}
			top := stack[len(stack)-1]
			if b[i] == closer(top) {
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			if b[i] != ',' {
				return faultSyntax, i
			}
			i = skipSpace(b, i+1)
			if top == '{' {
				if i, f = memberKey(b, i, strict); f != faultNone {
					return f, i
				}
			}
			break
		}
	}
}

func closer(open byte) byte {
	if open == '{' {
		return '}'
	}
	return ']'
}

// memberKey checks `"key" :` at b[i] and returns the index of the value
// after it, or the fault and where it was found.
func memberKey(b []byte, i int, strict bool) (int, fault) {
	if i >= len(b) || b[i] != '"' {
		return i, faultSyntax
	}
	i, f := stringEnd(b, i, strict, true)
	if f != faultNone {
		return i, f
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return i, faultSyntax
	}
	return skipSpace(b, i+1), faultNone
}

// Bytes of a little-endian word, for testing eight string bytes at once.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// specials marks with its high bit each byte of the little-endian word w
// that ends a run of plain string bytes: a quote, a backslash, a control
// character, and if utf8 a byte of a multi-byte UTF-8 sequence.
// (x - ones) & ^x & highs marks the zero bytes of x; a borrow can also mark
// bytes above a marked one, never below, so the lowest mark is always right.
func specials(w uint64, utf8 bool) uint64 {
	q, bs := w^(ones*'"'), w^(ones*'\\')
	m := (w - ones*0x20) & ^w // bytes below 0x20
	m |= (q - ones) & ^q
	m |= (bs - ones) & ^bs
	if utf8 {
		m |= w
	}
	return m & highs
}

// stringEnd returns the index just past the valid string starting at
// b[i] == '"', or the fault and where it was found. strict adds Check's
// rules; key says the string is an object key.
func stringEnd(b []byte, i int, strict, key bool) (int, fault) {
	i++
	for {
		// Most strings are plain ASCII: skip them eight bytes at a time.
		for i+8 <= len(b) {
			if m := specials(binary.LittleEndian.Uint64(b[i:]), strict); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i >= len(b) {
			return i, faultSyntax
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, faultNone
		case c == '\\':
			var f fault
			if i, f = escapeEnd(b, i, strict, key); f != faultNone {
				return i, f
			}
		case c < 0x20:
			return i, faultSyntax
		case c < utf8.RuneSelf || !strict:
			i++
		default:
			// A run of multi-byte characters ends at an ASCII byte, which
			// no multi-byte sequence holds.
			j := i + 1
			for j < len(b) && b[j] >= utf8.RuneSelf {
				j++
			}
			if !utf8.Valid(b[i:j]) {
				for {
					r, n := utf8.DecodeRune(b[i:j])
					if r == utf8.RuneError && n == 1 {
						return i, faultUTF8
					}
					i += n
				}
			}
			i = j
		}
	}
}

// escapeEnd returns the index just past the valid escape at b[i] == '\\',
// or the fault and where it was found.
func escapeEnd(b []byte, i int, strict, key bool) (int, fault) {
	start := i
	i++
	if i >= len(b) {
		return i, faultSyntax
	}
	switch b[i] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return i + 1, faultNone
	case 'u':
	default:
		return i, faultSyntax
	}
	r, ok := hex4(b, i+1)
	if !ok {
		return i, faultSyntax
	}
	i += 5
	if !strict {
		return i, faultNone
	}
	switch {
	case r == 0 && key:
		return start, faultNULKey
	case 0xDC00 <= r && r <= 0xDFFF:
		return start, faultSurrogate
	case 0xD800 <= r && r < 0xDC00:
		if i+1 >= len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return start, faultSurrogate
		}
		low, ok := hex4(b, i+2)
		if !ok {
			return i + 1, faultSyntax
		}
		if low < 0xDC00 || low > 0xDFFF {
			return start, faultSurrogate
		}
		return i + 6, faultNone
	}
	return i, faultNone
}

// hex4 decodes the four hex digits at b[i:i+4].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, h := range b[i : i+4] {
		switch {
		case '0' <= h && h <= '9':
			h -= '0'
		case 'a' <= h && h <= 'f':
			h -= 'a' - 10
		case 'A' <= h && h <= 'F':
			h -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(h)
	}
	return r, true
}

// literalEnd returns the index just past the literal true, false or null
// that b[i] starts, or -1.
func literalEnd(b []byte, i int) int {
	lit := "null"
	switch b[i] {
	case 't':
		lit = "true"
	case 'f':
		lit = "false"
	}
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// numberEnd returns the index just past the valid number starting at b[i],
// or -1.
func numberEnd(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return -1
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i = digitsEnd(b, i)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		j := digitsEnd(b, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digitsEnd(b, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func digitsEnd(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}
