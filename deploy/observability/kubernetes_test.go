package observability

//go:generate go test -count=1 -run ^TestKubernetesManifests$ . -update

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the generated manifests of deploy/kubernetes/monitoring from this directory's files")

// monitoringDir holds the Prometheus Operator's objects and Grafana's
// dashboard ConfigMap; kubernetesDir the default kustomization.
var (
	kubernetesDir = filepath.Join("..", "kubernetes")
	monitoringDir = filepath.Join(kubernetesDir, "monitoring")
)

// generated are the manifests made from this directory's files, by name.
func generated(t *testing.T) map[string][]byte {
	t.Helper()
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	dash, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"prometheusrule.yaml":    prometheusRule(t, rules),
		"grafana-dashboard.yaml": dashboardConfigMap(t, dash),
	}
}

// prometheusRule wraps the rule file's groups, comments included, in a
// PrometheusRule: its spec has the rule file's format.
func prometheusRule(t *testing.T, rules []byte) []byte {
	t.Helper()
	// The file's opening comment speaks of the file itself: leave it out.
	start := bytes.Index(rules, []byte("\ngroups:"))
	if start < 0 {
		t.Fatalf("%s: no top-level groups:", rulesFile)
	}
	var b bytes.Buffer
	b.WriteString(`# Generated from deploy/observability/rules.yaml by ` + "`make observability`" + `: edit that
# file, not this one (go test ./deploy/observability fails when they differ).
# Needs the Prometheus Operator's CRDs; see deploy/observability/README.md.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: timbus
  labels:
    app.kubernetes.io/name: timbus
spec:
`)
	indent(&b, rules[start+1:], "  ")
	return b.Bytes()
}

// dashboardConfigMap puts the dashboard in a ConfigMap for Grafana's
// dashboard sidecar, which loads ConfigMaps labelled grafana_dashboard.
func dashboardConfigMap(t *testing.T, dash []byte) []byte {
	t.Helper()
	if !bytes.HasSuffix(dash, []byte("}\n")) || bytes.Contains(dash, []byte("\t")) || bytes.Contains(dash, []byte(" \n")) {
		t.Fatalf("%s must end with one newline and hold no tab or trailing space, to be carried verbatim in a YAML block", dashboardFile)
	}
	var b bytes.Buffer
	b.WriteString(`# Generated from deploy/observability/dashboard.json by ` + "`make observability`" + `:
# edit that file, not this one (go test ./deploy/observability fails when they
# differ). Grafana's dashboard sidecar loads ConfigMaps labelled
# grafana_dashboard: "1" (kube-prometheus-stack: grafana.sidecar.dashboards).
apiVersion: v1
kind: ConfigMap
metadata:
  name: timbus-dashboard
  labels:
    app.kubernetes.io/name: timbus
    grafana_dashboard: "1"
data:
  timbus.json: |
`)
	indent(&b, dash, "    ")
	return b.Bytes()
}

// indent writes text to b with prefix before every non-empty line.
func indent(b *bytes.Buffer, text []byte, prefix string) {
	for _, line := range bytes.SplitAfter(text, []byte("\n")) {
		if len(bytes.TrimSpace(line)) > 0 {
			b.WriteString(prefix)
		}
		b.Write(line)
	}
}

// TestKubernetesManifests checks that the generated manifests match their
// sources, and with -update (make observability) writes them.
func TestKubernetesManifests(t *testing.T) {
	for name, want := range generated(t) {
		path := filepath.Join(monitoringDir, name)
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (make observability generates it)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what deploy/observability's files make: run make observability", path)
		}
	}
}

// k8sObject is the part of a manifest these tests read.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec yaml.Node         `yaml:"spec"`
}

func readObject(t *testing.T, path string) k8sObject {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var obj k8sObject
	if err := dec.Decode(&obj); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if err := dec.Decode(new(any)); !errors.Is(err, io.EOF) {
		t.Fatalf("%s: want one YAML document", path)
	}
	return obj
}

