package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/engine"
)

// The inference canary (config canary:, off by default): once the
// readiness probe answers 2xx, a pool with a canary POSTs its body to its
// path and becomes ready only when that answers 2xx within its timeout.
// Any other answer, or none, is a preload failure with reason "canary"
// (last_error names the canary, its path and what it got), handled like any
// failed preload (backoff, then the breaker). The startup timeout keeps
// running while it waits.
//
// With canary.idle_after, a ready pool runs it again once the engine has
// been idle that long: no canary and no requests in flight in its metrics
// (metrics_path; without it, only the canaries count) for idle_after. The
// check rides on successful liveness probes. A failed idle canary counts
// like a failed liveness probe (logged as canary.failed); at
// liveness.failure_threshold in a row the engine fails with reason canary.

type canaryResult struct {
	gen  uint64
	idle bool // the idle re-run of a ready pool, not the preload's
	err  error
	dur  time.Duration
}

func (*canaryResult) poolMessage() {}

// canaryBodyLimit is how much of the canary's answer is read.
const canaryBodyLimit = 1 << 20

// maybeIdleCanary runs the canary again if the ready engine has been idle
// for canary.idle_after (called on a successful liveness probe).
func (a *pool) maybeIdleCanary(now time.Time) {
	c := a.cfg.Canary
	if !c.Enabled || c.IdleAfter <= 0 || a.canaryRunning || a.st.State != StateReady || a.readyCtx == nil {
		return
	}
	last := a.canaryAt
	if a.busyAt.After(last) {
		last = a.busyAt
	}
	if now.Sub(last) < c.IdleAfter {
		return
	}
	a.canaryRunning = true
	ctx, gen, cfg, url := a.readyCtx, a.gen, a.cfg, *a.st.URL
	go func() {
		start := a.d.Clock.Now()
		err := runCanary(ctx, a.d.ProbeClient, url, cfg)
		if ctx.Err() != nil {
			return
		}
		SendPool(a.root, a.self, &canaryResult{gen: gen, idle: true, err: err, dur: a.d.Clock.Since(start)})
	}()
}

// onIdleCanary applies an idle canary's answer (ready or draining).
func (a *pool) onIdleCanary(m *canaryResult) {
	if m.gen != a.gen || a.proc == nil || a.stopReq {
		return
	}
	a.canaryRunning = false
	a.canaryAt = a.now()
	if m.err == nil {
		a.log.Info("engine.canary_ok", "pid", a.procPid(), "path", a.cfg.Canary.Path, "duration_ms", m.dur.Milliseconds(), "idle", true)
		return
	}
	a.liveFails++
	a.log.Warn("canary.failed", "pid", a.procPid(), "failures", a.liveFails,
		"threshold", a.cfg.Liveness.FailureThreshold, "last_error", m.err.Error())
	if a.liveFails >= a.cfg.Liveness.FailureThreshold {
		a.st.Live = false
		a.fail(ReasonCanary, fmt.Errorf("idle canary failed (%d liveness failures in a row): %w", a.liveFails, m.err))
	}
}

// startCanary runs the canary in a goroutine (preload, after readiness).
func (a *pool) startCanary() {
	ctx, cancel := context.WithCancel(context.Background())
	if old := a.cancel; old != nil {
		a.cancel = func() { cancel(); old() }
	} else {
		a.cancel = cancel
	}
	gen, cfg, url := a.gen, a.cfg, *a.st.URL
	go func() {
		start := a.d.Clock.Now()
		err := runCanary(ctx, a.d.ProbeClient, url, cfg)
		if ctx.Err() != nil {
			return
		}
		SendPool(a.root, a.self, &canaryResult{gen: gen, err: err, dur: a.d.Clock.Since(start)})
	}()
}

// onCanary applies the canary's answer (preload only, same engine).
func (a *pool) onCanary(m *canaryResult) {
	if m.idle {
		a.onIdleCanary(m)
		return
	}
	if m.gen != a.gen || a.st.State != StatePreload || a.proc == nil {
		return
	}
	if m.err != nil {
		a.fail(ReasonCanary, m.err)
		return
	}
	a.log.Info("engine.canary_ok", "pid", a.procPid(), "path", a.cfg.Canary.Path, "duration_ms", m.dur.Milliseconds(), "idle", false)
	a.becomeReady()
	a.canaryAt = a.now()
}

// runCanary POSTs the canary body (with ${MODEL_REF} replaced, JSON-escaped)
// and wants a 2xx answer.
func runCanary(ctx context.Context, client *http.Client, baseURL string, cfg config.Pool) error {
	c := cfg.Canary
	ref, _ := json.Marshal(cfg.ModelRef)
	body := strings.ReplaceAll(c.Body, "${MODEL_REF}", string(ref[1:len(ref)-1]))
	status, b, err := engine.Request(ctx, client, http.MethodPost, baseURL+c.Path, "application/json",
		strings.NewReader(body), c.Timeout, canaryBodyLimit)
	switch {
	case err != nil && status == 0:
		return fmt.Errorf("canary POST %s (timeout %s): %w", c.Path, c.Timeout, err)
	case err != nil:
		return fmt.Errorf("canary POST %s: reading the answer: %w", c.Path, err)
	}
	if status/100 != 2 {
		snippet := strings.TrimSpace(string(b))
		if len(snippet) > 200 {
			snippet = snippet[:200] + "…"
		}
		return fmt.Errorf("canary POST %s: HTTP %d %s", c.Path, status, snippet)
	}
	return nil
}
