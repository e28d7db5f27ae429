package main

// Tests of the deployment files under deploy/: every timbus config passes
// "timbus check", every YAML file parses, the Kubernetes manifests are
// complete and agree with each other, every NATS config is accepted by the
// NATS server's own parser, and the files the compose file and the docs
// refer to exist. Docker itself is not needed.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"
)

// deployDir is deploy/ seen from this package's directory, where go test runs.
var deployDir = filepath.Join("..", "..", "deploy")

// deployFiles lists the files under deploy/ whose base name matches one of
// the patterns, and fails the test when there is none.
func deployFiles(t *testing.T, patterns ...string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(deployDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, pattern := range patterns {
			if ok, _ := filepath.Match(pattern, d.Name()); ok && d.Type().IsRegular() {
				files = append(files, path)
				break
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no file named %s under %s", strings.Join(patterns, " or "), deployDir)
	}
	return files
}

func deployPath(parts ...string) string {
	return filepath.Join(append([]string{deployDir}, parts...)...)
}

func readDeployFile(t *testing.T, parts ...string) []byte {
	t.Helper()
	data, err := os.ReadFile(deployPath(parts...))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// checkConfig runs "timbus check" in-process and returns its output; it
// fails the test unless the settings are accepted.
func checkConfig(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := runTimbus(t, context.Background(), append([]string{"check"}, args...)...)
	if code != exitOK {
		t.Fatalf("timbus check %s: exit code %d\n%s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

// loadDeployConfig reads a timbus config as serve would, without environment.
func loadDeployConfig(t *testing.T, path string) *serveConfig {
	t.Helper()
	cfg, err := loadServeConfig([]string{"--config", path}, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestDeployTimbusConfigsPassCheck(t *testing.T) {
	files := deployFiles(t, "timbus*.yaml")
	// The configs the docs and manifests point at; a rename must not drop
	// one from this test silently.
	for _, want := range []string{
		deployPath("docker", "timbus.yaml"),
		deployPath("compose", "timbus.yaml"),
		deployPath("kubernetes", "timbus.yaml"),
		deployPath("nats", "supercluster", "timbus-sg.yaml"),
		deployPath("nats", "supercluster", "timbus-fra.yaml"),
	} {
		if !slices.Contains(files, want) {
			t.Errorf("%s not found; found %v", want, files)
		}
	}
	for _, file := range files {
		t.Run(filepath.ToSlash(file), func(t *testing.T) {
			clearEnv(t)
			if data, err := os.ReadFile(file); err == nil && regexp.MustCompile(`(?m)^nats-user:`).Match(data) {
				// The password comes from the environment, a secret.
				t.Setenv(envName("nats-password"), natsSecrets["TIMBUS_NATS_PASSWORD"])
			}
			out := checkConfig(t, "--config", file)
			if !strings.HasPrefix(out, file+": ok\n") {
				t.Errorf("output:\n%s", out)
			}
		})
	}
}

// yamlDocs decodes every document of a YAML file.
func yamlDocs(t *testing.T, path string) []yaml.Node {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, doc)
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML document", path)
	}
	return docs
}

func TestDeployYAMLParses(t *testing.T) {
	for _, file := range deployFiles(t, "*.yaml", "*.yml") {
		yamlDocs(t, file)
	}
}

// manifest is the part of a Kubernetes object these tests read.
type manifest struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       yaml.Node         `yaml:"spec"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		ValueFrom struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
	} `yaml:"resources"`
	ReadinessProbe  *probe `yaml:"readinessProbe"`
	LivenessProbe   *probe `yaml:"livenessProbe"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type deploymentSpec struct {
	Replicas int `yaml:"replicas"`
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
			SecurityContext               struct {
				RunAsNonRoot bool `yaml:"runAsNonRoot"`
				RunAsUser    int  `yaml:"runAsUser"`
			} `yaml:"securityContext"`
			Containers []container `yaml:"containers"`
			Volumes    []struct {
				Name      string `yaml:"name"`
				ConfigMap *struct {
					Name string `yaml:"name"`
				} `yaml:"configMap"`
			} `yaml:"volumes"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

// kubernetesObjects reads the resources of deploy/kubernetes/kustomization.yaml
// and checks that every YAML file there is listed, or known not to be a
// manifest.
func kubernetesObjects(t *testing.T) map[string]manifest {
	t.Helper()
	var kust struct {
		APIVersion string   `yaml:"apiVersion"`
		Kind       string   `yaml:"kind"`
		Resources  []string `yaml:"resources"`
		Images     []struct {
			Name string `yaml:"name"`
		} `yaml:"images"`
	}
	if err := yamlDocs(t, deployPath("kubernetes", "kustomization.yaml"))[0].Decode(&kust); err != nil {
		t.Fatal(err)
	}
	if kust.Kind != "Kustomization" || len(kust.Resources) == 0 {
		t.Fatalf("kustomization.yaml: kind %q, resources %v", kust.Kind, kust.Resources)
	}
	notManifests := []string{"kustomization.yaml", "timbus.yaml", "nats-values.yaml"}
	entries, err := os.ReadDir(deployPath("kubernetes"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".yaml") && !slices.Contains(notManifests, e.Name()) && !slices.Contains(kust.Resources, e.Name()) {
			t.Errorf("deploy/kubernetes/%s is not listed in kustomization.yaml's resources", e.Name())
		}
	}
	objects := map[string]manifest{} // by kind/name
	for _, res := range kust.Resources {
		for i, doc := range yamlDocs(t, deployPath("kubernetes", res)) {
			var m manifest
			if err := doc.Decode(&m); err != nil {
				t.Fatalf("%s document %d: %v", res, i, err)
			}
			if m.APIVersion == "" || m.Kind == "" || m.Metadata.Name == "" {
				t.Errorf("%s document %d: apiVersion %q, kind %q, metadata.name %q: all are required", res, i, m.APIVersion, m.Kind, m.Metadata.Name)
			}
			objects[m.Kind+"/"+m.Metadata.Name] = m
		}
	}
	return objects
}

func object(t *testing.T, objects map[string]manifest, key string) manifest {
	t.Helper()
	m, ok := objects[key]
	if !ok {
		t.Fatalf("no %s among the Kubernetes manifests", key)
	}
	return m
}

func TestDeployKubernetes(t *testing.T) {
	objects := kubernetesObjects(t)
	configFile := deployPath("kubernetes", "timbus.yaml")
	cfg := loadDeployConfig(t, configFile)

	// The ConfigMap carries timbus.yaml verbatim.
	cm := object(t, objects, "ConfigMap/timbus-config")
	if want := string(readDeployFile(t, "kubernetes", "timbus.yaml")); cm.Data["timbus.yaml"] != want {
		t.Errorf("ConfigMap timbus-config's timbus.yaml differs from deploy/kubernetes/timbus.yaml")
	}

	var dep deploymentSpec
	decodeSpec(t, objects, "Deployment/timbus", &dep)
	if dep.Replicas != 2 {
		t.Errorf("replicas = %d, want 2", dep.Replicas)
	}
	for k, v := range dep.Selector.MatchLabels {
		if dep.Template.Metadata.Labels[k] != v {
			t.Errorf("pod labels %v do not match the selector %v", dep.Template.Metadata.Labels, dep.Selector.MatchLabels)
		}
	}
	pod := dep.Template.Spec
	if !pod.SecurityContext.RunAsNonRoot || pod.SecurityContext.RunAsUser != 65532 {
		t.Errorf("pod securityContext: %+v, want runAsNonRoot and user 65532", pod.SecurityContext)
	}
	// The whole shutdown, drain-delay included, is bounded by
	// shutdownTimeout; Kubernetes must wait for it before SIGKILL.
	if cfg.bridge.DrainDelay <= 0 || cfg.bridge.DrainDelay > shutdownTimeout/2 {
		t.Errorf("drain-delay %v: want some, and well under the %v shutdown bound", cfg.bridge.DrainDelay, shutdownTimeout)
	}
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace <= shutdownTimeout {
		t.Errorf("terminationGracePeriodSeconds %v: must exceed timbus's %v shutdown bound", grace, shutdownTimeout)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if !slices.Equal(c.Args, []string{"serve", "--config", "/etc/timbus/timbus.yaml"}) {
		t.Errorf("args = %q", c.Args)
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil && v.ConfigMap.Name == "timbus-config" && vm.MountPath == "/etc/timbus" {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Error("ConfigMap timbus-config is not mounted at /etc/timbus")
	}
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if want := listenPort(t, cfg.bridge.Listen); ports["http"] != want {
		t.Errorf("container port http = %d, timbus listens on %d", ports["http"], want)
	}
	if want := listenPort(t, cfg.bridge.MetricsListen); ports["metrics"] != want || want != 9090 {
		t.Errorf("container port metrics = %d, metrics-listen port %d, want 9090", ports["metrics"], want)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port != "metrics" {
		t.Errorf("readinessProbe: %+v, want GET /readyz on port metrics", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port != "metrics" {
		t.Errorf("livenessProbe: %+v, want GET /healthz on port metrics", p)
	}
	if sc := c.SecurityContext; !sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container securityContext: %+v", sc)
	}
	if c.Resources.Requests["cpu"] == "" {
		t.Error("no CPU request: the HPA scales on CPU utilisation of the request")
	}

	// The token comes from the Secret, and the config passes check with it.
	secret := object(t, objects, "Secret/timbus")
	var token string
	for _, e := range c.Env {
		if ref := e.ValueFrom.SecretKeyRef; e.Name == envName("token") && ref != nil && ref.Name == "timbus" {
			token = secret.StringData[ref.Key]
		}
	}
	if token == "" {
		t.Fatalf("%s does not come from Secret timbus, or the Secret lacks its key", envName("token"))
	}
	clearEnv(t)
	for _, e := range c.Env {
		if ref := e.ValueFrom.SecretKeyRef; ref != nil && ref.Name == "timbus" {
			if _, ok := secret.StringData[ref.Key]; !ok {
				t.Errorf("env %s: Secret timbus has no key %s", e.Name, ref.Key)
			}
			t.Setenv(e.Name, secret.StringData[ref.Key])
		}
	}
	out := checkConfig(t, "--config", configFile)
	if !strings.Contains(out, "signed callbacks required (token set)") {
		t.Errorf("check with the Secret's token:\n%s", out)
	}
	if !strings.Contains(out, "user timbus with password") {
		t.Errorf("timbus does not log in to NATS as timbus with the Secret's password:\n%s", out)
	}
	checkNATSValuesSecrets(t, secret)

	svc := object(t, objects, "Service/timbus")
	var svcSpec struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name string `yaml:"name"`
			Port int    `yaml:"port"`
		} `yaml:"ports"`
	}
	decodeSpec(t, objects, "Service/timbus", &svcSpec)
	svcPorts := map[string]int{}
	for _, p := range svcSpec.Ports {
		svcPorts[p.Name] = p.Port
	}
	if svcPorts["http"] != 8080 || svcPorts["metrics"] != 9090 {
		t.Errorf("Service ports %v, want http 8080 and metrics 9090", svcPorts)
	}
	if a := svc.Metadata.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "9090" || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("Service annotations %v, want Prometheus scraping of :9090/metrics", a)
	}
	checkSelects(t, "Service", svcSpec.Selector, dep.Template.Metadata.Labels)

	var pdb struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
	}
	decodeSpec(t, objects, "PodDisruptionBudget/timbus", &pdb)
	checkSelects(t, "PodDisruptionBudget", pdb.Selector.MatchLabels, dep.Template.Metadata.Labels)

	var hpa struct {
		ScaleTargetRef struct {
			Kind string `yaml:"kind"`
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicas int `yaml:"minReplicas"`
		Metrics     []struct {
			Resource struct {
				Name string `yaml:"name"`
			} `yaml:"resource"`
		} `yaml:"metrics"`
	}
	decodeSpec(t, objects, "HorizontalPodAutoscaler/timbus", &hpa)
	if hpa.ScaleTargetRef.Kind != "Deployment" || hpa.ScaleTargetRef.Name != "timbus" || hpa.MinReplicas < 2 ||
		len(hpa.Metrics) == 0 || hpa.Metrics[0].Resource.Name != "cpu" {
		t.Errorf("HPA: %+v", hpa)
	}

	// timbus connects to the client Service of the NATS Helm release.
	var values struct {
		Config struct {
			Cluster struct {
				Enabled  bool `yaml:"enabled"`
				Replicas int  `yaml:"replicas"`
			} `yaml:"cluster"`
			JetStream struct {
				Enabled bool `yaml:"enabled"`
			} `yaml:"jetstream"`
		} `yaml:"config"`
	}
	if err := yamlDocs(t, deployPath("kubernetes", "nats-values.yaml"))[0].Decode(&values); err != nil {
		t.Fatal(err)
	}
	c3 := values.Config
	if !c3.Cluster.Enabled || c3.Cluster.Replicas < 3 || !c3.JetStream.Enabled {
		t.Errorf("nats-values.yaml: %+v, want a cluster of 3 or more with JetStream", c3)
	}
	if r := cfg.bridge.AuditStream.Replicas; r > c3.Cluster.Replicas {
		t.Errorf("audit stream replicas %d > %d NATS nodes", r, c3.Cluster.Replicas)
	}
	for _, host := range natsHosts(t, cfg.bridge.NATSURL) {
		if host != "nats" {
			t.Errorf("nats-url host %q: want nats, the Service of the Helm release", host)
		}
	}
}

func decodeSpec(t *testing.T, objects map[string]manifest, key string, v any) {
	t.Helper()
	spec := object(t, objects, key).Spec
	if err := spec.Decode(v); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
}

func checkSelects(t *testing.T, what string, selector, labels map[string]string) {
	t.Helper()
	if len(selector) == 0 {
		t.Errorf("%s has no selector", what)
	}
	for k, v := range selector {
		if labels[k] != v {
			t.Errorf("%s selector %v does not select the pods (labels %v)", what, selector, labels)
		}
	}
}

func listenPort(t *testing.T, addr string) int {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	port, err := strconv.Atoi(addr[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("address %q has no port", addr)
	}
	return port
}

func natsHosts(t *testing.T, urls string) []string {
	t.Helper()
	var hosts []string
	for _, raw := range splitList(urls) {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("nats-url %q: %v", raw, err)
		}
		hosts = append(hosts, u.Hostname())
	}
	return hosts
}

func TestDeployNATSConfigs(t *testing.T) {
	// Templated files (supercluster/*.conf) take the server name from the
	// environment, as the NATS Helm chart and systemd units provide it.
	t.Setenv("SERVER_NAME", "test-1")
	for _, file := range deployFiles(t, "*.conf") {
		if filepath.Base(file) == "embedded.conf" {
			// timbus's embedded server, not a cluster node: bridge's
			// embedded tests run it.
			continue
		}
		t.Run(filepath.ToSlash(file), func(t *testing.T) {
			for k, v := range natsSecretEnv(file) {
				t.Setenv(k, v)
			}
			opts, err := server.ProcessConfigFile(file)
			if err != nil {
				t.Fatal(err)
			}
			// NewServer validates the options together (cluster vs gateway
			// names, JetStream in a cluster, ...) without listening.
			opts.NoSigs = true
			if _, err := server.NewServer(opts); err != nil {
				t.Fatalf("nats-server refuses it: %v", err)
			}
			if opts.ServerName == "" || !opts.JetStream || opts.StoreDir == "" {
				t.Errorf("server_name %q, jetstream %v, store_dir %q: want a named JetStream server with a store", opts.ServerName, opts.JetStream, opts.StoreDir)
			}
			if opts.Cluster.Name == "" || len(opts.Routes) < 3 {
				t.Errorf("cluster %q with %d routes: want a named cluster of three", opts.Cluster.Name, len(opts.Routes))
			}
			if opts.HTTPPort == 0 {
				t.Error("no monitoring port: health checks need /healthz")
			}
			if strings.Contains(filepath.ToSlash(file), "/supercluster/") {
				if opts.Gateway.Name != opts.Cluster.Name || len(opts.Gateway.Gateways) < 2 {
					t.Errorf("gateway %q with %d gateways: want the cluster's name and both clusters", opts.Gateway.Name, len(opts.Gateway.Gateways))
				}
			}
		})
	}
}

// composeFile is the part of deploy/compose/compose.yaml these tests read.
type composeFile struct {
	Services map[string]struct {
		Build *struct {
			Context    string            `yaml:"context"`
			Dockerfile string            `yaml:"dockerfile"`
			Target     string            `yaml:"target"`
			Args       map[string]string `yaml:"args"`
		} `yaml:"build"`
		Image       string            `yaml:"image"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		DependsOn   yaml.Node         `yaml:"depends_on"`
		Networks    yaml.Node         `yaml:"networks"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

func TestDeployCompose(t *testing.T) {
	dir := deployPath("compose")
	var compose composeFile
	if err := yamlDocs(t, filepath.Join(dir, "compose.yaml"))[0].Decode(&compose); err != nil {
		t.Fatal(err)
	}
	if len(compose.Services) == 0 {
		t.Fatal("no services")
	}
	haproxy := string(readDeployFile(t, "compose", "haproxy.cfg"))
	var bridges []string
	for name, svc := range compose.Services {
		// Builds: the context and Dockerfile exist, and so does the stage.
		if b := svc.Build; b != nil {
			dockerfile := filepath.Join(dir, b.Context, b.Dockerfile)
			data, err := os.ReadFile(dockerfile)
			if err != nil {
				t.Errorf("service %s: %v", name, err)
			} else if b.Target != "" && !regexp.MustCompile(`(?mi)^FROM .* AS `+regexp.QuoteMeta(b.Target)+`\s*$`).Match(data) {
				t.Errorf("service %s: %s has no stage %q", name, b.Dockerfile, b.Target)
			}
			if dec := b.Args["DECIDER"]; dec != "" {
				if _, err := os.Stat(filepath.Join(dir, b.Context, "deciders", "examples", dec, "main.go")); err != nil {
					t.Errorf("service %s: decider %s: %v", name, dec, err)
				}
			}
		}
		// Bind mounts point at files that exist; named volumes are declared.
		mounts := map[string]string{} // container path → host path
		for _, v := range svc.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 {
				t.Errorf("service %s: volume %q", name, v)
				continue
			}
			src, dst := parts[0], parts[1]
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				host := filepath.Join(dir, src)
				if _, err := os.Stat(host); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
				mounts[dst] = host
			} else if _, ok := compose.Volumes[src]; !ok {
				t.Errorf("service %s: volume %q is not declared", name, src)
			}
		}
		for _, dep := range dependsOn(t, svc.DependsOn) {
			if _, ok := compose.Services[dep]; !ok {
				t.Errorf("service %s depends on %q, which is no service", name, dep)
			}
		}

		// A bridge: check its settings as the container would get them.
		if svc.Build == nil || svc.Build.Target != "timbus" {
			continue
		}
		bridges = append(bridges, name)
		if len(svc.Command) == 0 || svc.Command[0] != "serve" {
			t.Errorf("bridge %s: command %q, want serve ...", name, svc.Command)
			continue
		}
		args := slices.Clone(svc.Command[1:])
		i := slices.Index(args, "--config")
		if i < 0 || i+1 >= len(args) || mounts[args[i+1]] == "" {
			t.Errorf("bridge %s: --config is not a file mounted into the container: %q", name, args)
			continue
		}
		configFile := mounts[args[i+1]]
		args[i+1] = configFile
		t.Run("check "+name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range svc.Environment {
				t.Setenv(k, composeInterpolate(v))
			}
			out := checkConfig(t, args...)
			if !strings.Contains(out, "user timbus with password") {
				t.Errorf("bridge %s does not log in to NATS as timbus:\n%s", name, out)
			}
		})

		cfg := loadDeployConfig(t, configFile)
		b := cfg.bridge
		if b.NATSURL == "" || b.AuditStream.Name == "" || b.AuditStream.Replicas != 3 || b.EventsStream.Name == "" || b.MetricsListen == "" {
			t.Errorf("bridge %s: want nats-url, an audit stream with 3 replicas, an events stream and metrics-listen; got %+v", name, b)
		}
		for _, host := range natsHosts(t, b.NATSURL) {
			if _, ok := compose.Services[host]; !ok {
				t.Errorf("bridge %s: nats-url host %q is no service", name, host)
			}
		}
		// haproxy sends callbacks to it, checks /readyz on its metrics
		// port, and is the proxy whose X-Forwarded-For it trusts.
		if !strings.Contains(haproxy, "server "+name+" "+name+":"+strconv.Itoa(listenPort(t, b.Listen))) {
			t.Errorf("haproxy.cfg has no server line for %s", name)
		}
		if !strings.Contains(haproxy, "check port "+strconv.Itoa(listenPort(t, b.MetricsListen))) || !strings.Contains(haproxy, "GET /readyz") {
			t.Errorf("haproxy.cfg does not check /readyz on the metrics port")
		}
		lbAddr := composeAddress(t, compose.Services["lb"].Networks)
		if lbAddr == "" || !slices.Contains(b.TrustedProxies, lbAddr) || b.ProxyHeader != "X-Forwarded-For" {
			t.Errorf("bridge %s trusts %v (%s); the load balancer is at %q", name, b.TrustedProxies, b.ProxyHeader, lbAddr)
		}
		if !strings.Contains(haproxy, "set-header X-Forwarded-For %[src]") {
			t.Error("haproxy.cfg must overwrite X-Forwarded-For with the peer address")
		}
	}
	if len(bridges) < 2 {
		t.Errorf("bridges built from the Dockerfile's timbus stage: %v, want two", bridges)
	}

	// Every NATS node gets every secret its config reads.
	for name, svc := range compose.Services {
		for _, v := range svc.Volumes {
			src, dst, _ := strings.Cut(v, ":")
			if !strings.HasSuffix(src, ".conf") || !strings.HasPrefix(dst, "/etc/nats/") {
				continue
			}
			conf := filepath.Join(dir, src)
			env := natsSecretEnv(conf)
			for _, k := range confVariables(t, conf) {
				got, ok := svc.Environment[k]
				if !ok {
					t.Errorf("service %s: %s reads $%s, which its environment lacks", name, src, k)
				} else if got := composeInterpolate(got); got != env[k] {
					t.Errorf("service %s: $%s = %q with the test secrets, want %q", name, k, got, env[k])
				}
			}
		}
	}
	// The deciders log in as decider: in the URL (Go), or NATS_USER and
	// NATS_PASSWORD (Node.js, whose client ignores URL credentials).
	for _, name := range []string{"officialaccount", "groupfilter"} {
		env := compose.Services[name].Environment
		user, pass := env["NATS_USER"], composeInterpolate(env["NATS_PASSWORD"])
		for _, raw := range splitList(composeInterpolate(env["NATS_URL"])) {
			u, err := url.Parse(raw)
			if err != nil {
				t.Fatalf("service %s: NATS_URL: %v", name, err)
			}
			if u.User != nil {
				user = u.User.Username()
				pass, _ = u.User.Password()
			}
			if user != "decider" || pass != natsSecrets["DECIDER_PASSWORD"] {
				t.Errorf("service %s does not log in to %s as decider with $DECIDER_PASSWORD", name, u.Host)
			}
		}
	}
	// .env.example names every secret compose reads, and holds none.
	example := string(readDeployFile(t, "compose", ".env.example"))
	for _, k := range []string{"TIMBUS_NATS_PASSWORD", "DECIDER_PASSWORD", "AUDITOR_PASSWORD", "ROUTE_PASSWORD", "TIMBUS_TOKEN"} {
		if !regexp.MustCompile(`(?m)^` + k + `=(replace-with-\S*)?$`).MatchString(example) {
			t.Errorf(".env.example: no placeholder line for %s", k)
		}
	}
	for _, want := range []string{"nats-1", "nats-2", "nats-3", "lb", "officialaccount", "groupfilter"} {
		if _, ok := compose.Services[want]; !ok {
			t.Errorf("no service %s", want)
		}
	}
}

// dependsOn reads depends_on in its list or its map form.
func dependsOn(t *testing.T, n yaml.Node) []string {
	t.Helper()
	switch n.Kind {
	case 0:
		return nil
	case yaml.SequenceNode:
		var names []string
		if err := n.Decode(&names); err != nil {
			t.Fatal(err)
		}
		return names
	case yaml.MappingNode:
		var m map[string]any
		if err := n.Decode(&m); err != nil {
			t.Fatal(err)
		}
		var names []string
		for k := range m {
			names = append(names, k)
		}
		return names
	case yaml.AliasNode:
		return dependsOn(t, *n.Alias)
	}
	t.Fatalf("depends_on: unexpected YAML kind %v", n.Kind)
	return nil
}

// composeAddress returns the first fixed ipv4_address of a service.
func composeAddress(t *testing.T, n yaml.Node) string {
	t.Helper()
	var nets map[string]struct {
		IPv4 string `yaml:"ipv4_address"`
	}
	if n.Kind != yaml.MappingNode || n.Decode(&nets) != nil {
		return ""
	}
	for _, v := range nets {
		if v.IPv4 != "" {
			return v.IPv4
		}
	}
	return ""
}

func TestDeployDockerfile(t *testing.T) {
	df := string(readDeployFile(t, "docker", "Dockerfile"))
	for _, want := range []string{
		"FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS source",
		"CGO_ENABLED=0",
		`go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/timbus ./cmd/timbus`,
		"FROM gcr.io/distroless/static-debian12:nonroot AS timbus",
		"USER 65532:65532",
		"EXPOSE 8080 9090 4222",
		`ENTRYPOINT ["/timbus"]`,
		`CMD ["serve", "--config", "/etc/timbus/timbus.yaml"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if !regexp.MustCompile(`ARG GO_VERSION=1\.26\b`).MatchString(df) {
		t.Error("Dockerfile does not build with Go 1.26")
	}
	// The last stage is the default target: it must be timbus.
	stages := regexp.MustCompile(`(?m)^FROM .* AS (\S+)\s*$`).FindAllStringSubmatch(df, -1)
	if len(stages) == 0 || stages[len(stages)-1][1] != "timbus" {
		t.Errorf("stages %v: the last one must be timbus", stages)
	}

	// Files copied from the build context exist, and .dockerignore (an
	// allow-list) lets them in.
	ignore := string(readDeployFile(t, "..", ".dockerignore"))
	allowed := func(path string) bool {
		for _, line := range strings.Split(ignore, "\n") {
			if p, ok := strings.CutPrefix(strings.TrimSpace(line), "!"); ok {
				p = strings.TrimSuffix(p, "/")
				if path == p || strings.HasPrefix(path, p+"/") {
					return true
				}
			}
		}
		return false
	}
	for _, m := range regexp.MustCompile(`(?m)^COPY ([^\n]+)$`).FindAllStringSubmatch(df, -1) {
		fields := strings.Fields(m[1])
		fromStage := false
		for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
			fromStage = fromStage || strings.HasPrefix(fields[0], "--from=")
			fields = fields[1:]
		}
		if fromStage || len(fields) < 2 {
			continue
		}
		for _, src := range fields[:len(fields)-1] {
			if src == "." {
				continue
			}
			if _, err := os.Stat(filepath.Join(deployDir, "..", src)); err != nil {
				t.Errorf("COPY %s: %v", src, err)
			}
			if !allowed(src) {
				t.Errorf("COPY %s: .dockerignore leaves it out of the build context", src)
			}
		}
	}
	for _, dir := range []string{"go.mod", "go.sum", "cmd/timbus", "bridge", "deciders/catalog", "deciders/protocol", "internal/jsonscan", "internal/samples", "deciders/examples/go-officialaccount"} {
		if !allowed(dir) {
			t.Errorf(".dockerignore leaves %s out of the build context", dir)
		}
	}
}

func TestDeploySystemdAndDocs(t *testing.T) {
	unit := string(readDeployFile(t, "systemd", "timbus.service"))
	const configPath = "/etc/timbus/timbus.yaml"
	if !strings.Contains(unit, "ExecStart=/usr/local/bin/timbus serve --config "+configPath+"\n") {
		t.Errorf("timbus.service does not run timbus serve --config %s", configPath)
	}
	if m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\d+)s$`).FindStringSubmatch(unit); m == nil {
		t.Error("timbus.service has no TimeoutStopSec")
	} else if n, _ := strconv.Atoi(m[1]); time.Duration(n)*time.Second <= shutdownTimeout {
		t.Errorf("TimeoutStopSec=%ss does not exceed timbus's %v shutdown bound", m[1], shutdownTimeout)
	}

	readme := string(readDeployFile(t, "README.md"))
	for _, want := range []string{configPath, "timbus check", "--drain-delay", "terminationGracePeriodSeconds", "timbus_callbacks_total"} {
		if !strings.Contains(readme, want) {
			t.Errorf("deploy/README.md does not mention %s", want)
		}
	}
	// Every relative link of the README leads to a file.
	for _, m := range regexp.MustCompile(`\]\(([^)#:]+)(#[^)]*)?\)`).FindAllStringSubmatch(readme, -1) {
		if _, err := os.Stat(filepath.Join(deployDir, m[1])); err != nil {
			t.Errorf("deploy/README.md links to %s: %v", m[1], err)
		}
	}
	// Every metric the README names exists.
	metricsSource, err := os.ReadFile(filepath.Join(deployDir, "..", "bridge", "metrics.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range regexp.MustCompile(`\btimbus_[a-z_]+`).FindAllString(readme, -1) {
		if base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum"); !bytes.Contains(metricsSource, []byte(`"`+base+`"`)) {
			t.Errorf("deploy/README.md names the metric %s, which bridge/metrics.go does not define", name)
		}
	}
}

// natsSecrets are the secrets the NATS configs read from the environment,
// with test values. Each deployment must provide every one of them.
var natsSecrets = map[string]string{
	"TIMBUS_NATS_PASSWORD": "9f2c4e7a1b3d5f60timbus",
	"DECIDER_PASSWORD":     "0a1b2c3d4e5f6071decider",
	"AUDITOR_PASSWORD":     "7e6d5c4b3a291807auditor",
	"ROUTE_PASSWORD":       "31a7c9e5b2d4f680route",
	"GATEWAY_PASSWORD":     "c0ffee12d34e56f7gateway",
}

// natsSecretEnv is the environment a NATS node gets: the secrets, and the
// route URLs built from ROUTE_PASSWORD for the hosts of file.
func natsSecretEnv(file string) map[string]string {
	env := maps.Clone(natsSecrets)
	host := func(n int) string { return "nats-" + strconv.Itoa(n) }
	if region := strings.TrimSuffix(filepath.Base(file), ".conf"); strings.Contains(filepath.ToSlash(file), "/supercluster/") {
		host = func(n int) string { return "nats-" + strconv.Itoa(n) + "." + region + ".example.net" }
	}
	for n := 1; n <= 3; n++ {
		env["NATS_ROUTE_"+strconv.Itoa(n)] = "nats-route://route:" + natsSecrets["ROUTE_PASSWORD"] + "@" + host(n) + ":6222"
	}
	return env
}

// confVariables lists the $NAMES a nats-server config takes from the
// environment: those it uses outside strings and comments and does not
// define itself.
func confVariables(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	var used []string
	quoted := regexp.MustCompile(`"[^"]*"`)
	for _, line := range strings.Split(string(data), "\n") {
		line, _, _ = strings.Cut(quoted.ReplaceAllString(line, `""`), "#")
		if m := regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)\s*[=:]`).FindStringSubmatch(line); m != nil {
			defined[m[1]] = true
		}
		for _, m := range regexp.MustCompile(`\$([A-Za-z_][A-Za-z0-9_]*)`).FindAllStringSubmatch(line, -1) {
			if !slices.Contains(used, m[1]) {
				used = append(used, m[1])
			}
		}
	}
	return slices.DeleteFunc(used, func(name string) bool { return defined[name] })
}

// clusterConfs are the NATS configs of the cluster deployments: every
// *.conf but the embedded server's.
func clusterConfs(t *testing.T) []string {
	t.Helper()
	return slices.DeleteFunc(deployFiles(t, "*.conf"), func(f string) bool { return filepath.Base(f) == "embedded.conf" })
}

// TestDeployNATSAuthentication: every cluster node authenticates its
// clients, with the users and rights of deploy/nats/embedded.conf, and its
// routes and gateways, with secrets from the environment; a node missing
// one refuses to start.
func TestDeployNATSAuthentication(t *testing.T) {
	for _, file := range clusterConfs(t) {
		t.Run(filepath.ToSlash(file), func(t *testing.T) {
			env := natsSecretEnv(file)
			for k, v := range env {
				t.Setenv(k, v)
			}
			t.Setenv("SERVER_NAME", "test-1")
			opts, err := server.ProcessConfigFile(file)
			if err != nil {
				t.Fatal(err)
			}
			users := map[string]string{}
			for _, u := range opts.Users {
				users[u.Username] = u.Password
			}
			for user, secret := range map[string]string{"timbus": "TIMBUS_NATS_PASSWORD", "decider": "DECIDER_PASSWORD", "auditor": "AUDITOR_PASSWORD"} {
				if users[user] != natsSecrets[secret] {
					t.Errorf("user %s: no password from $%s", user, secret)
				}
			}
			if len(opts.Users) != 3 || opts.NoAuthUser != "" || opts.Authorization != "" || len(opts.Nkeys) != 0 {
				t.Errorf("users %v, no_auth_user %q: want exactly timbus, decider and auditor", slices.Collect(maps.Keys(users)), opts.NoAuthUser)
			}
			// Routes: the nodes accept only user route, and dial each other
			// with it.
			if opts.Cluster.Username != "route" || opts.Cluster.Password != natsSecrets["ROUTE_PASSWORD"] {
				t.Errorf("cluster authorization: user %q; want route with $ROUTE_PASSWORD", opts.Cluster.Username)
			}
			for _, r := range opts.Routes {
				if pw, _ := r.User.Password(); r.User.Username() != "route" || pw != natsSecrets["ROUTE_PASSWORD"] {
					t.Errorf("route %s does not log in as route", r.Redacted())
				}
			}
			if strings.Contains(filepath.ToSlash(file), "/supercluster/") {
				// A gateway dials with the gateway block's user when its URL
				// has none.
				if opts.Gateway.Username != "gateway" || opts.Gateway.Password != natsSecrets["GATEWAY_PASSWORD"] {
					t.Errorf("gateway authorization: user %q; want gateway with $GATEWAY_PASSWORD", opts.Gateway.Username)
				}
			}

			// Every secret is needed: without one, the node does not start.
			for _, name := range confVariables(t, file) {
				if name == "SERVER_NAME" {
					continue
				}
				if _, ok := env[name]; !ok {
					t.Errorf("$%s is no secret the deployments provide", name)
					continue
				}
				t.Run("without "+name, func(t *testing.T) {
					t.Setenv(name, "")
					os.Unsetenv(name)
					if _, err := server.ProcessConfigFile(file); err == nil {
						t.Errorf("accepted without $%s", name)
					}
				})
			}
		})
	}
}

// startDeployNode runs the node of file alone, on a free loopback port with
// its JetStream store in a temporary directory: its users and rights as
// shipped, without routes, gateways or monitoring.
func startDeployNode(t *testing.T, file string) *server.Server {
	t.Helper()
	for k, v := range natsSecretEnv(file) {
		t.Setenv(k, v)
	}
	t.Setenv("SERVER_NAME", "test-1")
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPHost, opts.HTTPPort = "", 0
	opts.Cluster, opts.Routes, opts.Gateway = server.ClusterOpts{}, nil, server.GatewayOpts{}
	opts.StoreDir = t.TempDir()
	opts.JetStreamMaxStore = 64 << 20
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS node not ready within 10s")
	}
	return ns
}

// violations collects the permission violations a NATS server reports to a
// client.
type violations struct {
	mu   sync.Mutex
	seen []string
	more chan struct{}
}

func connectDeployUser(t *testing.T, url, user, password string) (*nats.Conn, *violations) {
	t.Helper()
	v := &violations{more: make(chan struct{}, 16)}
	nc, err := nats.Connect(url, nats.UserInfo(user, password), nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				v.mu.Lock()
				v.seen = append(v.seen, err.Error())
				v.mu.Unlock()
				select {
				case v.more <- struct{}{}:
				default:
				}
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, v
}

// refused waits until the server has reported a violation on subject.
func (v *violations) refused(t *testing.T, what, subject string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		v.mu.Lock()
		found := slices.ContainsFunc(v.seen, func(s string) bool { return strings.Contains(s, `"`+subject+`"`) })
		v.mu.Unlock()
		if found {
			return
		}
		select {
		case <-v.more:
		case <-deadline:
			t.Errorf("%s: no permission violation for %s", what, subject)
			return
		}
	}
}

// TestDeployNATSUsersEndToEnd runs each shipped cluster node's users and
// rights with timbus serve logged in as timbus: a decider logged in as
// decider decides a callback, an auditor reads its audit record live and
// from the stream, and neither an anonymous client nor the decider can do
// more than that.
func TestDeployNATSUsersEndToEnd(t *testing.T) {
	for _, file := range clusterConfs(t) {
		t.Run(filepath.ToSlash(file), func(t *testing.T) {
			clearEnv(t)
			prefix := "timbus"
			if strings.Contains(filepath.ToSlash(file), "/supercluster/") {
				// The prefix of the region's bridges (timbus-sg.yaml, ...).
				prefix = "timbus." + strings.TrimSuffix(filepath.Base(file), ".conf")
			}
			ns := startDeployNode(t, file)
			url := ns.ClientURL()

			nc, err := nats.Connect(url, nats.MaxReconnects(0))
			if err == nil {
				nc.Close()
				t.Fatal("an anonymous client connected")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Errorf("anonymous client: %v, want an authorization violation", err)
			}
			if nc, err := nats.Connect(url, nats.UserInfo("decider", natsSecrets["AUDITOR_PASSWORD"]), nats.MaxReconnects(0)); err == nil {
				nc.Close()
				t.Error("the decider logged in with another user's password")
			}

			const verdict = `{"ActionStatus":"OK","ErrorCode":120005,"ErrorInfo":"reserved"}`
			decider, deciderViolations := connectDeployUser(t, url, "decider", natsSecrets["DECIDER_PASSWORD"])
			if _, err := decider.QueueSubscribe(prefix+".decide.>", "deciders", func(m *nats.Msg) { _ = m.Respond([]byte(verdict)) }); err != nil {
				t.Fatal(err)
			}
			if err := decider.Flush(); err != nil {
				t.Fatal(err)
			}
			auditor, _ := connectDeployUser(t, url, "auditor", natsSecrets["AUDITOR_PASSWORD"])
			live, err := auditor.SubscribeSync(prefix + ".audit.>")
			if err != nil {
				t.Fatal(err)
			}
			forged, err := auditor.SubscribeSync(prefix + ".*.forged.>")
			if err != nil {
				t.Fatal(err)
			}
			if err := auditor.Flush(); err != nil {
				t.Fatal(err)
			}

			// The password comes from the environment, as in the deployments.
			t.Setenv(envName("nats-password"), natsSecrets["TIMBUS_NATS_PASSWORD"])
			s := startServe(t, "--listen", "127.0.0.1:0", "--sdkappid", testApp, "--nats-url", url, "--nats-user", "timbus",
				"--subject-prefix", prefix, "--audit-stream", "TIMBUS_AUDIT")
			status, answer := postCallback(t, s.bridge.Addr(), testApp, createAccount, string(sampleBody(t, createAccount)))
			if status != 200 || answer != verdict {
				t.Fatalf("callback answered %d %s, want the decider's %s", status, answer, verdict)
			}

			m, err := live.NextMsg(5 * time.Second)
			if err != nil || !strings.Contains(string(m.Data), createAccount) {
				t.Fatalf("auditor, live: no audit record (%v)", err)
			}
			js, err := jetstream.New(auditor)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cons, err := js.OrderedConsumer(ctx, "TIMBUS_AUDIT", jetstream.OrderedConsumerConfig{})
			if err != nil {
				t.Fatalf("auditor: open the audit stream: %v", err)
			}
			batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatalf("auditor: read the audit stream: %v", err)
			}
			got := 0
			for m := range batch.Messages() {
				got++
				if !strings.Contains(string(m.Data()), createAccount) {
					t.Errorf("auditor: stored record %s", m.Data())
				}
			}
			if got == 0 {
				t.Errorf("auditor: no record in the stream (%v)", batch.Error())
			}

			for _, subject := range []string{prefix + ".event.forged." + testApp, prefix + ".audit.forged." + testApp} {
				if err := decider.Publish(subject, []byte(verdict)); err != nil {
					t.Fatal(err)
				}
				deciderViolations.refused(t, "decider publish", subject)
			}
			if err := auditor.Flush(); err != nil {
				t.Fatal(err)
			}
			if m, err := forged.NextMsg(0); err == nil {
				t.Errorf("the decider's forged message got through on %s", m.Subject)
			}
		})
	}
}

// composeInterpolate expands ${NAME}, ${NAME:-default} and ${NAME:?error}
// in a compose value as compose would, with the test secrets as the .env
// file.
func composeInterpolate(v string) string {
	return regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}`).ReplaceAllStringFunc(v, func(ref string) string {
		m := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}`).FindStringSubmatch(ref)
		if secret, ok := natsSecrets[m[1]]; ok {
			return secret
		}
		if m[2] == "-" {
			return m[3]
		}
		return ""
	})
}

// checkNATSValuesSecrets: every $NAME the NATS Helm values put in the
// server's config (<< $NAME >>) is an environment variable of the NATS
// container, taken from Secret timbus or built from such variables; and
// they cover every secret the cluster configs of deploy/nats read.
func checkNATSValuesSecrets(t *testing.T, secret manifest) {
	t.Helper()
	raw := string(readDeployFile(t, "kubernetes", "nats-values.yaml"))
	var values struct {
		Container struct {
			Env map[string]yaml.Node `yaml:"env"`
		} `yaml:"container"`
	}
	if err := yamlDocs(t, deployPath("kubernetes", "nats-values.yaml"))[0].Decode(&values); err != nil {
		t.Fatal(err)
	}
	fromSecret := map[string]bool{}
	names := slices.Sorted(maps.Keys(values.Container.Env))
	for i, name := range names {
		n := values.Container.Env[name]
		if n.Kind == yaml.ScalarNode {
			// $(NAME) expands only names defined before it; the chart
			// lists them in name order.
			for _, m := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(n.Value, -1) {
				if !slices.Contains(names[:i], m[1]) {
					t.Errorf("nats-values.yaml: env %s uses $(%s), not defined before it", name, m[1])
				}
			}
			continue
		}
		var ref struct {
			ValueFrom struct {
				SecretKeyRef struct{ Name, Key string } `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		}
		if err := n.Decode(&ref); err != nil {
			t.Fatalf("nats-values.yaml: env %s: %v", name, err)
		}
		if r := ref.ValueFrom.SecretKeyRef; r.Name != "timbus" || secret.StringData[r.Key] == "" {
			t.Errorf("nats-values.yaml: env %s: from %+v, want a key of Secret timbus", name, r)
		}
		fromSecret[name] = true
	}
	uncommented := regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(raw, "")
	used := regexp.MustCompile(`<< \$([A-Za-z_][A-Za-z0-9_]*) >>`).FindAllStringSubmatch(uncommented, -1)
	if len(used) == 0 {
		t.Error("nats-values.yaml: no password from the environment")
	}
	for _, m := range used {
		if _, ok := values.Container.Env[m[1]]; !ok {
			t.Errorf("nats-values.yaml uses $%s, which the NATS container's env lacks", m[1])
		}
	}
	for _, name := range confVariables(t, deployPath("nats", "nats-1.conf")) {
		if !strings.HasPrefix(name, "NATS_ROUTE_") && !fromSecret[name] {
			t.Errorf("deploy/nats/nats-1.conf reads $%s; the NATS pods do not get it from the Secret", name)
		}
	}
	for _, user := range []string{"timbus", "decider", "auditor"} {
		if !strings.Contains(raw, "- user: "+user+"\n") {
			t.Errorf("nats-values.yaml: no user %s", user)
		}
	}
}
