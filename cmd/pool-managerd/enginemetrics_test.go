package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeDaemon reads the daemon's whole /metrics and parses it with
// Prometheus' own text parser: the exposition must be valid.
func (d *daemon) scrapeDaemon() (map[string]*dto.MetricFamily, []byte) {
	d.t.Helper()
	resp, err := d.client.Get(d.base + "/metrics")
	if err != nil {
		d.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		d.t.Fatalf("GET /metrics: HTTP %d, %v", resp.StatusCode, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		d.t.Fatalf("the daemon's /metrics is not valid exposition: %v\n%s", err, b)
	}
	return fams, b
}

// engineSeries is the value of a re-exported series for one pool (ok false
// when absent), with its labels checked.
func engineSeries(t *testing.T, fams map[string]*dto.MetricFamily, name, pool string, typ dto.MetricType) (float64, bool) {
	t.Helper()
	f := fams[name]
	if f == nil {
		return 0, false
	}
	if f.GetType() != typ {
		t.Fatalf("%s has type %v, want %v", name, f.GetType(), typ)
	}
	for _, m := range f.Metric {
		l := map[string]string{}
		for _, lp := range m.Label {
			l[lp.GetName()] = lp.GetValue()
		}
		if l["pool_id"] != pool {
			continue
		}
		if len(l) != 3 || l["engine"] != "llamacpp" || l["engine_version"] != "b4747" {
			t.Fatalf("%s{pool_id=%q} labels = %v; want pool_id, engine llamacpp, engine_version b4747", name, pool, l)
		}
		if m.Counter != nil {
			return m.Counter.GetValue(), true
		}
		return m.Gauge.GetValue(), true
	}
	return 0, false
}

// TestLlamaEngineSeriesReexported: a daemon running two llama-server pools
// with metrics_path re-exports their engines' allow-listed series on its own
// /metrics, one series per pool (pool_id, engine, engine_version), with the
// engines' types; after one completion on pool a its token counter shows it;
// the page parses as Prometheus text; a stopped pool's series go away.
func TestLlamaEngineSeriesReexported(t *testing.T) {
	l := findLlama(t)
	d, _ := startLlama(t, []string{"a", "b"}, l.pool("a", l.model("tiny-a.gguf"), nil), l.pool("b", l.model("tiny-b.gguf"), nil))
	if n, err := completion(d.engineURL("a"), 8); err != nil || n != 8 {
		t.Fatalf("completion on pool a = %d tokens, %v; want 8", n, err)
	}
	const (
		predicted = "pool_managerd_engine_llamacpp_tokens_predicted_total"
		kvRatio   = "pool_managerd_engine_llamacpp_kv_cache_usage_ratio"
		running   = "pool_managerd_engine_llamacpp_requests_processing"
	)
	var page []byte
	deadline := time.Now().Add(waitLimit)
	for {
		fams, b := d.scrapeDaemon()
		page = b
		na, okA := engineSeries(t, fams, predicted, "a", dto.MetricType_COUNTER)
		nb, okB := engineSeries(t, fams, predicted, "b", dto.MetricType_COUNTER)
		_, kvA := engineSeries(t, fams, kvRatio, "a", dto.MetricType_GAUGE)
		_, kvB := engineSeries(t, fams, kvRatio, "b", dto.MetricType_GAUGE)
		_, runB := engineSeries(t, fams, running, "b", dto.MetricType_GAUGE)
		if okA && na >= 8 && okB && kvA && kvB && runB {
			if nb != 0 {
				t.Errorf("pool b generated nothing, yet %s{pool_id=b} = %g", predicted, nb)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's /metrics never showed both pools' engine series with pool a's 8 tokens:\n%s", grepEngine(b))
		}
		time.Sleep(pollEvery)
	}
	if p := os.Getenv("POOL_MANAGERD_METRICS_OUT"); p != "" { // a sample page for the docs and promtool
		if err := os.WriteFile(p, page, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Every re-exported series is one of the allow-list (bounded), with help.
	fams, _ := d.scrapeDaemon()
	var n int
	for name, f := range fams {
		if strings.HasPrefix(name, "pool_managerd_engine_llamacpp_") {
			n++
			if len(f.Metric) != 2 || f.GetHelp() == "" {
				t.Errorf("%s: %d series (want one per pool), help %q", name, len(f.Metric), f.GetHelp())
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d llama-server series re-exported:\n%s", n, grepEngine(page))
	}

	// Stopping pool b takes its series away (no stale values); a's stay.
	if code, err := d.do("POST", "/v1/pools/b/drain", `{"deadline_ms":10000}`, nil); err != nil || code != 202 {
		t.Fatalf("POST drain: HTTP %d, %v", code, err)
	}
	d.waitPool("b", "stopped", func(p poolStatus, _ int) bool { return p.State == "stopped" })
	fams, b := d.scrapeDaemon()
	for name := range fams {
		if !strings.HasPrefix(name, "pool_managerd_engine_llamacpp_") {
			continue // pool_managerd_engine_log_* are the daemon's own
		}
		if _, ok := engineSeries(t, fams, name, "b", fams[name].GetType()); ok {
			t.Errorf("stopped pool b still has %s:\n%s", name, grepEngine(b))
		}
	}
	if _, ok := engineSeries(t, fams, predicted, "a", dto.MetricType_COUNTER); !ok {
		t.Errorf("pool a lost %s when b stopped", predicted)
	}
}

// grepEngine is the re-exported part of a /metrics page, for messages.
func grepEngine(page []byte) string {
	var b strings.Builder
	for _, ln := range strings.Split(string(page), "\n") {
		if strings.Contains(ln, "pool_managerd_engine_llamacpp_") {
			fmt.Fprintln(&b, ln)
		}
	}
	return b.String()
}
