package observability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/timbus-dev/timbus/internal/needs"
)

// promServer is a Prometheus process on 127.0.0.1, scraping one target
// every second and evaluating rules.yaml every second.
type promServer struct {
	base string
	log  *tail
}

// freePort returns a port free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPrometheus starts Prometheus and waits until it is ready. It is
// stopped when the test ends. A port taken between freePort and
// Prometheus's bind is tried again with another.
func startPrometheus(t *testing.T, target string) *promServer {
	t.Helper()
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	config := filepath.Join(dir, "prometheus.yml")
	err = os.WriteFile(config, []byte(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - `+rules+`
scrape_configs:
  - job_name: timbus
    static_configs:
      - targets: ["`+target+`"]
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		p, exited := runPrometheus(t, config, filepath.Join(dir, "data"+strconv.Itoa(attempt)))
		err := p.waitReady(exited, 60*time.Second)
		if err == nil {
			return p
		}
		if attempt < 3 && strings.Contains(p.log.String(), "address already in use") {
			continue
		}
		t.Fatalf("prometheus: %v\n%s", err, p.log)
	}
}

// runPrometheus starts the process; exited is closed when it ends.
func runPrometheus(t *testing.T, config, data string) (*promServer, <-chan struct{}) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	p := &promServer{base: "http://" + addr, log: newTail()}
	cmd := exec.Command("prometheus",
		"--config.file="+config,
		"--storage.tsdb.path="+data,
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// SIGTERM lets it close its storage; SIGKILL if it takes too long.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	return p, exited
}

func (p *promServer) waitReady(exited <-chan struct{}, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-exited:
			return errors.New("exited before it was ready")
		default:
		}
		resp, err := http.Get(p.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v: %v", limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// promSeries is one series of a query's result: an instant vector's sample
// or a range's samples.
type promSeries struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
	Values [][]any           `json:"values"`
}

// api calls Prometheus's HTTP API and decodes its data into v; a query
// Prometheus refuses (say, one that does not parse) is an error.
func (p *promServer) api(path string, params url.Values, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The query endpoints take their parameters in a POST form, free of
	// URL length limits; the others only answer GET.
	post := strings.HasPrefix(path, "/api/v1/query")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path+"?"+params.Encode(), nil)
	if post {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, p.base+path, strings.NewReader(params.Encode()))
	}
	if err != nil {
		return err
	}
	if post {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if out.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, out.ErrorType, out.Error)
	}
	return json.Unmarshal(out.Data, v)
}

// query evaluates expr now.
func (p *promServer) query(expr string) ([]promSeries, error) {
	var data struct {
		Result []promSeries `json:"result"`
	}
	err := p.api("/api/v1/query", url.Values{"query": {expr}}, &data)
	return data.Result, err
}

// queryRange evaluates expr every second from start to end, as a Grafana
// time series panel does.
func (p *promServer) queryRange(expr string, start, end time.Time) ([]promSeries, error) {
	var data struct {
		ResultType string       `json:"resultType"`
		Result     []promSeries `json:"result"`
	}
	err := p.api("/api/v1/query_range", url.Values{
		"query": {expr},
		"start": {strconv.FormatInt(start.Unix(), 10)},
		"end":   {strconv.FormatInt(end.Unix()+1, 10)},
		"step":  {"1"},
	}, &data)
	return data.Result, err
}

// labelValues lists the values of label among the series matching selector
// from start to end, as Grafana's label_values does.
func (p *promServer) labelValues(label, selector string, start, end time.Time) ([]string, error) {
	var values []string
	err := p.api("/api/v1/label/"+label+"/values", url.Values{
		"match[]": {selector},
		"start":   {strconv.FormatInt(start.Unix(), 10)},
		"end":     {strconv.FormatInt(end.Unix()+1, 10)},
	}, &values)
	return values, err
}

