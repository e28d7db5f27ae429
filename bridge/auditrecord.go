package bridge

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/timbus-dev/timbus/deciders/protocol"
	"github.com/timbus-dev/timbus/internal/jsonscan"
)

// Why not encoding/json: marshalling protocol.AuditRecord neither bounds a
// record to NATS's maximum payload (cutting the JSON values and saying so in
// "truncated") nor turns a raw value that is not valid JSON into a string:
// json.Marshal fails on such a json.RawMessage, and strangers write the body
// and the decider the answer. It is also slower:
// BenchmarkAuditEncodeVersusEncodingJSON (the record of BenchmarkAuditEncode),
// same run on the 2-core dev machine (shared, so ranges over 4 runs):
// ~600-1100 ns and 0 allocs here, ~2900-3100 ns and 2 allocs (688 B) for
// json.Marshal of the same fields.
//
// The encoder below writes every audit record, and alone decides what goes
// into one: callers hand it bytes from strangers (Tencent's body and query,
// a decider's reply) and it guarantees that the record is one valid JSON
// object whose fields are only those it writes, and that it fits NATS's
// maximum payload. So:
//   - bytes meant as JSON values (answer, body, shadow_verdict) are copied
//     as they are only when they are one valid JSON value, with any invalid
//     UTF-8 replaced by U+FFFD; anything else becomes a JSON string;
//   - text fields are escaped and cut to a bound of their own;
//   - when the JSON values do not fit what is left of the payload, they are
//     cut into JSON strings holding a prefix of their bytes.
//
// Every field cut is named in "truncated" with its size in bytes before
// the cut (protocol.AuditRecord.Truncated).

// Bounds on a text field's encoded size, quotes included. Strangers choose
// most of them (query values, error texts quoting them); none needs more.
const (
	auditShortField = 256  // identifiers and addresses
	auditTextField  = 2048 // reason, shadow_reason, query
)

// auditPayloadHeadroom is kept free beside a record for its NATS headers
// (Nats-Msg-Id with an audit stream).
const auditPayloadHeadroom = 1 << 10

// auditRawReserve is what the JSON values' keys and their entries in
// "truncated" may take beyond the values themselves.
const auditRawReserve = 256

// The fields holding JSON values, in the order of the record.
const (
	rawAnswer = iota
	rawBody
	rawShadowVerdict
	numRawFields
)

var rawFieldKeys = [numRawFields]string{"answer", "body", "shadow_verdict"}

// cut is a field shortened to fit, with its size before.
type cut struct {
	key  string
	size int
}

// recordWriter appends one record's fields to b, and notes those it cuts.
type recordWriter struct {
	b     []byte
	cuts  [16]cut // room for every field that can be cut
	ncuts int
}

func (w *recordWriter) cut(key string, size int) {
	if w.ncuts < len(w.cuts) {
		w.cuts[w.ncuts] = cut{key, size}
		w.ncuts++
	}
}

// text appends ,"key":"v" with v escaped and cut to max encoded bytes;
// empty v is left out.
func (w *recordWriter) text(key string, v []byte, max int) {
	if len(v) == 0 {
		return
	}
	w.b = append(w.b, ',', '"')
	w.b = append(w.b, key...)
	w.b = append(w.b, '"', ':')
	var whole bool
	if w.b, whole = appendJSONStringLimit(w.b, v, max); !whole {
		w.cut(key, len(v))
	}
}

func (w *recordWriter) str(key, v string, max int) { w.text(key, []byte(v), max) }

func (w *recordWriter) int(key string, v int64) {
	w.b = append(w.b, ',', '"')
	w.b = append(w.b, key...)
	w.b = append(w.b, '"', ':')
	w.b = strconv.AppendInt(w.b, v, 10)
}

// rawValue is a field meant to hold a JSON value, with what the encoder
// learnt of it: whether it is one valid JSON value, and its encoded size
// whole (as itself if valid, else as a JSON string).
type rawValue struct {
	v     []byte
	valid bool
	clean bool // valid UTF-8 throughout: copied as it is
	size  int
}

// checkedRawValue is newRawValue of a value that passed jsonscan.Check:
// valid JSON, valid UTF-8.
func checkedRawValue(v []byte) rawValue {
	if len(v) == 0 {
		return rawValue{}
	}
	return rawValue{v: v, valid: true, clean: true, size: len(v)}
}

func rawValueOf(v []byte, checked bool) rawValue {
	if checked {
		return checkedRawValue(v)
	}
	return newRawValue(v)
}

func newRawValue(v []byte) rawValue {
	if len(v) == 0 {
		return rawValue{}
	}
	if jsonscan.Valid(v) {
		return rawValue{v: v, valid: true, size: jsonValueSize(v)}
	}
	return rawValue{v: v, size: jsonStringSize(v)}
}

