// Package deploy_test checks that the Grafana dashboard, the Prometheus
// alerting rules and their promtool tests reference only metrics (and
// labels) the daemon exports. The metric set is not a list kept by hand: it
// is read from a real supervisor.Metrics registry, fed one event of each
// kind and a pool with a GPU so that every labelled family has a series.
package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/yaml"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/gpu"
	"github.com/pool-managerd/pool-managerd/supervisor"
)

// family is one metric family the daemon exports.
type family struct {
	typ    dto.MetricType
	typed  bool            // typ is known (the family was gathered, not only described)
	labels map[string]bool // its variable labels
}

// targetLabels are added by Prometheus to every series of a target (job,
// instance), by the ServiceMonitor's relabeling (node), or are a histogram's
// bucket bound (le, checked per series below).
var targetLabels = []string{"job", "instance", "node"}

// synthetic series Prometheus makes for every target.
var synthetic = map[string]bool{"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true}

var descRE = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

// daemonMetrics builds the daemon's metrics registry and returns its
// families. Describe gives every family, labelled or not; Gather, after one
// event of each kind, gives their types.
func daemonMetrics(t *testing.T) map[string]family {
	t.Helper()
	pool := actors.PoolStatus{PoolID: "p", State: actors.StateReady, Ready: true, Engine: "vllm", EngineVersion: "1",
		ActiveLeases: 1, Devices: []gpu.Device{{Index: 0, UUID: "GPU-1", MemoryFreeBytes: 1 << 30}}}
	m := supervisor.NewMetrics(func(context.Context) ([]actors.PoolStatus, error) {
		return []actors.PoolStatus{pool}, nil
	})
	m.Restart("p", "exit")
	m.Preload("p", "ready", time.Second)
	m.Drain("p", false, time.Second)
	m.Reload("p", "succeeded")
	m.Probe("p", "liveness", time.Millisecond)
	m.XID("GPU-1", 79)
	m.LogDropped("p", 1, 100)
	m.ObserveAPI("GET /v1/pools", 200, time.Millisecond)

	fams := map[string]family{}
	ch := make(chan *prometheus.Desc, 64)
	go func() { m.Registry.Describe(ch); close(ch) }()
	for d := range ch {
		sm := descRE.FindStringSubmatch(d.String())
		if sm == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		f := family{labels: map[string]bool{}}
		for _, l := range strings.Split(sm[2], ",") {
			if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
				f.labels[l] = true
			}
		}
		fams[sm[1]] = f
	}
	gathered, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range gathered {
		f, ok := fams[mf.GetName()]
		if !ok { // the Go collector describes some families under other names
			f = family{labels: map[string]bool{}}
		}
		f.typ, f.typed = mf.GetType(), true
		for _, s := range mf.GetMetric() {
			for _, lp := range s.GetLabel() {
				f.labels[lp.GetName()] = true
			}
		}
		fams[mf.GetName()] = f
	}
	for _, want := range []string{"pool_managerd_pool_state", "pool_managerd_restarts_total", "pool_managerd_preload_duration_seconds", "process_start_time_seconds"} {
		if !fams[want].typed {
			t.Fatalf("the daemon's registry did not gather %s (have %d families)", want, len(fams))
		}
	}
	return fams
}

// series resolves a series name to its family: histograms and summaries
// export name_bucket (histograms), name_sum and name_count.
func series(fams map[string]family, name string) (family, bool) {
	if f, ok := fams[name]; ok && (!f.typed || (f.typ != dto.MetricType_HISTOGRAM && f.typ != dto.MetricType_SUMMARY)) {
		return f, true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suf)
		if !ok {
			continue
		}
		f, ok := fams[base]
		switch {
		case !ok || !f.typed:
		case f.typ == dto.MetricType_HISTOGRAM:
			g := family{typ: f.typ, typed: true, labels: maps(f.labels)}
			if suf == "_bucket" {
				g.labels["le"] = true
			}
			return g, true
		case f.typ == dto.MetricType_SUMMARY && suf != "_bucket":
			return f, true
		}
	}
	return family{}, false
}

