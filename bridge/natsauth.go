package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// ErrNATSAuth is wrapped by Start's error when the NATS server refused the
// bridge's credentials or TLS: retrying would only hide the mistake.
var ErrNATSAuth = errors.New("bridge: NATS refused the connection")

// NATSAuth is how a NATS client of timbus proves who it is. At most one of
// CredsFile, NKeyFile, User (with Password) and Token is set; TLS may be
// added to any of them, or used alone.
type NATSAuth struct {
	// CredsFile is a decentralised-auth .creds file: a user JWT and its
	// NKey seed.
	CredsFile string
	// NKeyFile holds an NKey user seed (SU...).
	NKeyFile string
	// User and Password authenticate by name.
	User     string
	Password string
	// Token is a bare authorization token.
	Token string
	// TLSCA is a PEM file of CAs trusted for the server's certificate,
	// instead of the system's.
	TLSCA string
	// TLSCert and TLSKey are a client certificate and its key, for servers
	// that verify clients (mutual TLS).
	TLSCert string
	TLSKey  string
}

// IsZero reports whether no credential nor TLS setting is given.
func (a NATSAuth) IsZero() bool { return a == NATSAuth{} }

// credential names the kinds of credential given, for errors.
func (a NATSAuth) credentials() []string {
	var kinds []string
	if a.CredsFile != "" {
		kinds = append(kinds, "nats-creds")
	}
	if a.NKeyFile != "" {
		kinds = append(kinds, "nats-nkey")
	}
	if a.User != "" || a.Password != "" {
		kinds = append(kinds, "nats-user")
	}
	if a.Token != "" {
		kinds = append(kinds, "nats-token")
	}
	return kinds
}

// Validate reports the first setting that cannot work with the NATS URLs
// of urls (comma-separated): two credentials at once, a password without a
// user, a certificate without its key, a file that cannot be read. Secrets
// never appear in its errors.
func (a NATSAuth) Validate(urls string) error {
	bad := func(field string, value any, err error) error {
		return &ConfigError{Field: field, Value: value, Err: err}
	}
	kinds := a.credentials()
	if len(kinds) > 1 {
		return bad(kinds[1], "", fmt.Errorf("%w: give only one NATS credential, not %s", ErrInvalidValue, strings.Join(kinds, " and ")))
	}
	if a.Password != "" && a.User == "" {
		return bad("nats-password", "(secret)", fmt.Errorf("%w: needs nats-user", ErrMissing))
	}
	if a.User != "" && a.Password == "" {
		return bad("nats-user", a.User, fmt.Errorf("%w: needs nats-password", ErrMissing))
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		if a.TLSCert == "" {
			return bad("nats-tls-cert", "", fmt.Errorf("%w: nats-tls-key needs its certificate", ErrMissing))
		}
		return bad("nats-tls-key", "", fmt.Errorf("%w: nats-tls-cert needs its key", ErrMissing))
	}
	for _, f := range []struct{ field, path string }{
		{"nats-creds", a.CredsFile}, {"nats-nkey", a.NKeyFile},
		{"nats-tls-ca", a.TLSCA}, {"nats-tls-cert", a.TLSCert}, {"nats-tls-key", a.TLSKey},
	} {
		if f.path == "" {
			continue
		}
		if fh, err := os.Open(f.path); err != nil {
			return bad(f.field, f.path, fmt.Errorf("%w: %w", ErrInvalidValue, err))
		} else {
			fh.Close()
		}
	}
	if len(kinds) > 0 {
		for _, u := range strings.Split(urls, ",") {
			if pu, err := url.Parse(strings.TrimSpace(u)); err == nil && pu.User != nil {
				return bad(kinds[0], "", fmt.Errorf("%w: a NATS URL carries credentials too (%s); give them one way", ErrInvalidValue, RedactURLs(strings.TrimSpace(u))))
			}
		}
	}
	return nil
}

// Options are the nats.go options carrying a's credentials and TLS.
func (a NATSAuth) Options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case a.CredsFile != "":
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	case a.NKeyFile != "":
		o, err := nats.NkeyOptionFromSeed(a.NKeyFile)
		if err != nil {
			return nil, &ConfigError{Field: "nats-nkey", Value: a.NKeyFile, Err: fmt.Errorf("%w: %w", ErrInvalidValue, err)}
		}
		opts = append(opts, o)
	case a.User != "":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	case a.Token != "":
		opts = append(opts, nats.Token(a.Token))
	}
	if a.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if a.TLSCert != "" {
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	}
	return opts, nil
}

// String says which kind of credential is in use, never its value.
func (a NATSAuth) String() string {
	var parts []string
	switch {
	case a.CredsFile != "":
		parts = append(parts, "creds file "+a.CredsFile)
	case a.NKeyFile != "":
		parts = append(parts, "nkey "+a.NKeyFile)
	case a.User != "":
		parts = append(parts, "user "+a.User+" with password")
	case a.Token != "":
		parts = append(parts, "token")
	}
	if a.TLSCA != "" || a.TLSCert != "" {
		tlsParts := []string{}
		if a.TLSCA != "" {
			tlsParts = append(tlsParts, "ca "+a.TLSCA)
		}
		if a.TLSCert != "" {
			tlsParts = append(tlsParts, "client cert "+a.TLSCert)
		}
		parts = append(parts, "tls: "+strings.Join(tlsParts, ", "))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

// IsAuthError reports whether err, from a NATS connect, means the server
// refused who the client is or the TLS it offered, rather than being
// unreachable: no retry will cure it.
func IsAuthError(err error) bool {
	for _, e := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked,
		nats.ErrAccountAuthExpired, nats.ErrSecureConnWanted, nats.ErrSecureConnRequired, nats.ErrNkeysNotSupported,
		// With TLS 1.3 a server refusing the client certificate closes the
		// connection after the handshake; nats.go says so under ErrTLS.
		nats.ErrTLS} {
		if errors.Is(err, e) {
			return true
		}
	}
	var (
		alert    tls.AlertError
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		recHdr   tls.RecordHeaderError
	)
	return errors.As(err, &alert) || errors.As(err, &verify) || errors.As(err, &unknown) ||
		errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &recHdr) ||
		strings.Contains(err.Error(), "tls: ")
}
