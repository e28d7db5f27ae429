package bridge

import (
	"encoding/hex"
	"math/rand/v2"
)

// Why not a library: the maintained traceparent parser is OpenTelemetry's
// propagation.TraceContext, which reads from a context and a header carrier
// and would bring the OpenTelemetry API in for 55 bytes; timbus only checks
// the incoming value and swaps the span id, on the request path, without
// allocating. BenchmarkTraceparentVersusPlain, same run on the 2-core dev
// machine (shared, so ranges over 4 runs): ~90-220 ns and 0 allocs here,
// ~440-790 ns and 6 allocs (224 B) for the same done the plain way
// (strings.Split, hex.DecodeString, string concatenation).

// HeaderTraceparent carries W3C trace context (OpenTelemetry's propagation
// format) from Tencent's request, if it has one, to the deciders.
const HeaderTraceparent = "traceparent"

// traceparentLen is the length of a version-00 traceparent:
// "00-" + 32 hex trace id + "-" + 16 hex span id + "-" + 2 hex flags.
const traceparentLen = 55

// appendTraceparent appends the traceparent for the decide request: the
// incoming trace id and flags with a new span id, or a new trace when the
// incoming value is missing or malformed. A trace timbus starts is not marked
// sampled: the sampling decision belongs to whoever records traces, and a
// sampled traceparent makes every NATS server on the way parse the headers
// of every message for its own message tracing.
func appendTraceparent(dst, incoming []byte) []byte {
	var span [8]byte
	putRandom(span[:])
	if validTraceparent(incoming) {
		dst = append(dst, incoming[:36]...) // "00-<trace id>-"
		dst = hex.AppendEncode(dst, span[:])
		return append(dst, incoming[52:]...) // "-<flags>"
	}
	var trace [16]byte
	putRandom(trace[:])
	dst = append(dst, "00-"...)
	dst = hex.AppendEncode(dst, trace[:])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, span[:])
	return append(dst, "-00"...)
}

func putRandom(b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rand.Uint64()
		for j := i; j < len(b) && j < i+8; j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
}

func validTraceparent(v []byte) bool {
	if len(v) != traceparentLen || v[0] != '0' || v[1] != '0' || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return false
	}
	allZero := func(b []byte) bool {
		for _, c := range b {
			if c != '0' {
				return false
			}
		}
		return true
	}
	for i, c := range v {
		if i == 2 || i == 35 || i == 52 {
			continue
		}
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return !allZero(v[3:35]) && !allZero(v[36:52])
}
