package actors

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/internal/clock"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// With a canary, a llama-server pool becomes ready only after a real
// one-token completion answered 2xx.
func TestCanaryRealLlamaReady(t *testing.T) {
	bin, models := preflightLlama(t)
	h := newHarness(t, nil)
	cfg := llamaPool("canary", bin, models+"/tiny-a.gguf")
	cfg.Canary.Enabled, cfg.Canary.Path, cfg.Canary.Body, cfg.Canary.Timeout = true, "/completion", `{"prompt":"a","n_predict":1}`, 30*time.Second
	h.spawn(cfg)
	h.waitState("canary", StateReady)
	logs := h.logs.String()
	ok := strings.Index(logs, `"msg":"engine.canary_ok"`)
	ready := strings.Index(logs, `"msg":"engine.ready"`)
	if ok < 0 || ready < 0 || ok > ready {
		t.Fatalf("engine.canary_ok (at %d) must come before engine.ready (at %d); logs:\n%s", ok, ready, logs)
	}
	deadline := time.Now().Add(30 * time.Second) // llama-server logs the request after answering it
	for !strings.Contains(h.logs.String(), "POST /completion 127.0.0.1 200") {
		if time.Now().After(deadline) {
			t.Fatalf("llama-server logged no completion; logs:\n%s", h.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A canary path the engine does not serve: the pool never becomes ready,
// each attempt fails with reason canary and last_error names the canary.
func TestCanaryRealLlama404NeverReady(t *testing.T) {
	bin, models := preflightLlama(t)
	h := newHarness(t, nil)
	cfg := llamaPool("c404", bin, models+"/tiny-a.gguf")
	cfg.Canary.Enabled, cfg.Canary.Path, cfg.Canary.Body, cfg.Canary.Timeout = true, "/no-such-path", `{}`, 30*time.Second
	cfg.Restart.MaxFailures = 0 // the first failure opens the breaker
	h.spawn(cfg)
	st := h.waitState("c404", StateFailed)
	if st.LastError == nil || !strings.Contains(*st.LastError, "canary POST /no-such-path: HTTP 404") {
		t.Fatalf("last_error = %v, want it to name the canary and its 404", st.LastError)
	}
	logs := h.logs.String()
	if strings.Contains(logs, `"to":"ready"`) {
		t.Fatalf("the pool became ready; logs:\n%s", logs)
	}
	if !strings.Contains(logs, `"msg":"pool.failure","pool_id":"c404","reason":"canary"`) {
		t.Fatalf("no pool.failure with reason canary; logs:\n%s", logs)
	}
	h.waitStatus("c404", func(s PoolStatus) bool { return s.PID == nil && s.State == StateFailed }) // the engine is stopped
}

// canary.idle_after: a ready pool whose engine sat idle runs the canary
// again (logged with idle true) and stays ready. The clock jumps past
// idle_after instead of the test waiting for it.
func TestCanaryRealLlamaIdleRerun(t *testing.T) {
	bin, models := preflightLlama(t)
	clk := clock.NewFollowingFake(time.Now())
	h := newHarness(t, clk)
	cfg := llamaPool("idle", bin, models+"/tiny-a.gguf")
	cfg.Canary.Enabled, cfg.Canary.Path, cfg.Canary.Body, cfg.Canary.Timeout = true, "/completion", `{"prompt":"a","n_predict":1}`, 30*time.Second
	cfg.Canary.IdleAfter = time.Hour
	cfg.Liveness.Interval = 100 * time.Millisecond
	cfg.Liveness.Timeout = 5 * time.Second
	h.spawn(cfg)
	h.waitState("idle", StateReady)
	canaries := func() int { return strings.Count(h.logs.String(), `"msg":"engine.canary_ok","pool_id":"idle"`) }
	for want := 2; want <= 3; want++ {
		clk.Advance(cfg.Canary.IdleAfter)
		testutil.Eventually(t, waitLimit, fmt.Sprintf("idle canary %d", want-1), func() bool { return canaries() >= want })
	}
	if logs := h.logs.String(); !strings.Contains(logs, `"idle":true`) || strings.Contains(logs, "canary.failed") {
		t.Fatalf("want idle canaries that pass; logs:\n%s", logs)
	}
	if st := h.get("idle"); st.State != StateReady {
		t.Fatalf("state %s after idle canaries", st.State)
	}
}
