package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestHostileInventedNamesMemory sends 10,000 invented command names, half
// of them "before" names, to the real binary, as a stranger could: its
// memory and its /metrics must stay bounded, and a normal callback must
// still get its decider's verdict.
func TestHostileInventedNamesMemory(t *testing.T) {
	clearEnv(t)
	p := startProcess(t, "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--sdkappid", testApp)
	nc, err := nats.Connect(p.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const verdict = `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"reserved"}`
	if _, err := nc.Subscribe("timbus.decide."+testApp+"."+createAccount, func(m *nats.Msg) { _ = m.Respond([]byte(verdict)) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	metrics := func() string {
		resp, err := http.Get("http://" + p.ops + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		text, _ := io.ReadAll(resp.Body)
		return string(text)
	}
	// Warm up with real callbacks first, so that the baseline holds what
	// serving costs anyway.
	for i := 0; i < 50; i++ {
		postCallback(t, p.listen, testApp, createAccount, `{"CallbackCommand":"`+createAccount+`","Name":"x"}`)
	}
	metrics()
	rssBefore := p.residentBytes(t)

	const names = 10_000
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()
	var next, failures atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > names {
					return
				}
				name := fmt.Sprintf("Fam%d.CmdN%d", n, n)
				if n%2 == 0 {
					name = fmt.Sprintf("Fam%d.CallbackBeforeCmd%d", n, n)
				}
				url := "http://" + p.listen + "/?SdkAppid=" + testApp + "&CallbackCommand=" + name + "&contenttype=json"
				resp, err := client.Post(url, "application/json", strings.NewReader(`{"CallbackCommand":"`+name+`"}`))
				if err != nil {
					failures.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d invented names were not answered 200", n, names)
	}
	text := metrics() // a scrape is where series used to cost most
	rssGrowth := p.residentBytes(t) - rssBefore
	t.Logf("after %d invented names: RSS grew %d KB, /metrics is %d bytes", names, rssGrowth>>10, len(text))
	if rssGrowth > 50<<20 {
		t.Errorf("RSS grew %d MB, want under 50 MB", rssGrowth>>20)
	}
	if len(text) > 2<<20 {
		t.Errorf("/metrics is %d bytes, want under 2 MB", len(text))
	}
	if !strings.Contains(text, `command="_other"`) || strings.Contains(text, "CallbackBeforeCmd") {
		t.Error("invented names are not counted under command=\"_other\" alone")
	}
	status, answer := postCallback(t, p.listen, testApp, createAccount, `{"CallbackCommand":"`+createAccount+`","Name":"x"}`)
	if status != http.StatusOK || answer != verdict {
		t.Errorf("a normal callback after the attack got %d %s, want %s", status, answer, verdict)
	}
}
