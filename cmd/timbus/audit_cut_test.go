package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/timbus-dev/timbus/bridge"
	"github.com/timbus-dev/timbus/internal/natstest"
)

// TestAuditShowsCutRecords: a record too big for the NATS server's
// max_payload is cut by the bridge and stored, not dropped; timbus audit
// says what was cut, and timbus replay does not send the cut body as if
// it were the callback.
func TestAuditShowsCutRecords(t *testing.T) {
	clearEnv(t)
	opts := natstest.Options()
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	opts.MaxPayload = 48 << 10
	ns := natstest.RunWith(t, opts)
	nc := natstest.Connect(t, ns)
	if _, err := nc.QueueSubscribe("timbus.decide.*."+createOA, "v1", func(m *nats.Msg) {
		respondMsg(t, m, allowReply, nil)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	cfg := bridge.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.NATSURL = ns.ClientURL()
	cfg.Apps = []bridge.App{{ID: appA}}
	cfg.AuditStream = bridge.StreamConfig{Name: auditStream}
	b, err := bridge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(context.Background())
	// Under the payload limit alone, over it with the record's other fields
	// around it (and as a request to deciders, with its headers: it gets
	// the default).
	big := oaBody(t, "")
	big = oaBody(t, strings.Repeat("n", 48<<10-200-len(big)))
	postToBridge(t, b, appA, createOA, oaBody(t, "alice"))
	postToBridge(t, b, appA, createOA, big)
	var recs []stored
	waitUntil(t, "two records", func() bool {
		recs = streamRecords(t, ns.ClientURL(), auditStream)
		return len(recs) == 2
	})
	cut := recs[1].rec
	if cut.Truncated["body"] != len(big) || !cut.Cut("body") || recs[0].rec.Truncated != nil {
		t.Fatalf("truncated %v and %v, want the second record's body (%d bytes) only", recs[0].rec.Truncated, cut.Truncated, len(big))
	}
	var prefix string
	if err := json.Unmarshal(cut.Body, &prefix); err != nil || !bytes.HasPrefix(big, []byte(prefix)) {
		t.Errorf("cut body %.80s: %v", cut.Body, err)
	}

	code, stdout, stderr := runTimbus(t, context.Background(), "audit", "--nats-url", ns.ClientURL(), "--stream", auditStream)
	if code != exitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr %q", code, stderr)
	}
	rows, _ := parseTable(t, stdout, auditHeader...)
	if len(rows) != 2 || rows[0][8] != "-" || !strings.HasPrefix(rows[1][8], "[cut: body]") {
		t.Errorf("REASON cells %q and %q, want the second to name the cut body\n%s", rows[0][8], rows[1][8], stdout)
	}

	code, stdout, stderr = runTimbus(t, context.Background(), "replay", "--nats-url", ns.ClientURL(), "--stream", auditStream,
		"--timeout", (500 * time.Millisecond).String())
	if code != exitOK || stderr != "" {
		t.Fatalf("replay: exit code %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stdout, "1 replayed") || !strings.Contains(stdout, "1 record not replayed") {
		t.Errorf("replay sent the cut body, or not the whole one:\n%s", stdout)
	}
}
