package natstest

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/timbus-dev/timbus/internal/testpki"
)

// PKI is a private CA with a server certificate (127.0.0.1, localhost) and
// a client certificate, written as PEM files to a test directory.
type PKI struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
	pool                                             *x509.CertPool
}

// NewPKI makes a fresh CA and its two certificates in dir.
func NewPKI(tb testing.TB, dir string) *PKI {
	tb.Helper()
	ca := testpki.NewCA(tb, "timbus test CA")
	p := &PKI{pool: ca.Pool(), CA: filepath.Join(dir, "ca.pem")}
	testpki.WriteAtomic(tb, p.CA, ca.PEM)
	for _, leaf := range []struct {
		pair       testpki.Pair
		cert, key  *string
		subdirName string
	}{
		{ca.Server(tb, 2, "server"), &p.ServerCert, &p.ServerKey, "server"},
		{ca.Client(tb, 3, "client"), &p.ClientCert, &p.ClientKey, "client"},
	} {
		sub := filepath.Join(dir, leaf.subdirName)
		if err := os.MkdirAll(sub, 0o700); err != nil {
			tb.Fatal(err)
		}
		*leaf.cert, *leaf.key = leaf.pair.Files(tb, sub)
	}
	return p
}

// Serve turns on TLS in opts with the server certificate; verifyClients
// demands a client certificate signed by the CA.
func (p *PKI) Serve(tb testing.TB, opts *server.Options, verifyClients bool) {
	tb.Helper()
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if verifyClients {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = p.pool
	}
	opts.TLSConfig = cfg
	opts.TLS = true
	opts.TLSVerify = verifyClients
	opts.TLSTimeout = 2
}

// Operator is decentralised auth: an operator, one account, and .creds
// files for users of that account.
type Operator struct {
	claims     *jwt.OperatorClaims
	accountKey nkeys.KeyPair
	accountPub string
	accountJWT string
}

// NewOperator makes an operator and its account.
func NewOperator(tb testing.TB) *Operator {
	tb.Helper()
	okp, err := nkeys.CreateOperator()
	if err != nil {
		tb.Fatal(err)
	}
	opub, _ := okp.PublicKey()
	ojwt, err := jwt.NewOperatorClaims(opub).Encode(okp)
	if err != nil {
		tb.Fatal(err)
	}
	oc, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		tb.Fatal(err)
	}
	akp, err := nkeys.CreateAccount()
	if err != nil {
		tb.Fatal(err)
	}
	apub, _ := akp.PublicKey()
	ajwt, err := jwt.NewAccountClaims(apub).Encode(okp)
	if err != nil {
		tb.Fatal(err)
	}
	return &Operator{claims: oc, accountKey: akp, accountPub: apub, accountJWT: ajwt}
}

// Serve makes opts trust the operator and know its account.
func (o *Operator) Serve(tb testing.TB, opts *server.Options) {
	tb.Helper()
	res := &server.MemAccResolver{}
	if err := res.Store(o.accountPub, o.accountJWT); err != nil {
		tb.Fatal(err)
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{o.claims}
	opts.AccountResolver = res
}

// Creds writes a .creds file for a new user of the account to dir.
func (o *Operator) Creds(tb testing.TB, dir, name string) string {
	tb.Helper()
	ukp, err := nkeys.CreateUser()
	if err != nil {
		tb.Fatal(err)
	}
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	ujwt, err := uc.Encode(o.accountKey)
	if err != nil {
		tb.Fatal(err)
	}
	seed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, name+".creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// NKey makes a user NKey, writes its seed to dir and returns the file and
// the public key the server lists (opts.Nkeys).
func NKey(tb testing.TB, dir, name string) (seedFile, public string) {
	tb.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		tb.Fatal(err)
	}
	public, _ = kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile = filepath.Join(dir, name+".nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		tb.Fatal(err)
	}
	return seedFile, public
}
