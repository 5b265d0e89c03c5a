package actors

import (
	"strings"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/internal/clock"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// The stall check compares the pool's clock with the engine's activity
// stamps, so both must come from that clock. Here the clock jumps in
// steps; between two steps the engine prints. It never went a stall_timeout
// without a line on that clock, so it must not be judged stalled, however
// far the steps take the clock from the wall.
func TestStallCheckReadsThePoolClockWhileTheEnginePrints(t *testing.T) {
	clk := clock.NewFollowingFake(time.Now())
	h := newHarness(t, clk)
	cfg := simPool("p1", "--hang-health", "--spam", "200")
	cfg.StallTimeout = time.Minute
	cfg.StartupTimeout = time.Hour
	cfg.Readiness.Timeout = time.Hour // the probe hangs: no answer is no change
	cfg.Restart.Initial = time.Hour
	pid := h.spawn(cfg)
	h.waitState("p1", StatePreload)
	lastLine := func() string {
		r := ask(h, pid, &GetLogs{Tail: 1})
		if len(r.Lines) == 0 {
			return ""
		}
		return r.Lines[0].Text
	}
	const step = 15 * time.Second
	for i := range 13 { // 12 steps of 15 s: three stall timeouts on the pool's clock
		// The ask comes after the firings of the last Advance in the mailbox.
		if st := ask(h, pid, &GetStatus{}).Status; st.State != StatePreload {
			t.Fatalf("an engine printing all along was judged stalled after %s on the pool's clock: state %s, last_error %q",
				time.Duration(i)*step, st.State, deref(st.LastError))
		}
		if i == 12 {
			break
		}
		seen := lastLine()
		testutil.Eventually(t, waitLimit, "a new engine line", func() bool { l := lastLine(); return l != "" && l != seen })
		clk.Advance(step)
	}
}

// The inverse: a silent engine on a clock far from the wall is stalled once
// that clock passes stall_timeout.
func TestStallCheckReadsThePoolClockWhenTheEngineIsSilent(t *testing.T) {
	clk := clock.NewFollowingFake(time.Unix(1_700_000_000, 0))
	h := newHarness(t, clk)
	cfg := simPool("p1", "--hang-health")
	cfg.StallTimeout = time.Minute
	cfg.StartupTimeout = time.Hour
	cfg.Readiness.Timeout = time.Hour
	cfg.Restart.Initial = time.Hour
	pid := h.spawn(cfg)
	h.waitState("p1", StatePreload)
	testutil.Eventually(t, waitLimit, "the engine spawned", func() bool { return ask(h, pid, &GetStatus{}).Status.PID != nil })
	clk.Advance(cfg.StallTimeout)
	st := h.waitState("p1", StateBackoff)
	if st.LastError == nil || !strings.Contains(*st.LastError, "stall") {
		t.Fatalf("last_error = %v, want a stall", deref(st.LastError))
	}
}
