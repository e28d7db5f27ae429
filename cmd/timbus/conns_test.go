package main

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/timbus-dev/timbus/bridge"
)

// TestServeConfigConnLimits: --max-conns and --max-conns-per-ip go through
// the layers like every setting, and check shows what they amount to.
func TestServeConfigConnLimits(t *testing.T) {
	file := writeFile(t, "timbus.yaml", "sdkappid: 1\nmax-conns: 300\nmax-conns-per-ip: 7\n")
	for _, tc := range []struct {
		name         string
		env          map[string]string
		args         []string
		conns, perIP int
	}{
		{"default", nil, []string{"--sdkappid", "1"}, bridge.DefaultConfig().MaxConns, 0},
		{"file", nil, []string{"--config", file}, 300, 7},
		{"environment beats the file", map[string]string{"TIMBUS_MAX_CONNS": "200", "TIMBUS_MAX_CONNS_PER_IP": "0"}, []string{"--config", file}, 200, 0},
		{"flag beats the environment", map[string]string{"TIMBUS_MAX_CONNS": "200"}, []string{"--config", file, "--max-conns", "0", "--max-conns-per-ip", "3"}, 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg, err := loadServeConfig(tc.args, os.LookupEnv)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.bridge.MaxConns != tc.conns || cfg.bridge.MaxConnsPerIP != tc.perIP {
				t.Errorf("max-conns %d, per IP %d; want %d, %d", cfg.bridge.MaxConns, cfg.bridge.MaxConnsPerIP, tc.conns, tc.perIP)
			}
		})
	}
	if d := bridge.DefaultConfig().MaxConns; d <= 0 {
		t.Errorf("default max-conns = %d, want a cap", d)
	}
}

func TestCheckShowsConnLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"default", []string{"--sdkappid", "1"}, []string{"conns:", "open callback connections", "the default for an open-file limit of", "idle keep-alive 1m30s"}},
		{"set", []string{"--sdkappid", "1", "--max-conns", "500", "--max-conns-per-ip", "20", "--idle-timeout", "30s"},
			[]string{"conns:", "at most 500 open callback connections", "20 per client address", "idle keep-alive 30s"}},
		{"no cap", []string{"--sdkappid", "1", "--max-conns", "0"}, []string{"no cap on open callback connections"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			code, stdout, stderr := runTimbus(t, context.Background(), append([]string{"check"}, tc.args...)...)
			if code != exitOK {
				t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("summary lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
}

func TestCheckRefusesNegativeConnLimits(t *testing.T) {
	for _, tc := range []struct {
		env, flag string
	}{
		{"TIMBUS_MAX_CONNS", "max-conns"},
		{"TIMBUS_MAX_CONNS_PER_IP", "max-conns-per-ip"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(tc.env, "-1")
			code, _, stderr := runTimbus(t, context.Background(), "check", "--sdkappid", "1")
			if code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
			for _, w := range []string{tc.flag + "=-1", "from " + tc.env, "0 (no cap) or more"} {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}