// raw appends ,"key":v within max encoded bytes, as described at the top;
// an empty value is left out.
func (w *recordWriter) raw(key string, r rawValue, max int) {
	if len(r.v) == 0 {
		return
	}
	if r.size > max {
		w.cut(key, len(r.v))
		if max < 2 {
			return // not even ""
		}
	}
	w.b = append(w.b, ',', '"')
	w.b = append(w.b, key...)
	w.b = append(w.b, '"', ':')
	switch {
	case r.clean && r.size <= max:
		w.b = append(w.b, r.v...)
	case r.valid && r.size <= max:
		w.b = appendJSONValue(w.b, r.v)
	default:
		w.b, _ = appendJSONStringLimit(w.b, r.v, max)
	}
}

// encode renders e as a protocol.AuditRecord in JSON of at most limit
// bytes (unless limit is smaller than the record without its JSON values,
// some 10 KiB at most).
func (e *auditEntry) encode(b []byte, limit int) []byte {
	var values [numRawFields]rawValue
	values[rawAnswer] = rawValueOf(e.answer, e.answerChecked)
	values[rawBody] = rawValueOf(e.get(e.body), e.bodyChecked)
	if e.shadowed {
		values[rawShadowVerdict] = newRawValue(e.shadowAnswer)
	}
	var sizes [numRawFields]int
	total := 0
	for i, v := range values {
		sizes[i] = v.size
		total += v.size
	}
	if e.fixedBound()+auditRawReserve+total <= limit {
		return e.appendRecord(b, &values, sizes) // the usual record: it fits
	}
	// The record without its JSON values first, to learn what they have
	// left; then the whole record with each value given its share.
	start := len(b)
	var none [numRawFields]int
	b = e.appendRecord(b, &values, none)
	left := limit - (len(b) - start) - auditRawReserve
	return e.appendRecord(b[:start], &values, share(left, sizes))
}

// auditRecordOverhead bounds what a record takes beyond its text fields and
// JSON values: keys, punctuation, numbers, the time and "truncated".
const auditRecordOverhead = 1 << 10

// fixedBound bounds the size of e's record without its JSON values.
func (e *auditEntry) fixedBound() int {
	n := auditRecordOverhead
	for _, f := range [...]struct {
		len, max int
	}{
		{e.id.end - e.id.start, auditShortField}, {len(e.app), auditShortField}, {len(e.command), auditShortField},
		{len(e.kind), auditShortField}, {e.clientIP.end - e.clientIP.start, auditShortField},
		{e.platform.end - e.platform.start, auditShortField}, {len(e.outcome), auditShortField},
		{len(e.reason), auditTextField}, {len(e.decider), auditShortField}, {len(e.query), auditTextField},
		{len(e.remote), auditShortField}, {len(e.shadowOutcome), auditShortField}, {len(e.shadowReason), auditTextField},
	} {
		n += min(6*f.len+2, f.max) // at worst six bytes for each byte
	}
	return n
}

// share divides budget among fields of the given sizes: the smaller ones
// whole when they fit an equal share, and what they leave to the larger.
func share(budget int, sizes [numRawFields]int) [numRawFields]int {
	var alloc [numRawFields]int
	order := [numRawFields]int{0, 1, 2}
	for i := 1; i < len(order); i++ { // insertion sort by size
		for j := i; j > 0 && sizes[order[j]] < sizes[order[j-1]]; j-- {
			order[j], order[j-1] = order[j-1], order[j]
		}
	}
	n := 0
	for _, s := range sizes {
		if s > 0 {
			n++
		}
	}
	budget = max(budget, 0)
	for _, i := range order {
		if sizes[i] == 0 {
			continue
		}
		alloc[i] = min(sizes[i], budget/n)
		budget -= alloc[i]
		n--
	}
	return alloc
}

