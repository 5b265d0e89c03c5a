// Package kubernetes_test checks the Kubernetes manifests in this folder
// without a cluster or a network: each manifest is decoded strictly into the
// Kubernetes API's own Go types (k8s.io/api, and the Prometheus operator's
// types for the ServiceMonitor), so an unknown or misspelt field is an
// error; the references between them are checked (the ConfigMap and Secret
// the DaemonSet mounts, the Service's selector and ports, the probes' ports);
// and the ConfigMap's config goes through the daemon's own parser and
// `pool-managerd -check-config`.
package kubernetes_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/pool-managerd/pool-managerd/config"
)

// kinds maps apiVersion/kind to the Go type a manifest must decode into.
var kinds = map[string]func() any{
	"v1/Namespace":                       func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":                       func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                          func() any { return &corev1.Secret{} },
	"v1/Service":                         func() any { return &corev1.Service{} },
	"apps/v1/DaemonSet":                  func() any { return &appsv1.DaemonSet{} },
	"networking.k8s.io/v1/NetworkPolicy": func() any { return &networkingv1.NetworkPolicy{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
}

// kustomization is the part of kustomize's Kustomization this folder uses,
// decoded strictly too: a field outside it fails the test, so that one added
// to kustomization.yaml gets a look here (kustomize's own types are a large
// module; `kubectl kustomize`, when installed, checks the whole file below).
type kustomization struct {
	APIVersion      string   `json:"apiVersion"`
	Kind            string   `json:"kind"`
	Namespace       string   `json:"namespace"`
	Resources       []string `json:"resources"`
	SecretGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"secretGenerator"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// manifests is everything in the folder, decoded.
type manifests struct {
	kust       kustomization
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string][]string // name -> keys (Secret manifests and secretGenerator)
	ds         *appsv1.DaemonSet
	svc        *corev1.Service
	netpol     *networkingv1.NetworkPolicy
	sm         *monitoringv1.ServiceMonitor
	namespaces []string
}

// splitDocs splits a YAML stream on "---" lines, dropping empty documents.
func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(d, "")) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// decodeStrict decodes one manifest into the Go type its apiVersion and kind
// name, refusing unknown fields and duplicate keys.
func decodeStrict(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	mk, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("apiVersion %q kind %q: not a type this test knows; add it to kinds", tm.APIVersion, tm.Kind)
	}
	obj := mk()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, nil
}

// load decodes every manifest that kustomization.yaml lists from dir, after
// checking that it lists exactly the YAML files there.
func load(t *testing.T, dir string) *manifests {
	t.Helper()
	m := &manifests{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string][]string{}}
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &m.kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	var onDisk []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			onDisk = append(onDisk, b)
		}
	}
	listed := slices.Clone(m.kust.Resources)
	sort.Strings(listed)
	if !slices.Equal(listed, onDisk) {
		t.Fatalf("kustomization.yaml resources %v, but the folder holds %v", listed, onDisk)
	}
	for _, g := range m.kust.SecretGenerator {
		for _, f := range g.Files {
			key, _, _ := strings.Cut(f, "=") // "key=path" or "path"
			m.secrets[g.Name] = append(m.secrets[g.Name], path.Base(key))
		}
	}
	for _, f := range m.kust.Resources {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		docs := splitDocs(data)
		if len(docs) == 0 {
			t.Fatalf("%s: no manifest", f)
		}
		for _, doc := range docs {
			obj, err := decodeStrict(doc)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			m.add(t, f, obj)
		}
	}
	return m
}

func (m *manifests) add(t *testing.T, file string, obj any) {
	t.Helper()
	one := func(have bool) {
		if have {
			t.Fatalf("%s: a second %T; the checks here assume one", file, obj)
		}
	}
	switch o := obj.(type) {
	case *corev1.Namespace:
		m.namespaces = append(m.namespaces, o.Name)
	case *corev1.ConfigMap:
		m.configMaps[o.Name] = o
	case *corev1.Secret:
		for k := range o.Data {
			m.secrets[o.Name] = append(m.secrets[o.Name], k)
		}
		for k := range o.StringData {
			m.secrets[o.Name] = append(m.secrets[o.Name], k)
		}
	case *appsv1.DaemonSet:
		one(m.ds != nil)
		m.ds = o
	case *corev1.Service:
		one(m.svc != nil)
		m.svc = o
	case *networkingv1.NetworkPolicy:
		one(m.netpol != nil)
		m.netpol = o
	case *monitoringv1.ServiceMonitor:
		one(m.sm != nil)
		m.sm = o
	}
}

