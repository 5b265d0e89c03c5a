// Helpers of the real-engine tests (llama_test.go): finding llama.cpp's
// llama-server and its two tiny models, pools that run it, and requests to
// the engine itself.

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// llama is a llama-server binary and the folder of its test models
// (testutil.FindLlama says where they are looked for).
type llama struct{ testutil.Llama }

// findLlama locates llama-server and both tiny models, or skips the test.
func findLlama(t *testing.T) llama { return llama{testutil.FindLlama(t)} }

// model is the absolute path of one of the test models.
func (l llama) model(name string) string { return l.Model(name) }

// llamaDefaults keeps the real-engine tests quick: the tiny models load in
// about 100 ms, so short timeouts are safe. Liveness runs every second (the
// metrics scrape follows its interval).
const llamaDefaults = `shutdown_deadline: 10s
gpu: {require_nvidia: false}
defaults:
  startup_timeout: 60s
  stop_grace: 5s
  drain_deadline: 30s
  liveness: {interval: 1s}
  restart: {initial: 100ms, max: 1s, reset_after: 1h, max_failures: 10, window: 1h}
pools:
`

// pool is one YAML pool entry running llama-server on model (a path) with
// two slots and its metrics on; args are added to its command, extra lines
// to the entry.
func (l llama) pool(id, model string, args []string, extra ...string) string {
	argv := []string{l.Server, "-m", "${MODEL_REF}", "--host", "${HOST}", "--port", "${PORT}",
		"-c", "256", "--parallel", "2", "--metrics"}
	argv = append(argv, args...)
	cmd, _ := json.Marshal(argv)
	var b strings.Builder
	fmt.Fprintf(&b, "  - id: %s\n    engine: llamacpp\n    engine_version: b4747\n    model_ref: %s\n    command: %s\n    slots: 2\n    metrics_path: /metrics\n", id, model, cmd)
	for _, x := range extra {
		b.WriteString("    " + x + "\n")
	}
	return b.String()
}

// startLlama starts a daemon running pools and waits until ids are ready.
func startLlama(t *testing.T, ids []string, pools ...string) (*daemon, map[string]poolStatus) {
	t.Helper()
	d := startDaemon(t, "-config", tempConfig(t, llamaDefaults+strings.Join(pools, "")))
	return d, byID(d.waitPools(strings.Join(ids, ", ")+" ready", allReady(ids...)))
}

// llamaStatus is the part of a pool's status the real-engine tests read
// beyond poolStatus.
type llamaStatus struct {
	State         string  `json:"state"`
	PID           *int    `json:"pid"`
	URL           *string `json:"url"`
	ModelRef      string  `json:"model_ref"`
	LastError     *string `json:"last_error"`
	RestartCount  int     `json:"restart_count"`
	EngineMetrics *struct {
		RequestsProcessing float64 `json:"requests_processing"`
	} `json:"engine_metrics"`
	LastDrain *struct {
		Forced      bool `json:"forced"`
		FinalLeases int  `json:"final_leases"`
	} `json:"last_drain"`
}

func (d *daemon) llamaStatus(id string) llamaStatus {
	d.t.Helper()
	var s llamaStatus
	if code, err := d.do("GET", "/v1/pools/"+id, "", &s); err != nil || code != 200 {
		d.t.Fatalf("GET /v1/pools/%s: HTTP %d, %v", id, code, err)
	}
	return s
}

// engineURL is the pool's engine address, e.g. http://127.0.0.1:40123.
func (d *daemon) engineURL(id string) string {
	d.t.Helper()
	s := d.llamaStatus(id)
	if s.URL == nil {
		d.t.Fatalf("pool %s has no engine url: %+v", id, s)
	}
	return *s.URL
}

// engineClient talks to an engine directly, each request on a fresh
// connection: llama-server does not set TCP_NODELAY, so a kept-alive
// connection adds about 40 ms to every answer.
var engineClient = &http.Client{Timeout: 3 * time.Minute, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// completion asks the engine for nPredict tokens and returns how many it
// generated; an error means the request was cut or refused.
func completion(url string, nPredict int) (int, error) {
	body := fmt.Sprintf(`{"prompt":"hello","n_predict":%d}`, nPredict)
	resp, err := engineClient.Post(url+"/completion", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	var r struct {
		TokensPredicted int `json:"tokens_predicted"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, fmt.Errorf("%w: %s", err, b)
	}
	return r.TokensPredicted, nil
}

// completionResult is one finished completion started by goCompletion.
type completionResult struct {
	tokens int
	err    error
}

func goCompletion(url string, nPredict int) <-chan completionResult {
	ch := make(chan completionResult, 1)
	go func() {
		n, err := completion(url, nPredict)
		ch <- completionResult{n, err}
	}()
	return ch
}

// waitProcessing polls the engine's own /metrics until it works on at
// least n requests.
func waitProcessing(t *testing.T, url string, n float64) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		q, err := engine.ScrapeQueue(t.Context(), engineClient, url+"/metrics", 5*time.Second, engine.QueueSeriesFor("llamacpp"))
		if err == nil && q.Processing >= n {
			return
		}
		time.Sleep(pollEvery)
	}
	t.Fatalf("the engine at %s never had %g requests processing", url, n)
}

// waitCompletion waits for a completion and requires all nPredict tokens.
func waitCompletion(t *testing.T, ch <-chan completionResult, nPredict int) {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil || r.tokens != nPredict {
			t.Fatalf("completion = %d tokens, %v; want all %d (the request was cut?)", r.tokens, r.err, nPredict)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("completion did not finish within 3 minutes")
	}
}

// waitLogWithin is waitLog with its own limit (for waits longer than waitLimit).
func (d *daemon) waitLogWithin(limit time.Duration, msg string, kv ...any) (record, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if m := find(d.records(), msg, kv...); len(m) > 0 {
			return m[0], nil
		}
		if d.exited() {
			break
		}
		time.Sleep(pollEvery)
	}
	return record{}, errors.New("no log record " + msg + " within " + limit.String())
}
