package engine

// Engine series re-exported by the daemon.
//
// The daemon's own metrics scrape of a pool (metrics_path, see ScrapeQueue)
// also reads a fixed allow-list of the engine's series, and the daemon
// re-exports them on its /metrics as pool_managerd_engine_<name>, where
// <name> is the engine's series name with every character outside
// [a-zA-Z0-9_] made "_" (llamacpp:prompt_tokens_total becomes
// pool_managerd_engine_llamacpp_prompt_tokens_total). The prefix keeps them
// apart from the engine's own series should Prometheus scrape the engine
// too. The engine's labels are summed away (one value per pool), so the
// cardinality is one series per allow-listed name per pool. Only counters
// and gauges are listed; histograms and summaries are not re-exported.

import "strings"

// ExportSeries is one allow-listed engine series: its name as the engine
// exposes it (the sample name, e.g. vLLM's "vllm:prompt_tokens_total"),
// whether it is a counter (else a gauge), and what it measures.
type ExportSeries struct {
	Name    string
	Counter bool
	Help    string
}

// Sample is one re-exported series' value, summed over the engine's labels.
type Sample struct {
	ExportSeries
	Value float64
}

// ExportPrefix begins the name of every re-exported engine series.
const ExportPrefix = "pool_managerd_engine_"

// ExportName is the name the daemon re-exports an engine series under.
func ExportName(engineName string) string {
	return ExportPrefix + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, engineName)
}

func counter(name, help string) ExportSeries {
	return ExportSeries{Name: name, Counter: true, Help: help}
}
func gauge(name, help string) ExportSeries { return ExportSeries{Name: name, Help: help} }

// exportSeries is the allow-list per engine kind (config.Engines); kinds not
// listed use llama-server's (as QueueSeriesFor does). llama-server's are
// those b4747 exposes with --metrics, with its types, except
// llamacpp:n_busy_slots_per_decode: it declares a counter, but it is an
// average that can fall, so it is re-exported as a gauge.
var exportSeries = map[string][]ExportSeries{
	"llamacpp": {
		counter("llamacpp:prompt_tokens_total", "Prompt tokens processed."),
		counter("llamacpp:prompt_seconds_total", "Seconds spent processing prompts."),
		counter("llamacpp:tokens_predicted_total", "Tokens generated."),
		counter("llamacpp:tokens_predicted_seconds_total", "Seconds spent generating tokens."),
		counter("llamacpp:n_decode_total", "llama_decode() calls."),
		gauge("llamacpp:n_busy_slots_per_decode", "Average busy slots per llama_decode() call."),
		gauge("llamacpp:prompt_tokens_seconds", "Average prompt throughput in tokens/s."),
		gauge("llamacpp:predicted_tokens_seconds", "Average generation throughput in tokens/s."),
		gauge("llamacpp:kv_cache_usage_ratio", "KV-cache usage, 1 is full."),
		gauge("llamacpp:kv_cache_tokens", "Tokens in the KV cache."),
		gauge("llamacpp:requests_processing", "Requests being processed."),
		gauge("llamacpp:requests_deferred", "Requests deferred (queued)."),
	},
	"vllm": {
		gauge("vllm:num_requests_running", "Requests running on the GPU."),
		gauge("vllm:num_requests_waiting", "Requests waiting to be processed."),
		gauge("vllm:num_requests_swapped", "Requests swapped to CPU."),
		gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage, 1 is full."),
		gauge("vllm:cpu_cache_usage_perc", "CPU KV-cache usage, 1 is full."),
		counter("vllm:num_preemptions_total", "Preemptions."),
		counter("vllm:prompt_tokens_total", "Prefill tokens processed."),
		counter("vllm:generation_tokens_total", "Generation tokens processed."),
		counter("vllm:request_success_total", "Requests finished (all finish reasons)."),
	},
	"tgi": {
		gauge("tgi_queue_size", "Requests waiting in the queue."),
		gauge("tgi_batch_current_size", "Requests in the current batch."),
		gauge("tgi_batch_current_max_tokens", "Maximum tokens of the current batch."),
		counter("tgi_request_count", "Requests received."),
		counter("tgi_request_success", "Requests that succeeded."),
		counter("tgi_request_failure", "Requests that failed."),
	},
}

// AllExportSeries lists every allow-listed series of every engine kind, each
// name once.
func AllExportSeries() []ExportSeries {
	var out []ExportSeries
	seen := map[string]bool{}
	for _, k := range []string{"llamacpp", "vllm", "tgi"} {
		for _, e := range exportSeries[k] {
			if !seen[e.Name] {
				seen[e.Name] = true
				out = append(out, e)
			}
		}
	}
	return out
}