// daemon is the DaemonSet's pool-managerd container and the config it runs.
type daemon struct {
	pod       *corev1.PodSpec
	c         *corev1.Container
	cfgText   string
	cfg       *config.Config
	apiPort   int32
	gpus      int64
	mountedAt map[string]corev1.Volume // mount path -> volume
}

func (m *manifests) daemon(t *testing.T) *daemon {
	t.Helper()
	if m.ds == nil {
		t.Fatal("no DaemonSet")
	}
	d := &daemon{pod: &m.ds.Spec.Template.Spec, mountedAt: map[string]corev1.Volume{}}
	for i := range d.pod.Containers {
		if d.pod.Containers[i].Name == "pool-managerd" {
			d.c = &d.pod.Containers[i]
		}
	}
	if d.c == nil {
		t.Fatal("DaemonSet has no container named pool-managerd")
	}
	vols := map[string]corev1.Volume{}
	for _, v := range d.pod.Volumes {
		vols[v.Name] = v
	}
	for _, vm := range d.c.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok {
			t.Fatalf("volumeMount %q names no volume of the pod", vm.Name)
		}
		d.mountedAt[vm.MountPath] = v
	}
	// The config file: -config PATH in the command, on a ConfigMap mount.
	args := append(slices.Clone(d.c.Command), d.c.Args...)
	i := slices.Index(args, "-config")
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("container command %q has no -config FILE", args)
	}
	v, key := d.volumeFor(t, args[i+1])
	if v.ConfigMap == nil {
		t.Fatalf("-config %s is on volume %q, not a ConfigMap", args[i+1], v.Name)
	}
	cm, ok := m.configMaps[v.ConfigMap.Name]
	if !ok {
		t.Fatalf("volume %q mounts ConfigMap %q, which no manifest defines", v.Name, v.ConfigMap.Name)
	}
	if d.cfgText, ok = cm.Data[key]; !ok {
		t.Fatalf("-config %s: ConfigMap %q has no key %q", args[i+1], cm.Name, key)
	}
	cfg, err := config.Parse([]byte(d.cfgText), "configmap.yaml:"+key)
	if err != nil {
		t.Fatalf("the ConfigMap's config does not parse:\n%v", err)
	}
	d.cfg = cfg
	// The API port from listen.
	_, port, _ := strings.Cut(cfg.Listen, ":")
	if strings.HasPrefix(cfg.Listen, "unix:") {
		t.Fatalf("listen %q: a unix socket cannot be probed or scraped from outside the pod", cfg.Listen)
	}
	p, err := strconv.Atoi(port[strings.LastIndex(port, ":")+1:])
	if err != nil || p == 0 {
		t.Fatalf("listen %q: want a fixed port", cfg.Listen)
	}
	d.apiPort = int32(p)
	q := d.c.Resources.Limits[corev1.ResourceName("nvidia.com/gpu")]
	d.gpus = q.Value()
	return d
}

// volumeFor finds the volume mounted at a directory holding file, and the
// file's name in it (a ConfigMap or Secret key).
func (d *daemon) volumeFor(t *testing.T, file string) (corev1.Volume, string) {
	t.Helper()
	dir, key := path.Split(file)
	v, ok := d.mountedAt[strings.TrimSuffix(dir, "/")]
	if !ok {
		t.Fatalf("%s: no volume is mounted at %s (a subPath mount would not see ConfigMap or Secret updates)", file, dir)
	}
	return v, key
}

// portNumber resolves a probe's or Service's port against the container.
func (d *daemon) portNumber(t *testing.T, what string, p intstr.IntOrString) int32 {
	t.Helper()
	for _, cp := range d.c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort
		}
	}
	t.Fatalf("%s: port %s is not a port of the container", what, p.String())
	return 0
}

func TestManifestsDecodeStrictly(t *testing.T) {
	m := load(t, ".")
	if m.ds == nil || m.svc == nil || len(m.configMaps) == 0 || len(m.secrets) == 0 {
		t.Fatalf("want a DaemonSet, a Service, a ConfigMap and a Secret; have %+v", m)
	}
	if !slices.Contains(m.namespaces, m.kust.Namespace) {
		t.Errorf("kustomization namespace %q: no Namespace manifest creates it (have %v)", m.kust.Namespace, m.namespaces)
	}
}

