package actors

import (
	"strings"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/internal/clock"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// A probe that times out while the engine keeps writing output is busy, not
// dead: it does not count towards failure_threshold, and only busy_grace
// without any answer fails the engine. (A hung engine that stays silent
// still fails after failure_threshold probes:
// TestPoolHungHealthWhenReadyFailsLiveness.) The probes time out in real
// time; the clock then jumps past busy_grace instead of the test waiting.
func TestPoolBusyEngineOutlivesThresholdUntilBusyGrace(t *testing.T) {
	clk := clock.NewFollowingFake(time.Now())
	h := newHarness(t, clk)
	cfg := simPool("p1", "--hang-health-after", "300ms", "--spam", "200")
	cfg.Liveness = cfgLiveness(100*time.Millisecond, 100*time.Millisecond, 2)
	const grace = time.Hour
	cfg.Liveness.BusyGrace = grace
	cfg.Restart.Initial = time.Hour
	h.spawn(cfg)
	ready := h.waitState("p1", StateReady)
	// More busy timeouts than failure_threshold, and the pool stays ready.
	testutil.Eventually(t, waitLimit, "three busy liveness timeouts", func() bool {
		return strings.Count(h.logs.String(), `"msg":"probe.liveness_busy"`) >= 3
	})
	if st := h.get("p1"); st.State != StateReady {
		t.Fatalf("state %s after busy timeouts within busy_grace; last_error %q", st.State, deref(st.LastError))
	}
	clk.Advance(grace)
	st := h.waitState("p1", StateBackoff)
	if st.LastError == nil || !strings.Contains(*st.LastError, "busy_grace") || !strings.Contains(*st.LastError, "output") {
		t.Fatalf("last_error = %v, want the busy_grace ceiling and the output evidence", st.LastError)
	}
	// Two silent timeouts would have failed it 0.5 s after the hang; busy
	// it lasts busy_grace after its last heartbeat.
	if took := time.UnixMilli(st.StateSinceMS).Sub(time.UnixMilli(*ready.ReadySinceMS)); took < grace {
		t.Errorf("failed %s after ready, before busy_grace %s", took, grace)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, `"msg":"probe.liveness_busy"`) {
		t.Error("no probe.liveness_busy record")
	}
	if strings.Contains(logs, `"msg":"probe.liveness_failed"`) {
		t.Error("a timeout with output counted as a liveness failure")
	}
}

// busy_grace 0 turns the busy rule off: every timeout is a failure.
func TestPoolBusyGraceZeroCountsEveryTimeout(t *testing.T) {
	h := newHarness(t, nil)
	cfg := simPool("p1", "--hang-health-after", "300ms", "--spam", "200")
	cfg.Liveness = cfgLiveness(100*time.Millisecond, 100*time.Millisecond, 2)
	cfg.Restart.Initial = time.Hour
	h.spawn(cfg)
	h.waitState("p1", StateReady)
	st := h.waitState("p1", StateBackoff)
	if st.LastError == nil || !strings.Contains(*st.LastError, "liveness failed 2 times") {
		t.Fatalf("last_error = %v, want two counted liveness failures", st.LastError)
	}
}
