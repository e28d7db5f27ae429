// Package observability holds the tests of what deploy/observability ships:
// the Grafana dashboard (dashboard.json), the Prometheus rules (rules.yaml)
// with their promtool unit tests (rules_test.yaml), the runbook (README.md),
// and the Kubernetes manifests generated from them in
// deploy/kubernetes/monitoring. It has no code of its own: only tests.
//
// The tests prove, rather than hope, that the queries work. promtool checks
// and unit-tests the rules; a real Prometheus scrapes a real timbus answering
// callbacks of every kind, and every query of the dashboard and every rule
// must return data from it, built from metric names timbus exports.
//
// Regenerate the Kubernetes manifests after editing a source file:
//
//	make observability
package observability

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The files this package tests, relative to its directory, where go test runs.
const (
	dashboardFile = "dashboard.json"
	rulesFile     = "rules.yaml"
	rulesTestFile = "rules_test.yaml"
	runbookFile   = "README.md"
)

// ruleFile is a Prometheus rule file (and a PrometheusRule's spec).
type ruleFile struct {
	Groups []ruleGroup `yaml:"groups"`
}

type ruleGroup struct {
	Name     string `yaml:"name"`
	Interval string `yaml:"interval,omitempty"`
	Rules    []rule `yaml:"rules"`
}

type rule struct {
	Record      string            `yaml:"record,omitempty"`
	Alert       string            `yaml:"alert,omitempty"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

// name is the rule's record or alert name.
func (r rule) name() string {
	if r.Alert != "" {
		return r.Alert
	}
	return r.Record
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(data, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	if len(rf.Groups) == 0 {
		t.Fatalf("%s: no rule groups", rulesFile)
	}
	return rf
}

// rules lists every rule of every group.
func (rf ruleFile) rules() []rule {
	var out []rule
	for _, g := range rf.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	ID         any     `json:"id"`
	Schema     int     `json:"schemaVersion"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string `json:"refId"`
		Expr       string `json:"expr"`
		Datasource *struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	AllValue   string          `json:"allValue"`
	IncludeAll bool            `json:"includeAll"`
	Multi      bool            `json:"multi"`
}

// queryText is a variable's query: a string, or the object newer Grafana
// versions write, {"query": "...", "refId": "..."}.
func (v variable) queryText() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var q struct {
		Query string `json:"query"`
	}
	if json.Unmarshal(v.Query, &q) == nil {
		return q.Query
	}
	return ""
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows: a collapsed row holds its panels.
func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// hasQueries tells panels that must query Prometheus from layout panels.
func (p panel) hasQueries() bool { return p.Type != "row" && p.Type != "text" }

// dashboardQuery is one target of one panel.
type dashboardQuery struct {
	panel, refID, expr string
}

func (d dashboard) queries() []dashboardQuery {
	var out []dashboardQuery
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			out = append(out, dashboardQuery{p.Title, tg.RefID, tg.Expr})
		}
	}
	return out
}

// grafanaBuiltins are the variables Grafana defines itself.
var grafanaBuiltins = []string{
	"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
	"__from", "__to", "__dashboard", "__org", "__user", "__name", "__series", "__field",
	"__value", "__cell", "__data", "__all", "__timeFilter", "timeFilter",
}

// variableRef finds Grafana variable references: $name, ${name},
// ${name:format} and the deprecated [[name]].
var variableRef = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)(?::[^\]]*)?\]\]`)

// variablesUsed lists the variables s refers to.
func variablesUsed(s string) []string {
	var out []string
	for _, m := range variableRef.FindAllStringSubmatch(s, -1) {
		for _, name := range m[1:] {
			if name != "" && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	return out
}

// substitute replaces the variables of a query as Grafana would for the
// values given; a variable without a value is left as is.
func substitute(s string, values map[string]string) string {
	return variableRef.ReplaceAllStringFunc(s, func(ref string) string {
		names := variableRef.FindStringSubmatch(ref)[1:]
		for _, name := range names {
			if v, ok := values[name]; ok && name != "" {
				return v
			}
		}
		return ref
	})
}

// labelValuesQuery reads Grafana's label_values(selector, label) query.
var labelValuesQuery = regexp.MustCompile(`^\s*label_values\(\s*(.*?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)

// promqlWords are PromQL's keywords and aggregation operators, which may be
// followed by by (…) rather than their parenthesis: not metric names.
var promqlWords = []string{
	"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end",
	"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
	"limitk", "limit_ratio",
}

// labelLists are the PromQL words followed by a list of label names.
var labelLists = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}

// metricNames lists the metric names a PromQL expression reads: every
// identifier that is not a function, keyword or label name. It reads only
// the expressions of this package, and knows as much PromQL as they need:
// strings, label matchers {…}, ranges […], label lists after by, without,
// on, ignoring, group_left and group_right, and numbers with units (5m).
func metricNames(expr string) []string {
	var names []string
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || '0' <= c && c <= '9' }
	// skip returns the index after the bracket that closes the one at i,
	// stepping over strings.
	skip := func(i int, open, close byte) int {
		depth := 0
		for ; i < len(expr); i++ {
			switch c := expr[i]; c {
			case '"', '\'', '`':
				i = skipString(expr, i) - 1
			case open:
				depth++
			case close:
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return i
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(expr, i)
		case c == '{':
			i = skip(i, '{', '}')
		case c == '[':
			i = skip(i, '[', ']')
		case c == '#': // a comment, to the end of the line
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '$': // a Grafana variable left in place
			i++
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '{' || expr[i] == '}') {
				i++
			}
		case '0' <= c && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
			word := expr[start:i]
			next := i
			for next < len(expr) && (expr[next] == ' ' || expr[next] == '\t' || expr[next] == '\n' || expr[next] == '\r') {
				next++
			}
			followedByParen := next < len(expr) && expr[next] == '('
			switch {
			case slices.Contains(labelLists, strings.ToLower(word)):
				if followedByParen {
					i = skip(next, '(', ')')
				}
			case followedByParen, slices.Contains(promqlWords, strings.ToLower(word)):
				// a function or aggregation, or a keyword
			default:
				if !slices.Contains(names, word) {
					names = append(names, word)
				}
			}
		default:
			i++
		}
	}
	return names
}

// skipString returns the index after the string that starts at i.
func skipString(s string, i int) int {
	quote := s[i]
	for i++; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if quote != '`' {
				i++
			}
		case quote:
			return i + 1
		}
	}
	return i
}
