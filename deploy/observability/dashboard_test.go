package observability

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`timbus_ready == 0`, []string{"timbus_ready"}},
		{`sum by (outcome) (rate(timbus_callbacks_total{outcome=~"a|b", command="x{y}"}[5m]))`, []string{"timbus_callbacks_total"}},
		{`sum(rate(a_total[1m])) by (le, job) / on (job) group_left (x) b`, []string{"a_total", "b"}},
		{`1 - sum without (instance, pod, outcome) (rate(c{outcome="decided"}[5m])) / job:rec:rate5m`, []string{"c", "job:rec:rate5m"}},
		{`histogram_quantile(0.99, sum without (instance) (rate(h_bucket[5m]))) > 1.2e0`, []string{"h_bucket"}},
		{`count(max by (a) (g) > 0) or vector(0)`, []string{"g"}},
		{`x offset 5m and bool y unless z`, []string{"x", "y", "z"}},
		{`max_over_time(g[$__rate_interval]) and on () $var`, []string{"g"}},
		{"a # a comment naming b\n+ c", []string{"a", "c"}},
		{`label_replace(up, "dst", "$1", "src", "(.*)")`, []string{"up"}},
	}
	for _, tt := range tests {
		if got := metricNames(tt.expr); !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%q) = %v, want %v", tt.expr, got, tt.want)
		}
	}
}

func TestSubstitute(t *testing.T) {
	values := map[string]string{"a": "1", "__rate_interval": "1m"}
	for in, want := range map[string]string{
		`x{l=~"$a"}[$__rate_interval]`: `x{l=~"1"}[1m]`,
		`${a} ${a:regex} [[a]] $b`:     `1 1 1 $b`,
	} {
		if got := substitute(in, values); got != want {
			t.Errorf("substitute(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDashboardStructure checks what Grafana needs to import the dashboard
// as is, and what makes it readable: unique panel ids and titles, a query in
// every panel, every variable used defined, every variable defined used, and
// panels that do not overlap.
func TestDashboardStructure(t *testing.T) {
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(data) {
		t.Fatalf("%s is not valid JSON", dashboardFile)
	}
	d := loadDashboard(t)
	if d.Title == "" || d.UID == "" || d.Schema == 0 {
		t.Errorf("title %q, uid %q, schemaVersion %d: all are needed", d.Title, d.UID, d.Schema)
	}
	if d.ID != nil {
		t.Errorf("id is %v: an exported dashboard has none (null), or importing it would overwrite another", d.ID)
	}

	defined := map[string]variable{}
	for _, v := range d.Templating.List {
		if _, dup := defined[v.Name]; dup {
			t.Errorf("variable %s defined twice", v.Name)
		}
		defined[v.Name] = v
	}
	if v := defined["datasource"]; v.Type != "datasource" || v.queryText() != "prometheus" {
		t.Errorf("variable datasource: type %q, query %q; want a datasource variable of type prometheus", v.Type, v.queryText())
	}
	for _, name := range []string{"sdkappid", "command"} {
		v, ok := defined[name]
		if !ok {
			t.Errorf("no variable %s", name)
			continue
		}
		if v.Type != "query" || !labelValuesQuery.MatchString(v.queryText()) {
			t.Errorf("variable %s: type %q, query %q; want a label_values query", name, v.Type, v.queryText())
		}
		if m := labelValuesQuery.FindStringSubmatch(v.queryText()); m != nil && m[2] != name {
			t.Errorf("variable %s lists the values of label %s", name, m[2])
		}
		if !v.IncludeAll || v.AllValue != ".*" {
			t.Errorf("variable %s: includeAll %v, allValue %q; want All meaning .*", name, v.IncludeAll, v.AllValue)
		}
	}

	ids := map[int]string{}
	titles := map[string]bool{}
	used := map[string]bool{}
	var boxes []panel
	for _, p := range d.allPanels() {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID == 0 {
			t.Errorf("%s has no id", where)
		} else if other, dup := ids[p.ID]; dup {
			t.Errorf("%s has the id of panel %q", where, other)
		}
		ids[p.ID] = p.Title
		if p.Title == "" {
			t.Errorf("%s has no title", where)
		} else if titles[p.Title] {
			t.Errorf("two panels are titled %q", p.Title)
		}
		titles[p.Title] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("%s: gridPos %+v does not fit Grafana's 24 columns", where, p.GridPos)
		}
		boxes = append(boxes, p)
		if !p.hasQueries() {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s does not query the datasource variable", where)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s has no query", where)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s: target %s has no expr", where, tg.RefID)
			}
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: target refId %q missing or repeated", where, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("%s: target %s has datasource %q", where, tg.RefID, tg.Datasource.UID)
			}
			for _, name := range variablesUsed(tg.Expr) {
				used[name] = true
			}
		}
	}
	for i, a := range boxes {
		for _, b := range boxes[i+1:] {
			ga, gb := a.GridPos, b.GridPos
			if ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H {
				t.Errorf("panels %q and %q overlap", a.Title, b.Title)
			}
		}
	}

	// Every variable referred to anywhere (queries, titles, links) exists.
	for _, name := range variablesUsed(string(data)) {
		if _, ok := defined[name]; !ok && !slices.Contains(grafanaBuiltins, name) {
			t.Errorf("the dashboard uses $%s, which is neither defined in templating nor one of Grafana's", name)
		}
	}
	// And every variable defined is used: by the panels' queries, or, for
	// the datasource, by the panels themselves.
	for name := range defined {
		if name != "datasource" && !used[name] {
			t.Errorf("variable %s is not used by any panel's query", name)
		}
	}
}

