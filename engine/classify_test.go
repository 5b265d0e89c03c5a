package engine

import (
	"slices"
	"testing"
)

// llamaCorrupt is what llama-server (b4747) prints for a file that is not GGUF.
var llamaCorrupt = []string{
	"main: HTTP server is listening, hostname: 127.0.0.1, port: 18555, http threads: 3",
	"main: loading model",
	"srv    load_model: loading model '/m/corrupt.gguf'",
	"gguf_init_from_file_impl: invalid magic characters: 'this', expected 'GGUF'",
	"llama_model_load: error loading model: llama_model_loader: failed to load model from /m/corrupt.gguf",
	"",
	"llama_model_load_from_file_impl: failed to load model",
	"common_init_from_params: failed to load model '/m/corrupt.gguf'",
	"srv    load_model: failed to load model, '/m/corrupt.gguf'",
	"srv    operator(): operator(): cleaning up before exit...",
	"terminate called without an active exception",
	"main: exiting due to model loading error",
}

func TestClassify(t *testing.T) {
	abrt := Exit{Code: -1, Signal: "SIGABRT"}
	kill := Exit{Code: -1, Signal: "SIGKILL"}
	code1 := Exit{Code: 1}
	for _, tc := range []struct {
		name    string
		ex      Exit
		lines   []string
		reason  string
		cause   string
		matched bool
	}{
		{"llama-server corrupt model", abrt, llamaCorrupt, ReasonModelLoadError,
			"gguf_init_from_file_impl: invalid magic characters: 'this', expected 'GGUF'", true},
		{"llama-server truncated model", abrt, []string{
			"main: loading model",
			"gguf_init_from_file_impl: failed to read key-value pairs",
			"llama_model_load: error loading model: llama_model_loader: failed to load model from /m/t.gguf",
			"main: exiting due to model loading error",
		}, ReasonModelLoadError, "gguf_init_from_file_impl: failed to read key-value pairs", true},
		{"llama.cpp CUDA OOM during load beats the load error", code1, []string{
			"llm_load_tensors: offloading 80 repeating layers to GPU",
			"ggml_backend_cuda_buffer_type_alloc_buffer: allocating 39000.00 MiB on device 0: cudaMalloc failed: out of memory",
			"llama_model_load: error loading model: unable to allocate CUDA0 buffer",
			"llama_load_model_from_file: failed to load model",
		}, ReasonCUDAOOM, "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 39000.00 MiB on device 0: cudaMalloc failed: out of memory", true},
		{"vLLM torch OOM", code1, []string{
			"INFO 01-02 worker.py:1 Loading model weights took 13.9 GiB",
			"Traceback (most recent call last):",
			`  File "/usr/lib/python3/site-packages/torch/nn/modules/module.py", line 1, in _apply`,
			"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.96 GiB. GPU 0 has a total capacity of 79.1 GiB",
			"RuntimeError: Engine core initialization failed. See root cause above.",
		}, ReasonCUDAOOM, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.96 GiB. GPU 0 has a total capacity of 79.1 GiB", true},
		{"TGI OOM", code1, []string{
			"2025-01-02T03:04:05Z ERROR text_generation_launcher: Shard complete standard error output:",
			"torch.cuda.OutOfMemoryError: CUDA out of memory.",
		}, ReasonCUDAOOM, "torch.cuda.OutOfMemoryError: CUDA out of memory.", true},
		{"CUDA driver too old", code1, []string{
			"ggml_cuda_init: failed to initialize CUDA: CUDA driver version is insufficient for CUDA runtime version",
			"main: exiting",
		}, ReasonDriverError, "ggml_cuda_init: failed to initialize CUDA: CUDA driver version is insufficient for CUDA runtime version", true},
		{"unknown CUDA error", abrt, []string{
			"CUDA error: unknown error",
			"  current device: 0, in function ggml_backend_cuda_synchronize",
			"GGML_ASSERT failed",
		}, ReasonDriverError, "CUDA error: unknown error", true},
		{"NVML mismatch", code1, []string{"Failed to initialize NVML: Driver/library version mismatch"}, ReasonDriverError,
			"Failed to initialize NVML: Driver/library version mismatch", true},
		{"an info line about NVML is no driver error", code1, []string{"INFO using nvml to query devices", "bye"},
			ReasonExitCode, "bye", false},
		{"host OOM: the kernel's word wins", Exit{Code: -1, Signal: "SIGKILL", OOMKilled: true}, []string{
			"srv  log_server_r: request: POST /completion 127.0.0.1 200",
		}, ReasonHostOOM, "srv  log_server_r: request: POST /completion 127.0.0.1 200", false},
		{"host OOM keeps a class message as its cause", Exit{Code: -1, Signal: "SIGKILL", OOMKilled: true}, []string{
			"error loading model: x",
		}, ReasonHostOOM, "error loading model: x", true},
		{"generic error: earliest", code1, []string{
			"starting",
			"ValueError: max_model_len 32768 is larger than the KV cache can hold",
			"RuntimeError: Engine core initialization failed. See root cause above.",
			"exiting",
		}, ReasonExitCode, "ValueError: max_model_len 32768 is larger than the KV cache can hold", true},
		{"a warning only counts when nothing else does", code1, []string{
			"warning: failed to mlock 1234-byte buffer",
			"fatal: listen tcp: address already in use",
			"bye",
		}, ReasonExitCode, "fatal: listen tcp: address already in use", true},
		{"the warning, when it is all there is", kill, []string{
			"warning: failed to mlock 1234-byte buffer",
			"serving",
		}, ReasonSignal, "warning: failed to mlock 1234-byte buffer", true},
		{"nothing matches: the last non-empty line", kill, []string{"serving", "still serving", ""},
			ReasonSignal, "still serving", false},
		{"no output at all", code1, nil, ReasonExitCode, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Classify(tc.ex, tc.lines)
			if c.Reason != tc.reason || c.Cause != tc.cause || c.CauseMatched != tc.matched {
				t.Fatalf("Classify = %+v\nwant reason %s, cause %q, matched %v", c, tc.reason, tc.cause, tc.matched)
			}
		})
	}
}