// appendRecord appends the record with each JSON value bounded by alloc.
func (e *auditEntry) appendRecord(b []byte, values *[numRawFields]rawValue, alloc [numRawFields]int) []byte {
	w := recordWriter{b: b}
	w.b = append(w.b, `{"version":`...)
	w.b = strconv.AppendInt(w.b, protocol.AuditVersion, 10)
	w.text("request_id", e.get(e.id), auditShortField)
	w.b = append(w.b, `,"received_at":"`...)
	w.b = e.received.UTC().AppendFormat(w.b, time.RFC3339Nano)
	w.b = append(w.b, '"')
	w.str("sdkappid", e.app, auditShortField)
	w.str("command", e.command, auditShortField)
	w.str("kind", e.kind, auditShortField)
	w.text("client_ip", e.get(e.clientIP), auditShortField)
	w.text("opt_platform", e.get(e.platform), auditShortField)
	w.str("outcome", string(e.outcome), auditShortField)
	w.str("reason", e.reason, auditTextField)
	w.int("http_status", int64(e.status))
	w.int("code", int64(e.code))
	w.raw(rawFieldKeys[rawAnswer], values[rawAnswer], alloc[rawAnswer])
	w.str("decider", e.decider, auditShortField)
	w.b = append(w.b, `,"latency_ms":`...)
	w.b = strconv.AppendFloat(w.b, float64(e.latency.Microseconds())/1000, 'f', -1, 64)
	w.raw(rawFieldKeys[rawBody], values[rawBody], alloc[rawBody])
	w.str("query", e.query, auditTextField)
	w.str("remote", e.remote, auditShortField)
	if e.shadowed {
		w.str("shadow_outcome", string(e.shadowOutcome), auditShortField)
		w.int("shadow_code", int64(e.shadowCode))
		w.raw(rawFieldKeys[rawShadowVerdict], values[rawShadowVerdict], alloc[rawShadowVerdict])
		w.str("shadow_reason", e.shadowReason, auditTextField)
		w.b = append(w.b, `,"agrees":`...)
		w.b = strconv.AppendBool(w.b, e.shadowCode == e.code)
	}
	if w.ncuts > 0 {
		w.b = append(w.b, `,"truncated":{`...)
		for i, c := range w.cuts[:w.ncuts] {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.b = append(w.b, '"')
			w.b = append(w.b, c.key...)
			w.b = append(w.b, '"', ':')
			w.b = strconv.AppendInt(w.b, int64(c.size), 10)
		}
		w.b = append(w.b, '}')
	}
	return append(w.b, '}')
}

// appendJSONValue appends v, one valid JSON value, with each byte of
// invalid UTF-8 replaced by \ufffd. Outside strings valid JSON is ASCII,
// so such bytes are inside strings, where the escape is valid.
func appendJSONValue(b, v []byte) []byte {
	if utf8.Valid(v) {
		return append(b, v...)
	}
	run := 0 // start of the bytes not yet copied
	for i := 0; i < len(v); {
		if v[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(v[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, v[run:i]...)
			b = append(b, `\ufffd`...)
			run = i + 1
		}
		i += size
	}
	return append(b, v[run:]...)
}

// jsonValueSize is len(appendJSONValue(nil, v)).
func jsonValueSize(v []byte) int {
	n := len(v)
	if utf8.Valid(v) {
		return n
	}
	for i := 0; i < len(v); {
		if v[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(v[i:])
		if r == utf8.RuneError && size == 1 {
			n += len(`\ufffd`) - 1
		}
		i += size
	}
	return n
}

// jsonStringSize is len(appendJSONString(nil, s)).
func jsonStringSize(s []byte) int {
	n := 2
	for i := 0; i < len(s); {
		size, out := jsonStringUnit(s[i:])
		n += out
		i += size
	}
	return n
}

// jsonStringUnit returns the size of the first character of s (a byte of
// invalid UTF-8 counts as one) and of its encoding in a JSON string.
func jsonStringUnit(s []byte) (size, out int) {
	c := s[0]
	if c < utf8.RuneSelf {
		switch {
		case c == '"' || c == '\\':
			return 1, 2
		case c < 0x20:
			return 1, 6
		}
		return 1, 1
	}
	r, size := utf8.DecodeRune(s)
	if r == utf8.RuneError && size == 1 {
		return 1, 6
	}
	return size, size
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b, s []byte) []byte {
	b, _ = appendJSONStringLimit(b, s, -1)
	return b
}

// appendJSONStringLimit appends s as a JSON string of at most max bytes,
// quotes included (no bound when max < 0), cut after the last character
// that fits; whole reports whether all of s is in. Invalid UTF-8 becomes
// U+FFFD. max must be at least 2 for "" when it is not negative.
func appendJSONStringLimit(b, s []byte, max int) (_ []byte, whole bool) {
	end := len(b) + max - 1 // the closing quote's place
	if max < 0 {
		end = int(^uint(0) >> 1)
	}
	b = append(b, '"')
	for i := 0; i < len(s); {
		// Most text is printable ASCII, copied as it is in runs.
		j := i
		for j < len(s) && plainASCII[s[j]] {
			j++
		}
		if j > i {
			if room := end - len(b); j-i > room {
				return append(append(b, s[i:i+room]...), '"'), false
			}
			b = append(b, s[i:j]...)
			i = j
			continue
		}
		size, out := jsonStringUnit(s[i:])
		if len(b)+out > end {
			return append(b, '"'), false
		}
		c := s[i]
		switch {
		case out == size:
			b = append(b, s[i:i+size]...)
		case out == 2:
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, `\ufffd`...)
		}
		i += size
	}
	return append(b, '"'), true
}

// plainASCII marks the bytes a JSON string holds as they are.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()