// TestStrictDecodingRefusesUnknownFields shows the decoding above is strict:
// a misspelt field, a field at the wrong level and a duplicate key all fail.
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	ds, err := os.ReadFile("daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]string{
		"misspelt field": strings.Replace(string(ds), "runtimeClassName:", "runtimeClass:", 1),
		"wrong level":    strings.Replace(string(ds), "      terminationGracePeriodSeconds:", "      template2: {}\n      terminationGracePeriodSeconds:", 1),
		"duplicate key":  strings.Replace(string(ds), "      runtimeClassName: nvidia\n", "      runtimeClassName: nvidia\n      runtimeClassName: nvidia\n", 1),
		"unknown kind":   strings.Replace(string(ds), "kind: DaemonSet", "kind: DaemonSett", 1),
		"wrong type":     strings.Replace(string(ds), "terminationGracePeriodSeconds: 120", "terminationGracePeriodSeconds: two minutes", 1),
	} {
		if bad == string(ds) {
			t.Fatalf("%s: the replacement did not apply; update the test", name)
		}
		if _, err := decodeStrict([]byte(bad)); err == nil {
			t.Errorf("%s: decoded without an error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestDaemonSetRunsOnGPUNodes(t *testing.T) {
	m := load(t, ".")
	d := m.daemon(t)
	if d.pod.RuntimeClassName == nil || *d.pod.RuntimeClassName != "nvidia" {
		t.Errorf("runtimeClassName = %v, want nvidia", d.pod.RuntimeClassName)
	}
	if d.pod.NodeSelector["nvidia.com/gpu.present"] != "true" {
		t.Errorf("nodeSelector %v does not pick GPU nodes (nvidia.com/gpu.present: \"true\")", d.pod.NodeSelector)
	}
	if d.gpus < 1 {
		t.Fatalf("the container requests no nvidia.com/gpu: %v", d.c.Resources.Limits)
	}
	// All the node's GPUs: the selected nodes have exactly as many.
	if got := d.pod.NodeSelector["nvidia.com/gpu.count"]; got != strconv.FormatInt(d.gpus, 10) {
		t.Errorf("nodeSelector nvidia.com/gpu.count = %q, want %d (the GPUs the pod requests: all of the node's)", got, d.gpus)
	}
	// Every device a pool names is one of the pod's GPUs (numbered from 0).
	for _, p := range d.cfg.Pools {
		if len(p.Devices) == 0 {
			t.Errorf("pool %s: no devices; every pool on a GPU node should name its GPUs", p.ID)
		}
		for _, dev := range p.Devices {
			n, err := strconv.Atoi(dev)
			if err != nil || n < 0 || int64(n) >= d.gpus {
				t.Errorf("pool %s: device %q is not one of the pod's GPUs 0..%d", p.ID, dev, d.gpus-1)
			}
		}
	}
	if !d.cfg.GPU.RequireNVIDIA {
		t.Error("gpu.require_nvidia is off on a GPU node")
	}
	ok := false
	for _, tol := range d.pod.Tolerations {
		ok = ok || tol.Key == "nvidia.com/gpu"
	}
	if !ok {
		t.Error("no toleration for the nvidia.com/gpu taint GPU nodes usually carry")
	}
}

func TestDaemonSetMountsWhatExists(t *testing.T) {
	m := load(t, ".")
	d := m.daemon(t)
	for _, v := range d.pod.Volumes {
		switch {
		case v.ConfigMap != nil:
			if _, ok := m.configMaps[v.ConfigMap.Name]; !ok {
				t.Errorf("volume %q: ConfigMap %q is not defined here", v.Name, v.ConfigMap.Name)
			}
		case v.Secret != nil:
			if _, ok := m.secrets[v.Secret.SecretName]; !ok {
				t.Errorf("volume %q: Secret %q is neither a manifest nor a secretGenerator here", v.Name, v.Secret.SecretName)
			}
		}
	}
	// The token: listen is not loopback, so the daemon needs one; it must come
	// from the Secret (its file on the Secret's mount, or the env variable).
	if config.IsLoopback(d.cfg.Listen) {
		t.Fatalf("listen %q is loopback: the kubelet, Prometheus and orchestratord could not reach the API", d.cfg.Listen)
	}
	fromEnv := false
	for _, e := range d.c.Env {
		if e.Name == "POOL_MANAGERD_TOKEN" {
			if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				t.Fatal("POOL_MANAGERD_TOKEN must come from a Secret (valueFrom.secretKeyRef), never a literal")
			}
			ref := e.ValueFrom.SecretKeyRef
			if !slices.Contains(m.secrets[ref.Name], ref.Key) {
				t.Errorf("POOL_MANAGERD_TOKEN: Secret %q has no key %q", ref.Name, ref.Key)
			}
			fromEnv = true
		}
	}
	if !fromEnv {
		if d.cfg.Auth.TokenFile == "" {
			t.Fatal("no token: neither auth.token_file nor POOL_MANAGERD_TOKEN")
		}
		v, key := d.volumeFor(t, d.cfg.Auth.TokenFile)
		if v.Secret == nil {
			t.Fatalf("auth.token_file %s is on volume %q, not a Secret", d.cfg.Auth.TokenFile, v.Name)
		}
		if !slices.Contains(m.secrets[v.Secret.SecretName], key) {
			t.Errorf("auth.token_file %s: Secret %q has no key %q (has %v)", d.cfg.Auth.TokenFile, v.Secret.SecretName, key, m.secrets[v.Secret.SecretName])
		}
		if mode := v.Secret.DefaultMode; mode == nil || *mode&0o007 != 0 {
			t.Errorf("token volume defaultMode %v: others must not read the token", mode)
		}
	}
	// state_dir is writable storage, not the read-only root: a directory
	// the daemon creates inside an emptyDir. Not the mount point itself,
	// which is root's and mode 0777: the daemon refuses a state_dir others
	// may write (they could plant a pid record for it to kill).
	if d.cfg.StateDir != "" {
		if _, ok := d.mountedAt[d.cfg.StateDir]; ok {
			t.Errorf("state_dir %s is a volume's mount point (root's, mode 0777); use a directory inside it", d.cfg.StateDir)
		}
		if v, ok := d.mountedAt[path.Dir(d.cfg.StateDir)]; !ok || v.EmptyDir == nil {
			t.Errorf("state_dir %s is not a directory of an emptyDir mount", d.cfg.StateDir)
		}
	}
}

func TestProbesAndPorts(t *testing.T) {
	m := load(t, ".")
	d := m.daemon(t)
	for _, pr := range []struct {
		name string
		p    *corev1.Probe
		path string
	}{{"livenessProbe", d.c.LivenessProbe, "/healthz"}, {"readinessProbe", d.c.ReadinessProbe, "/readyz"}} {
		if pr.p == nil || pr.p.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe on %s", pr.name, pr.path)
			continue
		}
		if pr.p.HTTPGet.Path != pr.path {
			t.Errorf("%s path = %q, want %q", pr.name, pr.p.HTTPGet.Path, pr.path)
		}
		if got := d.portNumber(t, pr.name, pr.p.HTTPGet.Port); got != d.apiPort {
			t.Errorf("%s port %d, but the daemon listens on %d (%s)", pr.name, got, d.apiPort, d.cfg.Listen)
		}
	}
	// Every fixed engine port is a container port, and the network policy
	// lets clients reach it.
	policyPorts := map[int32]bool{}
	if m.netpol != nil {
		if !matches(m.netpol.Spec.PodSelector.MatchLabels, m.ds.Spec.Template.Labels) {
			t.Errorf("NetworkPolicy podSelector %v does not select the daemon's pods %v", m.netpol.Spec.PodSelector.MatchLabels, m.ds.Spec.Template.Labels)
		}
		for _, in := range m.netpol.Spec.Ingress {
			for _, p := range in.Ports {
				policyPorts[p.Port.IntVal] = true
			}
		}
		if !policyPorts[d.apiPort] {
			t.Errorf("NetworkPolicy does not admit the API port %d", d.apiPort)
		}
	}
	for _, p := range d.cfg.Pools {
		if p.Port == 0 {
			continue
		}
		d.portNumber(t, "pool "+p.ID, intstr.FromInt32(int32(p.Port)))
		if m.netpol != nil && !policyPorts[int32(p.Port)] {
			t.Errorf("pool %s: NetworkPolicy does not admit its port %d", p.ID, p.Port)
		}
	}
	// Prometheus annotations name the API port.
	ann := m.ds.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" || ann["prometheus.io/port"] != strconv.Itoa(int(d.apiPort)) {
		t.Errorf("prometheus.io annotations %v: want scrape true, path /metrics, port %d", ann, d.apiPort)
	}
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestServiceAndMonitorSelectTheDaemon(t *testing.T) {
	m := load(t, ".")
	d := m.daemon(t)
	labels := m.ds.Spec.Template.Labels
	if !matches(m.ds.Spec.Selector.MatchLabels, labels) {
		t.Errorf("DaemonSet selector %v does not match its pod labels %v", m.ds.Spec.Selector.MatchLabels, labels)
	}
	if !matches(m.svc.Spec.Selector, labels) {
		t.Errorf("Service selector %v does not match the pod labels %v", m.svc.Spec.Selector, labels)
	}
	if m.svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service clusterIP %q: want None (headless), so each daemon is reached on its own", m.svc.Spec.ClusterIP)
	}
	svcPorts := map[string]bool{}
	for _, p := range m.svc.Spec.Ports {
		svcPorts[p.Name] = true
		if got := d.portNumber(t, "Service port "+p.Name, p.TargetPort); got != d.apiPort {
			t.Errorf("Service port %s targets %d, the API is on %d", p.Name, got, d.apiPort)
		}
	}
	if m.sm != nil {
		if !matches(m.sm.Spec.Selector.MatchLabels, m.svc.Labels) {
			t.Errorf("ServiceMonitor selector %v does not match the Service's labels %v", m.sm.Spec.Selector.MatchLabels, m.svc.Labels)
		}
		for _, e := range m.sm.Spec.Endpoints {
			if !svcPorts[e.Port] {
				t.Errorf("ServiceMonitor endpoint port %q is not a Service port", e.Port)
			}
			if e.Path != "/metrics" {
				t.Errorf("ServiceMonitor endpoint path %q, want /metrics", e.Path)
			}
		}
	}
}

