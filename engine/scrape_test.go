package engine

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseMetrics(t *testing.T) {
	page := `# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 3
llamacpp:requests_deferred{slot="a"} 1
llamacpp:requests_deferred{slot="b"} 2 1700000000
llamacpp:requests_processing_total 99
other 5
`
	got, err := ParseMetrics(strings.NewReader(page), "llamacpp:requests_processing", "llamacpp:requests_deferred", "missing")
	if err != nil {
		t.Fatal(err)
	}
	if got["llamacpp:requests_processing"] != 3 || got["llamacpp:requests_deferred"] != 3 || len(got) != 2 {
		t.Fatalf("got %v", got)
	}
}

func TestQueueSeriesForEngines(t *testing.T) {
	pages := map[string]string{
		"llamacpp": "llamacpp:requests_processing 2\nllamacpp:requests_deferred 1\n",
		"vllm": `vllm:num_requests_running{model_name="m"} 3
vllm:num_requests_waiting{model_name="m"} 4
`,
		"tgi": "tgi_batch_current_size 5\ntgi_queue_size 6\n",
	}
	want := map[string]Queue{
		"llamacpp": {Processing: 2, Waiting: 1, Reported: true},
		"vllm":     {Processing: 3, Waiting: 4, Reported: true},
		"tgi":      {Processing: 5, Waiting: 6, Reported: true},
	}
	for eng, page := range pages {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, page) }))
		q, err := ScrapeQueue(context.Background(), srv.Client(), srv.URL, time.Second, QueueSeriesFor(eng))
		srv.Close()
		w := want[eng] // Series: TestScrapeQueueExport
		if err != nil || q.Processing != w.Processing || q.Waiting != w.Waiting || q.Reported != w.Reported {
			t.Errorf("%s: ScrapeQueue = %+v, %v; want %+v", eng, q, err, want[eng])
		}
	}
	// An engine that exports none of the series reports nothing.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "other 1\n") }))
	defer srv.Close()
	if q, err := ScrapeQueue(context.Background(), srv.Client(), srv.URL, time.Second, QueueSeriesFor("triton")); err != nil || q.Reported {
		t.Errorf("a page without queue series: %+v, %v; want Reported false", q, err)
	}
}

func TestReadProcStat(t *testing.T) {
	s, err := ReadProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.Stopped() || s.State == 0 {
		t.Errorf("our own state = %q", s.State)
	}
	// The parser (hostile command names, malformed lines) is tested in internal/proc.
}

// An engine may print NaN or ±Inf for any sample (the text format allows
// them; a summary without observations prints NaN). Such a reading says
// nothing about the queue, would poison a sum, and would make every health
// answer of the pool fail to encode (JSON has no NaN): it is skipped, as an
// unparsable value is.
func TestParseMetricsSkipsNonFiniteSamples(t *testing.T) {
	page := `llamacpp:requests_processing NaN
llamacpp:requests_processing{slot="b"} 2
llamacpp:requests_deferred +Inf
llamacpp:requests_deferred{slot="c"} -Inf
`
	got, err := ParseMetrics(strings.NewReader(page), "llamacpp:requests_processing", "llamacpp:requests_deferred")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := got["llamacpp:requests_processing"]; !ok || v != 2 {
		t.Fatalf("requests_processing = %v (present %v), want 2 from the finite sample; all: %v", v, ok, got)
	}
	if v, ok := got["llamacpp:requests_deferred"]; ok {
		t.Fatalf("requests_deferred = %v, want absent: its only samples are infinite", v)
	}
}
