package observability

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/timbus-dev/timbus/internal/needs"
	"go.yaml.in/yaml/v3"
)

// needPromtool skips (or, in CI, fails) a test without promtool.
func needPromtool(t *testing.T) {
	t.Helper()
	needs.Tools(t, "promtool — run `make deps` (Debian/Ubuntu: package prometheus) or install Prometheus", needs.Commands("promtool"))
}

// promtool runs promtool with args in this directory, within a minute.
func promtool(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "promtool", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestRulesPromtoolCheck(t *testing.T) {
	needPromtool(t)
	promtool(t, "check", "rules", rulesFile)
}

// TestRulesPromtoolTest runs the unit tests of rules_test.yaml, in which
// every alert fires on a synthetic series and stays silent on healthy ones
// (TestRulesTested checks that they do, for every alert).
func TestRulesPromtoolTest(t *testing.T) {
	needPromtool(t)
	promtool(t, "test", "rules", rulesTestFile)
}

// The alerts issue 15 asks for: removing one must be a decision, not a slip.
var requiredAlerts = []string{
	"TimbusNoLiveDecider", "TimbusDefaultAnswersHigh", "TimbusDecisionLatencyNearTimeout",
	"TimbusNATSDisconnected", "TimbusAuditRecordsHeld", "TimbusAuditRecordsLost",
	"TimbusRefusalsSpiking", "TimbusCircuitOpen", "TimbusNotReady",
}

// recordName is Prometheus's naming of recording rules, level:metric:operations.
var recordName = regexp.MustCompile(`^[a-z_]+:[a-z_]+:[a-z0-9_]+$`)

// TestRulesComplete checks every rule's names, labels and annotations, and
// that each alert's runbook section exists.
func TestRulesComplete(t *testing.T) {
	rf := loadRules(t)
	anchors := runbookAnchors(t)
	names := map[string]bool{}
	var alerts []string
	for _, r := range rf.rules() {
		name := r.name()
		switch {
		case (r.Alert == "") == (r.Record == ""):
			t.Errorf("rule %q: exactly one of alert and record is needed", name)
		case names[name]:
			t.Errorf("rule %s defined twice", name)
		case strings.TrimSpace(r.Expr) == "":
			t.Errorf("rule %s has no expr", name)
		}
		names[name] = true
		if r.Record != "" {
			if !recordName.MatchString(r.Record) {
				t.Errorf("recording rule %s is not named level:metric:operations", r.Record)
			}
			continue
		}
		alerts = append(alerts, r.Alert)
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, s)
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("alert %s has no %s annotation", r.Alert, a)
			}
		}
		url := r.Annotations["runbook_url"]
		page, anchor, _ := strings.Cut(url, "#")
		if !strings.HasSuffix(page, "/deploy/observability/README.md") {
			t.Errorf("alert %s: runbook_url %q is not deploy/observability/README.md", r.Alert, url)
		}
		if anchor != strings.ToLower(r.Alert) || !anchors[anchor] {
			t.Errorf("alert %s: runbook_url anchor %q; want #%s, a section of %s", r.Alert, anchor, strings.ToLower(r.Alert), runbookFile)
		}
	}
	for _, want := range requiredAlerts {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s", want)
		}
	}

	// Every recording rule is read by the dashboard or another rule.
	d := loadDashboard(t)
	var readers []string
	for _, q := range d.queries() {
		readers = append(readers, q.expr)
	}
	for _, r := range rf.rules() {
		readers = append(readers, r.Expr)
	}
	for _, r := range rf.rules() {
		if r.Record == "" {
			continue
		}
		used := false
		for _, e := range readers {
			used = used || slices.Contains(metricNames(e), r.Record)
		}
		if !used {
			t.Errorf("recording rule %s is read by no panel and no rule", r.Record)
		}
	}
}