// Only the last CauseWindow lines count: an error long before the exit is
// history, not the cause.
func TestClassifyWindow(t *testing.T) {
	lines := []string{"error loading model: long ago"}
	for i := 0; i < CauseWindow; i++ {
		lines = append(lines, "srv  log_server_r: request: GET /health 127.0.0.1 200")
	}
	c := Classify(Exit{Code: -1, Signal: "SIGKILL"}, lines)
	if c.Reason != ReasonSignal || c.CauseMatched {
		t.Fatalf("Classify = %+v, want a plain signal", c)
	}
}

func TestExitReasonsListed(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range ExitReasons {
		seen[r] = true
	}
	for _, r := range classRules {
		if !seen[r.reason] {
			t.Errorf("rule class %s is not in ExitReasons", r.reason)
		}
	}
}

// RecentLines shows this process's lines only, not an earlier engine's of the
// same pool, and at most CauseWindow of them.
func TestRecentLines(t *testing.T) {
	sink := NewSink(nil, 100, 0, 0)
	sink.Write(StreamStderr, "from the previous engine")
	p, err := Start(Spec{Argv: []string{"/bin/sh", "-c", "echo one; echo two >&2; i=0; while [ $i -lt 60 ]; do echo line$i; i=$((i+1)); done; echo last >&2"}, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	got := p.RecentLines(CauseWindow + 10)
	if len(got) != CauseWindow || slices.Contains(got, "from the previous engine") || !slices.Contains(got, "line59") {
		t.Fatalf("RecentLines = %q, want this process's last %d lines", got, CauseWindow)
	}
	if last := p.RecentLines(1); len(last) != 1 {
		t.Fatalf("RecentLines(1) = %q", last)
	}
	q, err := Start(Spec{Argv: []string{"/bin/sh", "-c", "echo a; echo b >&2"}, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	<-q.Done()
	if got := q.RecentLines(10); len(got) != 2 || !slices.Contains(got, "a") || !slices.Contains(got, "b") {
		t.Fatalf("second process: RecentLines = %q, want only a and b", got)
	}
	var none Process
	if l := none.RecentLines(5); l != nil {
		t.Fatalf("no writers: %q", l)
	}
}