// TestDashboardCovers checks that the dashboard has what an operator on call
// looks for, each by the metric that shows it.
func TestDashboardCovers(t *testing.T) {
	d := loadDashboard(t)
	rules := loadRules(t)
	recorded := map[string]string{} // recording rule → its expression
	for _, r := range rules.rules() {
		if r.Record != "" {
			recorded[r.Record] = r.Expr
		}
	}
	// reads lists the metrics a query reads, through recording rules.
	var reads func(expr string) []string
	reads = func(expr string) []string {
		var out []string
		for _, name := range metricNames(expr) {
			out = append(out, name)
			if e, ok := recorded[name]; ok {
				out = append(out, reads(e)...)
			}
		}
		return out
	}
	covered := map[string]bool{}
	for _, q := range d.queries() {
		for _, name := range reads(q.expr) {
			covered[name] = true
		}
	}
	for _, want := range []string{
		"timbus_callbacks_total", "timbus_decision_seconds_bucket", "timbus_decision_seconds_count",
		"timbus_deciders", "timbus_rejected_total", "timbus_nats_connected", "timbus_nats_reconnects_total",
		"timbus_audit_published_total", "timbus_audit_pending", "timbus_audit_dropped_total",
		"timbus_shadow_verdicts_total", "timbus_inflight", "timbus_circuit_open", "timbus_ready",
	} {
		if !covered[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
	// Every outcome Tencent gets the default for has its share shown.
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, outcome := range defaultOutcomes {
		if !strings.Contains(string(raw), outcome) {
			t.Errorf("the dashboard never names outcome %s", outcome)
		}
	}
	// Tencent's 2 s line is drawn on the latency panel.
	var found bool
	var full struct {
		Panels []struct {
			Title       string `json:"title"`
			FieldConfig struct {
				Defaults struct {
					Unit       string `json:"unit"`
					Thresholds struct {
						Steps []struct {
							Value *float64 `json:"value"`
						} `json:"steps"`
					} `json:"thresholds"`
					Custom struct {
						ThresholdsStyle struct {
							Mode string `json:"mode"`
						} `json:"thresholdsStyle"`
					} `json:"custom"`
				} `json:"defaults"`
			} `json:"fieldConfig"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &full); err != nil {
		t.Fatal(err)
	}
	for _, p := range full.Panels {
		def := p.FieldConfig.Defaults
		if def.Unit != "s" || def.Custom.ThresholdsStyle.Mode != "line" {
			continue
		}
		for _, s := range def.Thresholds.Steps {
			if s.Value != nil && *s.Value == 2 {
				found = true
			}
		}
	}
	if !found {
		t.Error("no panel in seconds draws a threshold line at Tencent's 2 s")
	}
}

// defaultOutcomes are the outcomes of timbus_callbacks_total for which
// Tencent got the default verdict (bridge/http.go).
var defaultOutcomes = []string{"timeout", "no_deciders", "invalid_reply", "decider_error", "nats_error", "shed", "circuit_open"}
