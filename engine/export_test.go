package engine

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"
)

// TestScrapeQueueExport: the same scrape that reads the queue returns the
// allow-listed series the page has, in allow-list order, summed over the
// engine's labels, with their kinds; series off the list are not read.
func TestScrapeQueueExport(t *testing.T) {
	page := `# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 2
vllm:num_requests_waiting{model_name="m"} 1
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.25
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{model_name="m"} 100
vllm:prompt_tokens_created{model_name="m"} 1.7e9
# TYPE vllm:request_success counter
vllm:request_success_total{finished_reason="stop",model_name="m"} 3
vllm:request_success_total{finished_reason="length",model_name="m"} 4
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 7
vllm:e2e_request_latency_seconds_count{model_name="m"} 7
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, page) }))
	defer srv.Close()
	q, err := ScrapeQueue(context.Background(), srv.Client(), srv.URL, time.Second, QueueSeriesFor("vllm"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Sample{
		{gauge("vllm:num_requests_running", ""), 2},
		{gauge("vllm:num_requests_waiting", ""), 1},
		{gauge("vllm:gpu_cache_usage_perc", ""), 0.25},
		{counter("vllm:prompt_tokens_total", ""), 100},
		{counter("vllm:request_success_total", ""), 7},
	}
	if len(q.Series) != len(want) {
		t.Fatalf("Series = %+v; want %+v", q.Series, want)
	}
	for i, s := range q.Series {
		if s.Name != want[i].Name || s.Counter != want[i].Counter || s.Value != want[i].Value || s.Help == "" {
			t.Errorf("Series[%d] = %+v; want %+v (with a help text)", i, s, want[i])
		}
	}
	if q.Processing != 2 || q.Waiting != 1 || !q.Reported {
		t.Errorf("queue = %+v", q)
	}
}

// TestExportNames: every allow-listed series of every engine kind has a
// valid, distinct Prometheus name under the daemon's prefix and a help text;
// kinds without a list of their own use llama-server's.
func TestExportNames(t *testing.T) {
	valid := regexp.MustCompile(`^pool_managerd_engine_[a-zA-Z0-9_]+$`)
	seen := map[string]string{}
	for _, e := range AllExportSeries() {
		n := ExportName(e.Name)
		if !valid.MatchString(n) || e.Help == "" {
			t.Errorf("%s: exported as %q, help %q", e.Name, n, e.Help)
		}
		if other, dup := seen[n]; dup {
			t.Errorf("%s and %s both export as %s", e.Name, other, n)
		}
		seen[n] = e.Name
	}
	if got := ExportName("llamacpp:prompt_tokens_total"); got != "pool_managerd_engine_llamacpp_prompt_tokens_total" {
		t.Errorf("ExportName = %q", got)
	}
	if len(QueueSeriesFor("triton").Export) != len(QueueSeriesFor("llamacpp").Export) {
		t.Error("triton does not use llama-server's allow-list")
	}
}
