package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/bridge"
)

// natsAuthFlags are the NATS credential flags of audit, replay and conform:
// serve's names, and serve's environment variables when a flag is not
// given, so that one environment serves them all.
type natsAuthFlags struct {
	auth bridge.NATSAuth
	fs   *flag.FlagSet
}

// addNATSAuthFlags registers the credential flags on fs.
func addNATSAuthFlags(fs *flag.FlagSet) *natsAuthFlags {
	f := &natsAuthFlags{fs: fs}
	for name, dst := range f.fields() {
		fs.StringVar(dst, name, "", "")
	}
	return f
}

func (f *natsAuthFlags) fields() map[string]*string {
	a := &f.auth
	return map[string]*string{
		"nats-creds": &a.CredsFile, "nats-nkey": &a.NKeyFile,
		"nats-user": &a.User, "nats-password": &a.Password, "nats-token": &a.Token,
		"nats-tls-ca": &a.TLSCA, "nats-tls-cert": &a.TLSCert, "nats-tls-key": &a.TLSKey,
	}
}

// resolve fills what no flag gave from the environment, checks the whole
// against the NATS URLs of url and returns the connect options. Its error
// is a usage error.
func (f *natsAuthFlags) resolve(url string) ([]nats.Option, error) {
	given := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	for name, dst := range f.fields() {
		if !given[name] {
			*dst = os.Getenv(envName(name))
		}
	}
	if err := f.auth.Validate(url); err != nil {
		return nil, err
	}
	return f.auth.Options()
}

// connectError says why a tool could not connect to url, naming the
// credential (never its value) when the server refused it.
func (f *natsAuthFlags) connectError(url string, err error) string {
	msg := fmt.Sprintf("cannot connect to NATS at %s: %v", bridge.RedactURLs(url), err)
	if bridge.IsAuthError(err) {
		msg += fmt.Sprintf(" (NATS refused the credentials or TLS: %s)", f.auth)
	}
	return msg
}

// natsAuthHelp is the credential flags' part of the help of audit, replay
// and conform.
const natsAuthHelp = `  --nats-creds FILE        NATS .creds file (user JWT and NKey seed)
  --nats-nkey FILE         file holding an NKey user seed
  --nats-user USER         NATS user, with --nats-password
  --nats-password P        NATS password (prefer TIMBUS_NATS_PASSWORD)
  --nats-token TOKEN       NATS token (prefer TIMBUS_NATS_TOKEN)
  --nats-tls-ca FILE       PEM CAs trusted for the NATS server's certificate
  --nats-tls-cert FILE     client certificate, with --nats-tls-key FILE
                           (each also as TIMBUS_<FLAG>, as for timbus serve)
`
