package bridge

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// signer checks Tencent's callback signature: with authentication on,
// Tencent adds Sign and RequestTime to the URL, where Sign is the lowercase
// hex SHA-256 of the token followed by RequestTime (Unix seconds).
type signer struct {
	token  []byte
	window time.Duration
	now    func() time.Time
}

// authError says why a request's signature was refused; reason is the
// machine-readable token in the answer.
type authError struct {
	reason string
	msg    string
}

func (e *authError) Error() string { return e.msg }

var (
	errMissingSign  = &authError{"missing_signature", "Sign and RequestTime are required: callback authentication is on for this SdkAppid"}
	errBadTime      = &authError{"bad_request_time", "RequestTime must be Unix seconds"}
	errStaleTime    = &authError{"stale_request_time", "RequestTime is too far from now: replayed, delayed or from a skewed clock"}
	errBadSignature = &authError{"bad_signature", "Sign does not match the token and RequestTime"}
)

// check verifies sign against requestTime. It does not allocate.
func (s *signer) check(sign, requestTime []byte) *authError {
	if len(sign) == 0 || len(requestTime) == 0 {
		return errMissingSign
	}
	if len(requestTime) > 19 {
		return errBadTime
	}
	secs, err := strconv.ParseInt(bytesString(requestTime), 10, 64)
	if err != nil {
		return errBadTime
	}
	if skew := s.now().Sub(time.Unix(secs, 0)); skew > s.window || skew < -s.window {
		return errStaleTime
	}
	var buf [maxTokenLen + 20]byte
	sum := sha256.Sum256(append(append(buf[:0], s.token...), requestTime...))
	var want [sha256.Size * 2]byte
	hex.Encode(want[:], sum[:])
	var got [sha256.Size * 2]byte
	if len(sign) != len(got) {
		return errBadSignature
	}
	for i, c := range sign {
		if 'A' <= c && c <= 'F' {
			c += 'a' - 'A'
		}
		got[i] = c
	}
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return errBadSignature
	}
	return nil
}

// maxTokenLen is Tencent's limit on a callback token.
const maxTokenLen = 128

// sourceFilter admits requests from allowed networks. A request that comes
// through a trusted proxy is judged by the client address the proxy reports
// in its header; from anyone else that header is ignored, since any client
// can write it.
type sourceFilter struct {
	allow   []netip.Prefix
	proxies []netip.Prefix
	header  []byte
}

// client returns the address a request is judged by.
func (f *sourceFilter) client(peer net.IP, header func(key []byte) []byte) netip.Addr {
	addr, _ := netip.AddrFromSlice(peer)
	addr = addr.Unmap()
	if !contains(f.proxies, addr) {
		return addr
	}
	// X-Forwarded-For lists hops left to right; the rightmost entry not added
	// by one of our own proxies is the first one we can trust.
	value := header(f.header)
	for len(value) > 0 {
		hop := value
		if i := bytes.LastIndexByte(value, ','); i >= 0 {
			hop, value = value[i+1:], value[:i]
		} else {
			value = nil
		}
		a, err := netip.ParseAddr(bytesString(bytes.TrimSpace(hop)))
		if err != nil {
			return netip.Addr{} // unparseable: judged as unknown
		}
		a = a.Unmap()
		if !contains(f.proxies, a) {
			return a
		}
		addr = a
	}
	return addr
}

func (f *sourceFilter) allowed(addr netip.Addr) bool { return contains(f.allow, addr) }

func contains(prefixes []netip.Prefix, addr netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// parsePrefixes reads CIDRs, or single addresses meaning just that host.
func parsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, err
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
