// This file is the simulator's HTTP surface, shaped like llama-server's.

package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

const loadingBody = `{"error":{"code":503,"message":"Loading model"}}`

// server answers the llama-server endpoints the daemon and the demo use.
type server struct {
	cfg       config
	started   time.Time
	ready     atomic.Bool
	quitting  chan struct{}
	quitOnce  sync.Once
	prompt    atomic.Int64 // tokens counted for /metrics
	predicted atomic.Int64
	busy      atomic.Int64
	mux       *http.ServeMux
}

func newServer(cfg config) *server {
	s := &server{cfg: cfg, started: time.Now(), quitting: make(chan struct{})}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /health", s.health)
	s.mux.HandleFunc("GET /metrics", s.metrics)
	s.mux.HandleFunc("GET /v1/models", s.whenReady(s.models))
	s.mux.HandleFunc("GET /props", s.whenReady(s.props))
	s.mux.HandleFunc("POST /v1/chat/completions", s.whenReady(s.complete))
	s.mux.HandleFunc("POST /v1/completions", s.whenReady(s.complete))
	s.mux.HandleFunc("POST /completion", s.whenReady(s.complete))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": map[string]any{"code": 404, "message": "File Not Found"}})
	})
	return s
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// markReady flips /health to 200 and prints the line benchmarks parse.
func (s *server) markReady() {
	s.ready.Store(true)
	fmt.Printf("sim-engine: ready at_unix_nano=%d\n", time.Now().UnixNano())
}

// quit releases hung /health handlers so a graceful shutdown can finish.
func (s *server) quit() { s.quitOnce.Do(func() { close(s.quitting) }) }

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	if s.cfg.hangHealth || (s.cfg.hangHealthAfter > 0 && time.Since(s.started) >= s.cfg.hangHealthAfter) {
		select { // never answer; drop the connection when the client or we give up
		case <-r.Context().Done():
		case <-s.quitting:
		}
		panic(http.ErrAbortHandler)
	}
	if !s.ready.Load() {
		writeRaw(w, http.StatusServiceUnavailable, loadingBody)
		return
	}
	writeRaw(w, http.StatusOK, `{"status":"ok"}`)
}

// whenReady answers 503 Loading model, as llama-server does, until loaded.
func (s *server) whenReady(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			writeRaw(w, http.StatusServiceUnavailable, loadingBody)
			return
		}
		h(w, r)
	}
}

func (s *server) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	for _, m := range []struct {
		name, kind, help string
		v                int64
	}{
		{"prompt_tokens_total", "counter", "Number of prompt tokens processed.", s.prompt.Load()},
		{"tokens_predicted_total", "counter", "Number of generation tokens processed.", s.predicted.Load()},
		{"requests_processing", "gauge", "Number of requests processing.", s.busy.Load()},
		{"requests_deferred", "gauge", "Number of requests deferred.", 0},
	} {
		fmt.Fprintf(w, "# HELP llamacpp:%s %s\n# TYPE llamacpp:%s %s\nllamacpp:%s %d\n", m.name, m.help, m.name, m.kind, m.name, m.v)
	}
}

func (s *server) models(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{map[string]any{
		"id": s.cfg.model, "object": "model", "created": s.started.Unix(), "owned_by": "llamacpp",
	}}})
}

func (s *server) props(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"model_path": s.cfg.model, "total_slots": s.cfg.parallel, "build_info": "sim-engine"})
}

// complete answers any completion request with a fixed short text.
func (s *server) complete(w http.ResponseWriter, r *http.Request) {
	s.busy.Add(1)
	defer s.busy.Add(-1)
	n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	s.prompt.Add(n/4 + 1)
	s.predicted.Add(3)
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "chat.completion", "model": s.cfg.model,
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "text": "simulated",
			"message": map[string]any{"role": "assistant", "content": "simulated"}}},
		"usage": map[string]any{"prompt_tokens": n/4 + 1, "completion_tokens": 3},
	})
}

func writeRaw(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