func maps(m map[string]bool) map[string]bool {
	out := map[string]bool{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// ref is one metric a PromQL expression uses, with the labels it matches on.
type ref struct {
	name   string
	labels []string
}

// promql keywords that look like identifiers.
var keywords = map[string]bool{"and": true, "or": true, "unless": true, "offset": true, "bool": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true, "atan2": true}

// aggregations may be followed by a grouping clause before their "(".
var aggregations = map[string]bool{"sum": true, "min": true, "max": true, "avg": true, "group": true,
	"stddev": true, "stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true,
	"quantile": true, "limitk": true, "limit_ratio": true}

// grouping keywords are followed by a parenthesized label list.
var grouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// parseExpr lists the metric names in a PromQL expression (with the label
// names of their matchers) and the label names of its grouping clauses. It
// is a tokenizer, not a parser: strings, numbers, durations and Grafana
// variables are skipped, an identifier before "(" is a function, one inside
// "{...}" or a grouping list is a label, any other is a metric name.
func parseExpr(expr string) (refs []ref, grouped []string, err error) {
	s := expr
	i := 0
	ident := func() string {
		j := i
		for j < len(s) && (s[j] == '_' || s[j] == ':' || isAlnum(s[j])) {
			j++
		}
		id := s[i:j]
		i = j
		return id
	}
	skipSpace := func() {
		for i < len(s) && strings.ContainsRune(" \t\n\r", rune(s[i])) {
			i++
		}
	}
	skipString := func() error {
		q := s[i]
		for i++; i < len(s); i++ {
			if s[i] == '\\' && q != '`' {
				i++
				continue
			}
			if s[i] == q {
				i++
				return nil
			}
		}
		return fmt.Errorf("unterminated string in %q", expr)
	}
	// labelList reads "a, b" up to the closing ')' or, in matchers, the
	// names before each operator up to '}'.
	matchers := func() ([]string, error) {
		var names []string
		for i < len(s) {
			skipSpace()
			switch c := s[i]; {
			case c == '}':
				i++
				return names, nil
			case c == ',':
				i++
			case c == '"' || c == '\'' || c == '`':
				if err := skipString(); err != nil {
					return nil, err
				}
			case c == '=' || c == '!' || c == '~':
				i++
			case c == '_' || isAlpha(c):
				names = append(names, ident())
			default:
				return nil, fmt.Errorf("unexpected %q in label matchers of %q", c, expr)
			}
		}
		return nil, fmt.Errorf("unterminated {} in %q", expr)
	}
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(); err != nil {
				return nil, nil, err
			}
		case c == '$': // a Grafana variable: $name, ${name}, $__rate_interval
			i++
			if i < len(s) && s[i] == '{' {
				for i < len(s) && s[i] != '}' {
					i++
				}
				i++
			} else {
				ident()
			}
		case c == '[': // a range or subquery: durations only
			for i < len(s) && s[i] != ']' {
				if s[i] == '$' {
					i++
					ident()
					continue
				}
				i++
			}
			i++
		case isDigit(c) || (c == '.' && i+1 < len(s) && isDigit(s[i+1])):
			for i < len(s) && (isAlnum(s[i]) || s[i] == '.' || s[i] == '_') {
				i++
			}
		case c == '_' || c == ':' || isAlpha(c):
			id := ident()
			skipSpace()
			switch {
			case grouping[id]:
				if i >= len(s) || s[i] != '(' {
					if id == "group_left" || id == "group_right" {
						continue
					}
					return nil, nil, fmt.Errorf("%s without a label list in %q", id, expr)
				}
				end := strings.IndexByte(s[i:], ')')
				if end < 0 {
					return nil, nil, fmt.Errorf("unterminated %s ( in %q", id, expr)
				}
				for _, l := range strings.Split(s[i+1:i+end], ",") {
					if l = strings.TrimSpace(l); l != "" {
						grouped = append(grouped, l)
					}
				}
				i += end + 1
			case keywords[strings.ToLower(id)], aggregations[id]:
			case i < len(s) && s[i] == '(': // a function or an aggregation
			default:
				r := ref{name: id}
				if i < len(s) && s[i] == '{' {
					i++
					if r.labels, err = matchers(); err != nil {
						return nil, nil, err
					}
				}
				refs = append(refs, r)
			}
		case c == '{': // a selector without a name: {__name__=...}
			return nil, nil, fmt.Errorf("a selector without a metric name in %q: name the metric", expr)
		default:
			i++
		}
	}
	return refs, grouped, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }
func isAlnum(c byte) bool { return isDigit(c) || isAlpha(c) }

