// Tests against a real engine: llama.cpp's llama-server (CPU build) with
// two tiny models, under the daemon binary. They skip, naming the missing
// file, when no llama-server is found (llama_helper_test.go says where they
// look). They are not parallel: each loads real models on a small machine,
// and some measure how long the daemon takes to notice a frozen engine.

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestLlamaReadyServesWithMetricsAndLogs(t *testing.T) {
	l := findLlama(t)
	d, pools := startLlama(t, []string{"llama"}, l.pool("llama", l.model("tiny-a.gguf"), nil))
	url := d.engineURL("llama")
	if n, err := completion(url, 8); err != nil || n != 8 {
		t.Fatalf("completion on the ready engine = %d tokens, %v; want 8", n, err)
	}

	// metrics_path: the engine's queue reaches the pool's health.
	var h struct {
		Metrics struct {
			RequestsProcessing *float64 `json:"requests_processing"`
			RequestsDeferred   *float64 `json:"requests_deferred"`
		} `json:"metrics"`
	}
	deadline := time.Now().Add(waitLimit)
	for {
		if code, err := d.do("GET", "/v1/pools/llama/health", "", &h); err != nil || code != 200 {
			t.Fatalf("GET health: HTTP %d, %v", code, err)
		}
		if h.Metrics.RequestsProcessing != nil && h.Metrics.RequestsDeferred != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never showed the engine's requests_processing: %+v", h.Metrics)
		}
		time.Sleep(pollEvery)
	}

	// The logs tail holds llama-server's own lines (all on stderr).
	var logs struct {
		Lines []struct {
			Stream string `json:"stream"`
			Text   string `json:"text"`
		} `json:"lines"`
	}
	if code, err := d.do("GET", "/v1/pools/llama/logs?tail=1000", "", &logs); err != nil || code != 200 {
		t.Fatalf("GET logs: HTTP %d, %v", code, err)
	}
	var listening bool
	for _, ln := range logs.Lines {
		if ln.Stream == "stderr" && strings.Contains(ln.Text, "server is listening on http://") {
			listening = true
		}
	}
	if !listening {
		t.Errorf("logs tail (%d lines) lacks llama-server's `server is listening` line", len(logs.Lines))
	}
	_ = pools
}

func TestLlamaDaemonSIGTERMLeavesNoEngine(t *testing.T) {
	l := findLlama(t)
	d, pools := startLlama(t, []string{"a", "b"},
		l.pool("a", l.model("tiny-a.gguf"), nil), l.pool("b", l.model("tiny-b.gguf"), nil))
	d.signal(syscall.SIGTERM)
	if code, _ := d.waitExit(exitLimit); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
	for id, p := range pools {
		if !gone(p.pid()) {
			t.Errorf("pool %s: llama-server %d (or its group) outlived the daemon", id, p.pid())
		}
	}
	// This build aborts on SIGTERM; the daemon still reports a stop it asked for.
	if n := len(find(d.records(), "engine.stopped")); n != 2 {
		t.Errorf("%d engine.stopped records, want 2", n)
	}
}