// waitAlerts waits until Prometheus has every alert of names pending or
// firing (in its ALERTS series), for at most limit.
func (p *promServer) waitAlerts(t *testing.T, limit time.Duration, names ...string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		active, err := p.query("ALERTS")
		var missing []string
		for _, name := range names {
			if !slices.ContainsFunc(active, func(s promSeries) bool { return s.Metric["alertname"] == name }) {
				missing = append(missing, name)
			}
		}
		if err == nil && len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("alerts %v not pending or firing within %v (query error: %v)\n%s", missing, limit, err, p.diagnose(missing))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitQuery waits until expr returns data in Prometheus, for at most limit.
func (p *promServer) waitQuery(t *testing.T, limit time.Duration, expr string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		result, err := p.query(expr)
		if err == nil && len(result) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus: %s returned nothing within %v (error: %v)", expr, limit, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// diagnose says, for alerts that did not come, what their expressions
// return now, how Prometheus's last evaluation of them went, and the
// non-zero samples of the series they read.
func (p *promServer) diagnose(alerts []string) string {
	var b strings.Builder
	var rules struct {
		Groups []struct {
			Rules []struct {
				Name      string `json:"name"`
				Query     string `json:"query"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := p.api("/api/v1/rules", nil, &rules); err != nil {
		return err.Error()
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if !slices.Contains(alerts, r.Name) {
				continue
			}
			result, err := p.query(r.Query)
			fmt.Fprintf(&b, "%s: health %s %s; now %v %v\n", r.Name, r.Health, r.LastError, result, err)
			for _, name := range metricNames(r.Query) {
				result, err := p.query(name + " > 0")
				fmt.Fprintf(&b, "  %s > 0: %v %v\n", name, result, err)
			}
		}
	}
	return b.String()
}

// TestAgainstPrometheus runs the dashboard's queries and the rules against a
// real Prometheus scraping a real timbus. timbus answers callbacks of every
// outcome through real deciders and a real NATS server, refuses bad ones, and
// lives through a NATS outage long enough to drop audit records; then every
// query of the dashboard and every rule must return data, every alert must
// have been pending or firing, and every metric they read must be one timbus
// exports.
func TestAgainstPrometheus(t *testing.T) {
	needs.Tools(t, "prometheus — run `make deps` (Debian/Ubuntu: package prometheus) or install Prometheus", needs.Commands("prometheus"))
	ns := startNATS(t)
	startDeciders(t, ns.url())
	tb := startTimbus(t, ns.url())
	start := time.Now()
	prom := startPrometheus(t, tb.ops)
	c := newCaller(t, tb.listen)
	const alertWait = 90 * time.Second
	// Prometheus finds its targets a few seconds after it starts: the
	// counters' zeros must be scraped before they count up, or rate()
	// sees no increase.
	prom.waitQuery(t, alertWait, `timbus_ready`)

	// Answered by deciders: allowed, denied (mallory), and with a shadow
	// that disagrees about bob.
	froms := []string{"alice", "bob", "mallory", "alice", "dave"}
	c.times(t, 20, 2, http.StatusOK, func(i int) (int, error) { return c.callback(cmdDecided, froms[i%len(froms)]) })
	c.times(t, 20, 2, http.StatusOK, func(int) (int, error) { return c.callback(cmdSlow, "alice") })
	// The default, for a decider's error, an invalid reply, and nobody.
	c.times(t, 2, 1, http.StatusOK, func(int) (int, error) { return c.callback(cmdSlow, "fail") })
	c.times(t, 3, 1, http.StatusOK, func(int) (int, error) { return c.callback(cmdInvalid, "alice") })
	c.times(t, 40, 2, http.StatusOK, func(int) (int, error) { return c.callback(cmdNobody, "alice") }) // no_deciders, then circuit_open
	// An after callback, published.
	c.times(t, 5, 1, http.StatusOK, func(int) (int, error) { return c.callback(cmdAfter, "alice") })
	// Timeouts, and past max-inflight (3), shed: six slow callbacks at once,
	// again should the machine be too slow for them to overlap.
	for attempt := 1; ; attempt++ {
		c.times(t, 6, 6, http.StatusOK, func(int) (int, error) { return c.callback(cmdSlow, "slow") })
		samples, _, err := scrape(tb.ops)
		if err != nil {
			t.Fatal(err)
		}
		shed := value(samples, "timbus_callbacks_total", map[string]string{"command": cmdSlow, "outcome": "shed"})
		timeouts := value(samples, "timbus_callbacks_total", map[string]string{"command": cmdSlow, "outcome": "timeout"})
		if shed > 0 && timeouts > 0 {
			break
		}
		if attempt == 5 {
			t.Fatalf("after %d rounds of six slow callbacks at once: %v shed, %v timeouts", attempt, shed, timeouts)
		}
	}
	// Refusals: a stream of bad signatures (each closes its connection), and
	// a few of other kinds.
	c.times(t, 200, 4, http.StatusUnauthorized, func(int) (int, error) {
		q := query(cmdDecided)
		q.Set("Sign", strings.Repeat("0", 64))
		return c.do(http.MethodPost, "/", q, body(cmdDecided, "alice"))
	})
	c.times(t, 5, 1, http.StatusBadRequest, func(int) (int, error) {
		return c.do(http.MethodPost, "/", query(cmdDecided), `{"CallbackCommand": "C2C.CallbackBeforeSendMsg", `)
	})
	c.times(t, 3, 1, http.StatusForbidden, func(int) (int, error) {
		q := query(cmdDecided)
		q.Set("SdkAppid", "1400000999")
		return c.do(http.MethodPost, "/", q, body(cmdDecided, "alice"))
	})
	c.times(t, 2, 1, http.StatusNotFound, func(int) (int, error) { return c.do(http.MethodPost, "/nope", query(cmdDecided), "{}") })
	c.times(t, 2, 1, http.StatusMethodNotAllowed, func(int) (int, error) { return c.do(http.MethodGet, "/", query(cmdDecided), "") })

	prom.waitAlerts(t, alertWait, "TimbusNoLiveDecider", "TimbusDefaultAnswersHigh", "TimbusDecisionLatencyNearTimeout",
		"TimbusRefusalsSpiking", "TimbusCircuitOpen")

	// A NATS outage: before callbacks get nats_error, and audit records are
	// held until the queue is full, then dropped.
	ns.stop()
	waitMetric(t, tb.ops, "timbus_nats_connected 0", 30*time.Second, func(s []sample) bool {
		return value(s, "timbus_nats_connected", nil) == 0
	})
	c.times(t, 3, 1, http.StatusOK, func(int) (int, error) { return c.callback(cmdDecided, "alice") })
	const auditQueue = 16384 // bridge/audit.go's auditQueueLen
	for sent := 0; ; {
		n := auditQueue + 500
		if sent > 0 {
			n = 1000
		}
		c.times(t, n, 3, http.StatusServiceUnavailable, func(int) (int, error) { return c.callback(cmdAfter, "alice") })
		sent += n
		samples, _, err := scrape(tb.ops)
		if err != nil {
			t.Fatal(err)
		}
		if value(samples, "timbus_audit_dropped_total", nil) > 0 {
			t.Logf("NATS outage: %d after callbacks sent, %v audit records held, %v dropped; %d connections opened in all",
				sent, value(samples, "timbus_audit_pending", nil), value(samples, "timbus_audit_dropped_total", nil), c.dials.Load())
			break
		}
		if sent > 3*auditQueue {
			t.Fatalf("%d callbacks during a NATS outage and no audit record dropped (%v pending)", sent, value(samples, "timbus_audit_pending", nil))
		}
	}
	prom.waitAlerts(t, alertWait, "TimbusNATSDisconnected", "TimbusAuditRecordsHeld", "TimbusAuditRecordsLost", "TimbusNotReady")

	// NATS back on the same port: timbus reconnects.
	ns.start()
	prom.waitQuery(t, alertWait, `timbus_nats_reconnects_total > 0 and timbus_nats_connected == 1`)
	end := time.Now()
	t.Logf("drive done in %v", end.Sub(start).Round(time.Second))

	_, exported, err := scrape(tb.ops)
	if err != nil {
		t.Fatal(err)
	}
	rf := loadRules(t)
	recorded := map[string]bool{}
	for _, r := range rf.rules() {
		if r.Record != "" {
			recorded[r.Record] = true
		}
	}
	// checkNames fails for a metric neither timbus nor a recording rule makes.
	checkNames := func(t *testing.T, expr string) {
		t.Helper()
		for _, name := range metricNames(expr) {
			if !exported[name] && !recorded[name] {
				t.Errorf("reads %s, which timbus's /metrics does not export and no recording rule records", name)
			}
		}
	}
	// returnsData fails unless expr parses and returns data over the drive.
	returnsData := func(t *testing.T, expr string) {
		t.Helper()
		result, err := prom.queryRange(expr, start, end)
		if err != nil {
			t.Fatalf("%s\n%v", expr, err)
		}
		if len(result) == 0 || len(result[0].Values) == 0 {
			t.Errorf("returned no data during the drive:\n%s", expr)
		}
	}

	t.Run("rules", func(t *testing.T) {
		var health struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := prom.api("/api/v1/rules", nil, &health); err != nil {
			t.Fatal(err)
		}
		loaded := 0
		for _, g := range health.Groups {
			for _, r := range g.Rules {
				loaded++
				if r.Health != "ok" {
					t.Errorf("rule %s: health %s %s", r.Name, r.Health, r.LastError)
				}
			}
		}
		if want := len(rf.rules()); loaded != want {
			t.Errorf("Prometheus loaded %d rules, rules.yaml has %d", loaded, want)
		}
		for _, r := range rf.rules() {
			t.Run(r.name(), func(t *testing.T) {
				checkNames(t, r.Expr)
				returnsData(t, r.Expr)
				if r.Record != "" {
					returnsData(t, r.Record) // Prometheus recorded it
				} else {
					returnsData(t, `ALERTS{alertname="`+r.Alert+`"}`) // and the alert was pending or firing
				}
			})
		}
	})

	// Grafana's values for the variables: All, and a short rate window
	// since Prometheus scrapes every second.
	values := map[string]string{"sdkappid": ".*", "command": ".*", "__rate_interval": "1m", "__interval": "1s", "__range": "5m"}
	d := loadDashboard(t)
	t.Run("panels", func(t *testing.T) {
		for _, q := range d.queries() {
			t.Run(q.panel+"/"+q.refID, func(t *testing.T) {
				expr := substitute(q.expr, values)
				if left := variablesUsed(expr); len(left) > 0 {
					t.Fatalf("no test value for variables %v", left)
				}
				checkNames(t, expr)
				returnsData(t, expr)
			})
		}
	})
	t.Run("variables", func(t *testing.T) {
		want := map[string]string{"sdkappid": testAppID, "command": cmdDecided}
		for _, v := range d.Templating.List {
			m := labelValuesQuery.FindStringSubmatch(v.queryText())
			if m == nil {
				continue
			}
			t.Run(v.Name, func(t *testing.T) {
				selector := substitute(m[1], values)
				checkNames(t, selector)
				got, err := prom.labelValues(m[2], selector, start, end)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Contains(got, want[v.Name]) {
					sort.Strings(got)
					t.Errorf("label_values(%s, %s) = %v, want %s among them", selector, m[2], got, want[v.Name])
				}
			})
		}
	})
}