// checkExpr reports every metric or label in expr the daemon does not export.
func checkExpr(fams map[string]family, where, expr string) []string {
	refs, grouped, err := parseExpr(expr)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", where, err)}
	}
	var probs []string
	known := map[string]bool{"le": true}
	for _, l := range targetLabels {
		known[l] = true
	}
	for _, r := range refs {
		if synthetic[r.name] {
			continue
		}
		f, ok := series(fams, r.name)
		if !ok {
			probs = append(probs, fmt.Sprintf("%s: metric %s is not exported by the daemon", where, r.name))
			continue
		}
		for l := range f.labels {
			known[l] = true
		}
		for _, l := range r.labels {
			if !f.labels[l] && !slices.Contains(targetLabels, l) {
				probs = append(probs, fmt.Sprintf("%s: metric %s has no label %s (labels: %v)", where, r.name, l, keys(f.labels)))
			}
		}
	}
	for _, l := range grouped {
		if !known[l] {
			probs = append(probs, fmt.Sprintf("%s: grouping label %s is on none of the metrics it groups", where, l))
		}
	}
	return probs
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestParseExpr pins the tokenizer on the shapes the files use.
func TestParseExpr(t *testing.T) {
	refs, grouped, err := parseExpr(`sum by (job, instance) ((pool_managerd_restarts_total{reason="liveness", x=~"a|b"} unless pool_managerd_restarts_total offset 30m) and on (job) (up offset 30m or process_start_time_seconds > time() - 1800)) or increase(foo:bar[$__rate_interval]) > 3e2 and histogram_quantile(0.99, rate(h_bucket{instance=~"$instance"}[5m]))`)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(refs, grouped)
	want := `[{pool_managerd_restarts_total [reason x]} {pool_managerd_restarts_total []} {up []} {process_start_time_seconds []} {foo:bar []} {h_bucket [instance]}] [job instance job]`
	if got != want {
		t.Errorf("parseExpr:\n got %s\nwant %s", got, want)
	}
	fams := daemonMetrics(t)
	probs := checkExpr(fams, "x", `rate(pool_managerd_restart_total[5m]) + pool_managerd_pool_state{pool="a"} + pool_managerd_pool_state_bucket + sum by (reason) (pool_managerd_active_leases)`)
	wantProbs := []string{
		"x: metric pool_managerd_restart_total is not exported by the daemon",
		"x: metric pool_managerd_pool_state has no label pool (labels: [pool_id state])",
		"x: metric pool_managerd_pool_state_bucket is not exported by the daemon",
		"x: grouping label reason is on none of the metrics it groups",
	}
	if !slices.Equal(probs, wantProbs) {
		t.Errorf("checkExpr on bad names:\n got %q\nwant %q", probs, wantProbs)
	}
}

// TestDashboardMetricsExist: every query of the Grafana dashboard, panels and
// template variables, names only exported metrics and labels.
func TestDashboardMetricsExist(t *testing.T) {
	fams := daemonMetrics(t)
	raw, err := os.ReadFile("grafana/pool-managerd.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana/pool-managerd.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	var probs []string
	ids := map[int]bool{}
	vars := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
	labelValuesRE := regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
		if v.Type != "query" {
			continue
		}
		m := labelValuesRE.FindStringSubmatch(v.Definition)
		if m == nil {
			probs = append(probs, fmt.Sprintf("variable %s: want label_values(SELECTOR, LABEL), have %q", v.Name, v.Definition))
			continue
		}
		probs = append(probs, checkExpr(fams, "variable "+v.Name, fmt.Sprintf("sum by (%s) (%s)", m[2], m[1]))...)
	}
	queries := 0
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				probs = append(probs, fmt.Sprintf("panel id %d is used twice", p.ID))
			}
			ids[p.ID] = true
			if p.Type != "row" && len(p.Targets) == 0 {
				probs = append(probs, fmt.Sprintf("panel %q has no query", p.Title))
			}
			for _, tg := range p.Targets {
				queries++
				where := fmt.Sprintf("panel %q query %s", p.Title, tg.RefID)
				probs = append(probs, checkExpr(fams, where, tg.Expr)...)
				for _, v := range regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)`).FindAllStringSubmatch(tg.Expr, -1) {
					if !vars[v[1]] {
						probs = append(probs, fmt.Sprintf("%s: variable $%s is not defined", where, v[1]))
					}
				}
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, p := range probs {
		t.Error(p)
	}
	t.Logf("%d panels, %d queries checked against %d metric families", len(ids), queries, len(fams))
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// TestAlertRulesMetricsExist: every alert expression, and every input series
// of the promtool tests (a misspelt one would test nothing), names only
// exported metrics and labels.
func TestAlertRulesMetricsExist(t *testing.T) {
	fams := daemonMetrics(t)
	var rules struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Record      string            `json:"record"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	raw, err := os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &rules); err != nil {
		t.Fatalf("prometheus/alerts.yaml: %v", err)
	}
	var probs []string
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			probs = append(probs, checkExpr(fams, "alert "+r.Alert, r.Expr)...)
			if r.Labels["severity"] == "" {
				probs = append(probs, fmt.Sprintf("alert %s has no severity label", r.Alert))
			}
		}
	}
	var tests struct {
		Tests []struct {
			Name        string `json:"name"`
			InputSeries []struct {
				Series string `json:"series"`
			} `json:"input_series"`
		} `json:"tests"`
	}
	raw, err = os.ReadFile("prometheus/alerts_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &tests); err != nil {
		t.Fatalf("prometheus/alerts_test.yaml: %v", err)
	}
	inputs := 0
	for _, tc := range tests.Tests {
		for _, s := range tc.InputSeries {
			inputs++
			probs = append(probs, checkExpr(fams, "test "+tc.Name, s.Series)...)
		}
	}
	for _, p := range probs {
		t.Error(p)
	}
	if n == 0 || inputs == 0 {
		t.Fatalf("%d rules, %d test series: nothing checked", n, inputs)
	}
	t.Logf("%d rules and %d test series checked against %d metric families", n, inputs, len(fams))
}