// runbookAnchors lists the anchors GitHub gives the headings of the runbook.
func runbookAnchors(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(runbookFile)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var b strings.Builder
		for _, r := range title {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9':
				b.WriteRune(r)
			}
		}
		anchors[b.String()] = true
	}
	return anchors
}

// promtoolTests is the part of a promtool test file this test reads.
type promtoolTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name          string `yaml:"name"`
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `yaml:"exp_labels"`
				ExpAnnotations map[string]string `yaml:"exp_annotations"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestRulesTested checks that rules_test.yaml tests every alert both ways:
// firing, with its labels and rendered annotations, and silent on healthy
// series past its for duration, so that silence is not just pending.
func TestRulesTested(t *testing.T) {
	data, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var pt promtoolTests
	if err := yaml.Unmarshal(data, &pt); err != nil {
		t.Fatalf("%s: %v", rulesTestFile, err)
	}
	if !slices.Equal(pt.RuleFiles, []string{rulesFile}) {
		t.Errorf("%s tests %v, want [%s]", rulesTestFile, pt.RuleFiles, rulesFile)
	}
	for _, r := range loadRules(t).rules() {
		if r.Alert == "" {
			continue
		}
		forDur := promDuration(t, r.For)
		fires, silent := false, false
		for _, tc := range pt.Tests {
			for _, at := range tc.AlertRuleTest {
				if at.Alertname != r.Alert {
					continue
				}
				if len(at.ExpAlerts) > 0 {
					fires = true
					for _, exp := range at.ExpAlerts {
						if exp.ExpLabels["severity"] != r.Labels["severity"] || len(exp.ExpAnnotations) < 3 {
							t.Errorf("%s (%s): expected alerts must give the severity label and the summary, description and runbook_url annotations", r.Alert, tc.Name)
						}
					}
				} else if promDuration(t, at.EvalTime) > forDur {
					silent = true
				}
			}
		}
		if !fires {
			t.Errorf("%s: no test in %s in which it fires", r.Alert, rulesTestFile)
		}
		if !silent {
			t.Errorf("%s: no test in %s in which it stays silent after its for duration (%s)", r.Alert, rulesTestFile, r.For)
		}
	}
}

// promDuration reads a Prometheus duration of the forms these files use.
func promDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("duration %q: %v", s, err)
	}
	return d
}

// bridgeMetricName finds the names of the metrics timbus defines.
var bridgeMetricName = regexp.MustCompile(`"(timbus_[a-z_]+)"`)

// TestMetricNamesDefined checks, without running anything, that every
// metric the dashboard and the rules read is one package bridge defines or
// a recording rule; TestAgainstPrometheus checks it against a running
// timbus's /metrics.
func TestMetricNamesDefined(t *testing.T) {
	defined := map[string]bool{}
	err := filepath.WalkDir(filepath.Join("..", "..", "bridge"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		for _, m := range bridgeMetricName.FindAllSubmatch(src, -1) {
			defined[string(m[1])] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(defined) == 0 {
		t.Fatal("found no metric defined in bridge/")
	}
	rf := loadRules(t)
	for _, r := range rf.rules() {
		if r.Record != "" {
			defined[r.Record] = true
		}
	}
	check := func(where, expr string) {
		for _, name := range metricNames(expr) {
			base := name
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if b, ok := strings.CutSuffix(name, suffix); ok && defined[b] {
					base = b
				}
			}
			if !defined[base] {
				t.Errorf("%s reads %s, which neither bridge/ nor a recording rule defines", where, name)
			}
		}
	}
	for _, r := range rf.rules() {
		check("rule "+r.name(), r.Expr)
	}
	d := loadDashboard(t)
	for _, q := range d.queries() {
		check("panel "+q.panel, q.expr)
	}
	for _, v := range d.Templating.List {
		if m := labelValuesQuery.FindStringSubmatch(v.queryText()); m != nil {
			check("variable "+v.Name, m[1])
		}
	}
}
