package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/timbus-dev/timbus/internal/testpki"
)

// tlsFiles writes a server certificate, its key and a client CA, and returns
// their paths.
func tlsFiles(t *testing.T) (cert, key, clientCA string) {
	t.Helper()
	dir := t.TempDir()
	cert, key = testpki.NewCA(t, "server CA").Server(t, 1, "timbus").Files(t, dir)
	clientCA = filepath.Join(dir, "client-ca.pem")
	if err := os.WriteFile(clientCA, testpki.NewCA(t, "client CA").PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key, clientCA
}

// TestCheckTLS: check says whether callbacks come over HTTPS and whether
// clients must show a certificate, from flags, environment or file alike, and
// refuses an incomplete setting.
func TestCheckTLS(t *testing.T) {
	cert, key, clientCA := tlsFiles(t)
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"plain", nil, nil, exitOK, "plain HTTP"},
		{"https by flags", nil, []string{"--tls-cert", cert, "--tls-key", key}, exitOK, "https (certificate " + cert + "), client certificates not required"},
		{"mutual TLS by env", map[string]string{"TIMBUS_TLS_CERT": cert, "TIMBUS_TLS_KEY": key, "TIMBUS_TLS_CLIENT_CA": clientCA}, nil, exitOK,
			"client certificates required (CA " + clientCA + ")"},
		{"mutual TLS by file", nil, []string{"--config", writeFile(t, "timbus.yaml", "tls-cert: "+cert+"\ntls-key: "+key+"\ntls-client-ca: "+clientCA+"\n")}, exitOK,
			"client certificates required"},
		{"cert without key", nil, []string{"--tls-cert", cert}, exitUsage, "tls-key"},
		{"client CA without cert", nil, []string{"--tls-client-ca", clientCA}, exitUsage, "tls-client-ca=" + clientCA + " (from --tls-client-ca)"},
		{"key of another pair", nil, []string{"--tls-cert", cert, "--tls-key", clientCA}, exitUsage, "tls-cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, stdout, stderr := runTimbus(t, context.Background(), append([]string{"check", "--sdkappid", testApp}, tc.args...)...)
			if code != tc.code || !strings.Contains(stdout+stderr, tc.want) {
				t.Errorf("exit code %d, want %d with %q; stdout:\n%s\nstderr:\n%s", code, tc.code, tc.want, stdout, stderr)
			}
			if strings.Contains(stdout+stderr, "BEGIN") {
				t.Errorf("file contents shown:\n%s%s", stdout, stderr)
			}
		})
	}
}
