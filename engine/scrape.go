package engine

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxScrapeBytes bounds how much of an engine's /metrics page is read: the
// few series the daemon wants are near the top of llama-server's output, and
// a misbehaving engine must not make the daemon buffer megabytes.
const maxScrapeBytes = 1 << 20

// Scrape reads a Prometheus text page and returns the values of the wanted
// series (summed over labels), e.g. llama-server's
// "llamacpp:requests_processing". Missing series are absent from the map.
func Scrape(ctx context.Context, client *http.Client, url string, timeout time.Duration, names ...string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: HTTP %d", resp.StatusCode)
	}
	return ParseMetrics(io.LimitReader(resp.Body, maxScrapeBytes), names...)
}

// ParseMetrics extracts the wanted series from Prometheus text format, each
// summed over its samples (labels); NaN and ±Inf samples are skipped.
func ParseMetrics(r io.Reader, names ...string) (map[string]float64, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4<<10), 64<<10) // grows to 64 KiB for a long line only: scrapes come every liveness tick
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if !want[name] {
			continue
		}
		if strings.HasPrefix(rest, "{") {
			j := strings.LastIndexByte(rest, '}')
			if j < 0 {
				continue
			}
			rest = rest[j+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			continue // a NaN or ±Inf sample says nothing and would poison the sum (and JSON)
		}
		out[name] += v
	}
	return out, sc.Err()
}

// QueueSeries names the series of an engine's own metrics that count the
// requests it is working on and those queued behind them. Each list is
// summed (over labels too).
type QueueSeries struct {
	Processing []string
	Waiting    []string
	// Export is the allow-list of the engine's series the daemon re-exports
	// on its own /metrics (read by the same scrape, summed over labels).
	Export []ExportSeries
}

// queueSeries is what each engine exports: llama-server with --metrics,
// vLLM and TGI out of the box. Triton and other engines are read with
// llama-server's names, so an engine that mimics them is understood and any
// other simply reports nothing.
var queueSeries = map[string]QueueSeries{
	"llamacpp": {Processing: []string{"llamacpp:requests_processing"}, Waiting: []string{"llamacpp:requests_deferred"}},
	"vllm":     {Processing: []string{"vllm:num_requests_running"}, Waiting: []string{"vllm:num_requests_waiting"}},
	"tgi":      {Processing: []string{"tgi_batch_current_size"}, Waiting: []string{"tgi_queue_size"}},
}

// QueueSeriesFor returns the queue series of an engine kind (config.Engines),
// with the series it re-exports.
func QueueSeriesFor(engine string) QueueSeries {
	s, ok := queueSeries[engine]
	if !ok {
		engine = "llamacpp"
		s = queueSeries[engine]
	}
	s.Export = exportSeries[engine]
	return s
}

// Queue is one reading of an engine's request queue.
type Queue struct {
	Processing float64 // requests being worked on now
	Waiting    float64 // accepted, queued behind them
	// Reported is false when the page had none of the processing series:
	// the engine does not say what it is doing (and Processing means nothing).
	Reported bool
	// Series are the values of the QueueSeries.Export series the page had,
	// in allow-list order. The slice is never changed once returned.
	Series []Sample
}

// InFlight is every request the engine holds: processing and waiting.
func (q Queue) InFlight() float64 { return q.Processing + q.Waiting }

// ScrapeQueue reads an engine's metrics page and returns its queue.
func ScrapeQueue(ctx context.Context, client *http.Client, url string, timeout time.Duration, s QueueSeries) (Queue, error) {
	names := append(append([]string{}, s.Processing...), s.Waiting...)
	for _, e := range s.Export {
		names = append(names, e.Name)
	}
	m, err := Scrape(ctx, client, url, timeout, names...)
	if err != nil {
		return Queue{}, err
	}
	var q Queue
	for _, n := range s.Processing {
		if v, ok := m[n]; ok {
			q.Processing += v
			q.Reported = true
		}
	}
	for _, n := range s.Waiting {
		q.Waiting += m[n]
	}
	for _, e := range s.Export {
		if v, ok := m[e.Name]; ok {
			q.Series = append(q.Series, Sample{ExportSeries: e, Value: v})
		}
	}
	return q, nil
}