func TestLlamaReloadWaitSwitchesModels(t *testing.T) {
	l := findLlama(t)
	a, b := l.model("tiny-a.gguf"), l.model("tiny-b.gguf")
	d, pools := startLlama(t, []string{"llama"}, l.pool("llama", a, nil))
	pid := pools["llama"].pid()
	for _, to := range []string{b, a} {
		var res struct {
			Result string `json:"result"`
		}
		code, err := d.do("POST", "/v1/pools/llama/reload", fmt.Sprintf(`{"new_model_ref":%q,"wait":true}`, to), &res)
		if err != nil || code != 200 || res.Result != "succeeded" {
			t.Fatalf("reload to %s: HTTP %d %+v, %v; want 200 succeeded", to, code, res, err)
		}
		s := d.llamaStatus("llama")
		if s.State != "ready" || s.ModelRef != to || s.PID == nil || *s.PID == pid {
			t.Fatalf("after the reload to %s: %+v (old pid %d); want ready on the new model with a new pid", to, s, pid)
		}
		pid = *s.PID
		if n, err := completion(*s.URL, 8); err != nil || n != 8 {
			t.Fatalf("completion after the reload to %s = %d, %v", to, n, err)
		}
		// The engine really loaded that file.
		if _, err := d.waitLogWithin(waitLimit, "engine.spawned", "pid", pid); err != nil {
			t.Fatal(err)
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.Contains(string(cmdline), to) {
			t.Errorf("engine %d runs %q, want model %s", pid, cmdline, to)
		}
	}
}

// A drain waits for its lease, and the completion in flight on the engine
// finishes whole.
func TestLlamaDrainWaitsForLeaseAndInFlight(t *testing.T) {
	l := findLlama(t)
	d, _ := startLlama(t, []string{"llama"}, l.pool("llama", l.model("tiny-a.gguf"), nil))
	url := d.engineURL("llama")
	var lease struct {
		LeaseID string `json:"lease_id"`
	}
	if code, err := d.do("POST", "/v1/pools/llama/leases", "{}", &lease); err != nil || code != 201 {
		t.Fatalf("POST lease: HTTP %d, %v", code, err)
	}
	const n = 200
	done := goCompletion(url, n)
	waitProcessing(t, url, 1)
	if code, err := d.do("POST", "/v1/pools/llama/drain", `{"deadline_ms":60000}`, nil); err != nil || code != 202 {
		t.Fatalf("POST drain: HTTP %d, %v", code, err)
	}
	waitCompletion(t, done, n)
	if s := d.llamaStatus("llama"); s.State != "draining" || s.PID == nil {
		t.Fatalf("with the lease still held the pool is %s (pid %v), want draining with its engine", s.State, s.PID)
	}
	if code, err := d.do("DELETE", "/v1/pools/llama/leases/"+lease.LeaseID, "", nil); err != nil || code != 200 {
		t.Fatalf("DELETE lease: HTTP %d, %v", code, err)
	}
	d.waitPool("llama", "stopped", func(p poolStatus, _ int) bool { return p.State == "stopped" })
	s := d.llamaStatus("llama")
	if s.LastDrain == nil || s.LastDrain.Forced || s.LastDrain.FinalLeases != 0 {
		t.Errorf("last_drain = %+v, want unforced with 0 leases", s.LastDrain)
	}
}

// A client that never took a lease is not cut off: with the engine's queue
// in its metrics, a drain waits for the request in flight (issue: drains
// stopped the engine the moment leases were 0).
func TestLlamaDrainWaitsForInFlightWithoutLease(t *testing.T) {
	l := findLlama(t)
	d, _ := startLlama(t, []string{"llama"}, l.pool("llama", l.model("tiny-a.gguf"), nil))
	url := d.engineURL("llama")
	const n = 200
	done := goCompletion(url, n)
	waitProcessing(t, url, 1)
	if code, err := d.do("POST", "/v1/pools/llama/drain", `{"deadline_ms":60000}`, nil); err != nil || code != 202 {
		t.Fatalf("POST drain: HTTP %d, %v", code, err)
	}
	if len(done) > 0 {
		t.Fatal("the completion finished before the drain began: nothing was shown (raise n)")
	}
	waitCompletion(t, done, n)
	d.waitPool("llama", "stopped", func(p poolStatus, _ int) bool { return p.State == "stopped" })
	r := d.waitLog("drain.finished", "pool_id", "llama")
	if r.Fields["forced"] != false || r.num("final_in_flight") != 0 || r.Fields["final_in_flight"] == nil {
		t.Errorf("drain.finished = %s, want unforced with final_in_flight 0", r.Raw)
	}
}

func TestLlamaEngineSIGKILLRecovers(t *testing.T) {
	l := findLlama(t)
	d, pools := startLlama(t, []string{"llama"}, l.pool("llama", l.model("tiny-a.gguf"), nil))
	old := pools["llama"].pid()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p := d.waitPool("llama", "ready with a new engine", func(p poolStatus, _ int) bool {
		return p.State == "ready" && p.PID != nil && *p.PID != old
	})
	if p.LastError == nil || !strings.Contains(*p.LastError, "SIGKILL") {
		t.Errorf("last_error = %v, want the SIGKILL named", p.LastError)
	}
	waitGone(t, waitLimit, old)
	if n, err := completion(d.engineURL("llama"), 8); err != nil || n != 8 {
		t.Fatalf("completion on the new engine = %d, %v", n, err)
	}
}

// A stopped (SIGSTOP) engine is frozen, not busy: with the built-in
// liveness settings (5 s interval, 2 s timeout, 3 failures) it is failed
// in about 21 s, stopped in well under stop_grace, and then replaced.
func TestLlamaSIGSTOPFailsWithinLiveness(t *testing.T) {
	l := findLlama(t)
	d, pools := startLlama(t, []string{"llama"}, l.pool("llama", l.model("tiny-a.gguf"), nil,
		"liveness: {interval: 5s, timeout: 2s, failure_threshold: 3}", "stop_grace: 10s"))
	pid := pools["llama"].pid()
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	r, err := d.waitLogWithin(60*time.Second, "pool.failure", "pool_id", "llama", "reason", "liveness")
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(stopped)
	t.Logf("liveness failed the stopped engine %s after SIGSTOP: %s", took.Round(time.Millisecond), r.str("last_error"))
	// 3 × (5 s + 2 s) = 21 s; a busy excuse would have added busy_grace (5 min).
	if limit := 35 * time.Second; took > limit {
		t.Errorf("took %s to fail a stopped engine, want about 21 s (< %s)", took, limit)
	}
	if !strings.Contains(r.str("last_error"), "stopped") {
		t.Errorf("last_error %q does not say the process is stopped", r.str("last_error"))
	}
	if len(find(d.records(), "probe.liveness_busy", "pool_id", "llama")) > 0 {
		t.Error("a stopped engine was taken for a busy one")
	}
	failedAt := time.Now()
	if _, err := d.waitLogWithin(30*time.Second, "engine.stopped", "pid", pid); err != nil {
		t.Fatal(err)
	}
	// SIGCONT follows the SIGTERM, so the stopped engine acts on it at once
	// instead of costing the whole stop_grace before SIGKILL.
	gone := time.Since(failedAt)
	t.Logf("the stopped engine was gone %s after the failure (stop_grace 10s)", gone.Round(time.Millisecond))
	if limit := 5 * time.Second; gone > limit {
		t.Errorf("stopping the stopped engine took %s, want well under stop_grace 10s (< %s)", gone, limit)
	}
	d.waitPool("llama", "ready with a new engine", func(p poolStatus, _ int) bool {
		return p.State == "ready" && p.PID != nil && *p.PID != pid
	})
}

// A corrupt model makes llama-server exit at load: the pool fails with the
// cause in last_error, and the breaker ends the restarts.
func TestLlamaCorruptModelFails(t *testing.T) {
	l := findLlama(t)
	bad := filepath.Join(t.TempDir(), "corrupt.gguf")
	if err := os.WriteFile(bad, []byte(strings.Repeat("this is not a gguf file\n", 4096)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "-config", tempConfig(t, llamaDefaults+l.pool("bad", bad, nil,
		"restart: {initial: 100ms, max: 200ms, max_failures: 2, window: 1h}")))
	p := d.waitPool("bad", "failed (breaker open)", func(p poolStatus, _ int) bool { return p.State == "failed" })
	if p.LastError == nil || !strings.Contains(*p.LastError, "invalid magic") {
		t.Fatalf("last_error = %v, want llama-server's cause (invalid magic), not its last line", p.LastError)
	}
	t.Logf("last_error: %s", *p.LastError)
	spawns := len(find(d.records(), "engine.spawned", "pool_id", "bad"))
	if spawns > 3 {
		t.Errorf("%d engines spawned for a corrupt model, want at most max_failures+1 = 3", spawns)
	}
	time.Sleep(500 * time.Millisecond) // the breaker holds: no more attempts
	if again := len(find(d.records(), "engine.spawned", "pool_id", "bad")); again != spawns {
		t.Errorf("spawns went on after the breaker opened: %d -> %d", spawns, again)
	}
}

// Six long completions on a --parallel 2 engine with llama-server's default
// HTTP threads (max(parallel+2, cores-1)) take every thread, so liveness
// probes time out while the engine works flat out. The engine is busy, not
// dead: no restart, no request cut. (Before, three timeouts in a row
// killed it in the middle of the load.) The liveness settings are tighter
// than the defaults so the old behaviour would show within seconds.
func TestLlamaBusyEngineIsNotKilled(t *testing.T) {
	l := findLlama(t)
	d, pools := startLlama(t, []string{"llama"}, l.pool("llama", l.model("tiny-a.gguf"), nil,
		// busy_grace far beyond the load, even on a crowded CI box: the
		// ceiling itself is tested with the simulator (actors).
		"liveness: {interval: 1s, timeout: 500ms, failure_threshold: 3, busy_grace: 15m}"))
	pid := pools["llama"].pid()
	url := d.engineURL("llama")
	const clients, n = 6, 500
	// Rounds of six completions until a probe has timed out on the busy
	// engine (at least one round, at most maxRounds): how long one round
	// keeps every HTTP thread taken depends on the machine, and the test
	// proves nothing until a probe has met the saturated engine.
	const maxRounds = 5
	// Meanwhile health shows the real queue, scraped on its own schedule.
	var maxProcessing float64
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			var h struct {
				Metrics struct {
					RequestsProcessing *float64 `json:"requests_processing"`
				} `json:"metrics"`
			}
			if code, err := d.do("GET", "/v1/pools/llama/health", "", &h); err == nil && code == 200 && h.Metrics.RequestsProcessing != nil {
				mu.Lock()
				maxProcessing = max(maxProcessing, *h.Metrics.RequestsProcessing)
				mu.Unlock()
			}
		}
	}()
	start := time.Now()
	rounds := 0
	for rounds < maxRounds {
		rounds++
		results := make([]<-chan completionResult, clients)
		for i := range results {
			results[i] = goCompletion(url, n)
		}
		for _, ch := range results {
			waitCompletion(t, ch, n)
		}
		if len(find(d.records(), "probe.liveness_busy", "pool_id", "llama")) > 0 {
			break
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d rounds of %d completions of %d tokens took %s; most requests_processing seen in health: %g",
		rounds, clients, n, time.Since(start).Round(time.Millisecond), maxProcessing)
	recs := d.records()
	if m := find(recs, "pool.failure", "pool_id", "llama"); len(m) > 0 {
		t.Fatalf("the busy engine was failed: %s", m[0].Raw)
	}
	if s := d.llamaStatus("llama"); s.State != "ready" || s.PID == nil || *s.PID != pid {
		t.Fatalf("after the load the pool is %s with pid %v, want ready with pid %d", s.State, s.PID, pid)
	}
	busy := find(recs, "probe.liveness_busy", "pool_id", "llama")
	if len(busy) == 0 {
		// Seen on a quiet host: the daemon's kept-alive probe connection keeps
		// an HTTP thread of its own, so its probes are answered however busy
		// the others are. No restart and no cut request is then the whole
		// result; the busy judgement itself is tested with the simulator
		// (actors/liveness_test.go), which can be made to hang while working.
		t.Logf("no probe timed out in %d rounds: the engine's HTTP threads were never all taken for the probe", rounds)
	} else {
		b, _ := json.Marshal(busy[0].Fields["evidence"])
		t.Logf("%d busy probes, first evidence %s", len(busy), b)
	}
	if maxProcessing < 1 {
		t.Error("health never showed a request processing during the load")
	}
}