// TestKubernetesObjects reads the manifests as Kubernetes would: the rules
// and the dashboard they carry are those of this directory, the
// ServiceMonitor scrapes the Service's metrics port, and the default
// kustomization leaves them out (they need the Prometheus Operator's CRDs).
func TestKubernetesObjects(t *testing.T) {
	// The PrometheusRule's spec is the rule file.
	pr := readObject(t, filepath.Join(monitoringDir, "prometheusrule.yaml"))
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" {
		t.Errorf("prometheusrule.yaml: %s %s", pr.APIVersion, pr.Kind)
	}
	var spec ruleFile
	if err := pr.Spec.Decode(&spec); err != nil {
		t.Fatal(err)
	}
	if want := loadRules(t); !reflect.DeepEqual(spec, want) {
		t.Error("the PrometheusRule's groups differ from rules.yaml's: run make observability")
	}

	// The ConfigMap carries the dashboard byte for byte.
	cm := readObject(t, filepath.Join(monitoringDir, "grafana-dashboard.yaml"))
	dash, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if cm.Kind != "ConfigMap" || cm.Metadata.Labels["grafana_dashboard"] != "1" {
		t.Errorf("grafana-dashboard.yaml: kind %s, labels %v; want a ConfigMap labelled grafana_dashboard: \"1\"", cm.Kind, cm.Metadata.Labels)
	}
	if cm.Data["timbus.json"] != string(dash) {
		t.Error("the dashboard ConfigMap's timbus.json differs from dashboard.json: run make observability")
	}

	// The ServiceMonitor selects the Service and scrapes its metrics port.
	sm := readObject(t, filepath.Join(monitoringDir, "servicemonitor.yaml"))
	var smSpec struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Endpoints []struct {
			Port string `yaml:"port"`
			Path string `yaml:"path"`
		} `yaml:"endpoints"`
	}
	if err := sm.Spec.Decode(&smSpec); err != nil {
		t.Fatal(err)
	}
	svc := readObject(t, filepath.Join(kubernetesDir, "service.yaml"))
	var svcSpec struct {
		Ports []struct {
			Name string `yaml:"name"`
		} `yaml:"ports"`
	}
	if err := svc.Spec.Decode(&svcSpec); err != nil {
		t.Fatal(err)
	}
	if sm.APIVersion != "monitoring.coreos.com/v1" || sm.Kind != "ServiceMonitor" {
		t.Errorf("servicemonitor.yaml: %s %s", sm.APIVersion, sm.Kind)
	}
	if len(smSpec.Selector.MatchLabels) == 0 {
		t.Error("the ServiceMonitor selects every Service")
	}
	for k, v := range smSpec.Selector.MatchLabels {
		if svc.Metadata.Labels[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%s, which the Service timbus is not labelled with", k, v)
		}
	}
	if len(smSpec.Endpoints) != 1 || smSpec.Endpoints[0].Port != "metrics" || smSpec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v; want port metrics, path /metrics", smSpec.Endpoints)
	}
	hasMetrics := false
	for _, p := range svcSpec.Ports {
		hasMetrics = hasMetrics || p.Name == "metrics"
	}
	if !hasMetrics {
		t.Error("the Service timbus has no port named metrics")
	}

	// The monitoring kustomization lists every manifest of its directory.
	var kust struct {
		Kind      string   `yaml:"kind"`
		Namespace string   `yaml:"namespace"`
		Resources []string `yaml:"resources"`
	}
	data, err := os.ReadFile(filepath.Join(monitoringDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &kust); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(monitoringDir)
	if err != nil {
		t.Fatal(err)
	}
	var manifests []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".yaml") && e.Name() != "kustomization.yaml" {
			manifests = append(manifests, e.Name())
		}
	}
	slices.Sort(manifests)
	if got := slices.Sorted(slices.Values(kust.Resources)); kust.Kind != "Kustomization" || kust.Namespace != "timbus" || !slices.Equal(got, manifests) {
		t.Errorf("monitoring/kustomization.yaml: kind %q, namespace %q, resources %v; want a Kustomization in namespace timbus listing %v",
			kust.Kind, kust.Namespace, kust.Resources, manifests)
	}

	// The default kustomization works without the operator's CRDs.
	data, err = os.ReadFile(filepath.Join(kubernetesDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var base struct {
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(data, &base); err != nil {
		t.Fatal(err)
	}
	for _, r := range base.Resources {
		if strings.HasPrefix(filepath.Clean(r), "monitoring") {
			t.Errorf("deploy/kubernetes/kustomization.yaml lists %s: the monitoring objects need the Prometheus Operator's CRDs", r)
		}
	}
}