// TestGracePeriodCoversTheDrain: the kubelet must not SIGKILL the daemon while
// it drains (shutdown_deadline) and then stops engines (stop_grace).
func TestGracePeriodCoversTheDrain(t *testing.T) {
	m := load(t, ".")
	d := m.daemon(t)
	var grace time.Duration
	for _, p := range d.cfg.Pools {
		grace = max(grace, p.StopGrace)
	}
	need := d.cfg.ShutdownDeadline + grace
	tg := d.pod.TerminationGracePeriodSeconds
	if tg == nil {
		t.Fatalf("no terminationGracePeriodSeconds (the default 30 s), want more than shutdown_deadline + stop_grace = %v", need)
	}
	if time.Duration(*tg)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %d, want more than shutdown_deadline + stop_grace = %v", *tg, need)
	}
}

// repoRoot is two levels up from this folder.
func repoRoot(t *testing.T) string {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

// TestConfigPassesCheckConfig runs the real `pool-managerd -check-config` on
// the ConfigMap's config: exit 0 with a token (warnings about this host, e.g.
// no vllm binary here, keep exit 0), exit 2 without one, since it listens on
// every interface.
func TestConfigPassesCheckConfig(t *testing.T) {
	m := load(t, ".")
	d := m.daemon(t)
	gobin, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
	if err != nil {
		t.Skip("no go command to build pool-managerd with")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "pool-managerd")
	build := exec.Command(gobin, "build", "-o", bin, "./cmd/pool-managerd")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	file := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(file, []byte(d.cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(env ...string) (int, string) {
		cmd := exec.Command(bin, "-check-config", file)
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(s string) bool {
			return strings.HasPrefix(s, "POOL_MANAGERD_")
		}), env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err != nil && cmd.ProcessState == nil {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), out.String()
	}
	if code, out := run("POOL_MANAGERD_TOKEN=a-token"); code != 0 || !strings.Contains(out, ": ok") {
		t.Errorf("-check-config with a token: exit %d, want 0 and ok\n%s", code, out)
	} else {
		t.Logf("with a token:\n%s", out)
	}
	// Without one the token file (the Secret's, absent here) is missing.
	if code, out := run(); code != 2 || !strings.Contains(out, "auth.token_file") {
		t.Errorf("-check-config without a token: exit %d, want 2 naming auth.token_file\n%s", code, out)
	}
}

// TestKustomizeBuild renders the folder with `kubectl kustomize` (offline),
// when kubectl is installed, and decodes every rendered object strictly: the
// generated Secret exists and the DaemonSet's reference follows its name.
func TestKustomizeBuild(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed; the checks above cover the files one by one")
	}
	dir := t.TempDir()
	files, _ := filepath.Glob("*.yaml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("test-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kubectl, "kustomize", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, stderr.String())
	}
	m := &manifests{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string][]string{}}
	for _, doc := range splitDocs(out) {
		obj, err := decodeStrict(doc)
		if err != nil {
			t.Fatalf("rendered: %v", err)
		}
		m.add(t, "rendered", obj)
	}
	d := m.daemon(t)
	for _, v := range d.pod.Volumes {
		if v.Secret != nil && !slices.Contains(m.secrets[v.Secret.SecretName], "token") {
			t.Errorf("rendered volume %q names Secret %q, which the render lacks (has %v)", v.Name, v.Secret.SecretName, m.secrets)
		}
	}
	if want := load(t, ".").kust.Namespace; m.ds.Namespace != want || m.svc.Namespace != want {
		t.Errorf("rendered DaemonSet in %q, Service in %q; want both in %q", m.ds.Namespace, m.svc.Namespace, want)
	}
}
