package actors

import (
	"testing"
	"time"
)

// A line the engine prints triggers a readiness probe at once: with a poll
// period of an hour, the pool still becomes ready, because the simulator
// prints its "ready" line as it starts answering 200.
func TestOutputLineTriggersReadinessProbe(t *testing.T) {
	h := newHarness(t, nil)
	cfg := simPool("p1", "--load-time", "300ms")
	pid := h.sys.Root.Spawn(NewPoolProps(cfg, PoolDeps{Registry: h.reg, Clock: h.clock, Logger: h.logger(),
		readinessPoll: func(time.Duration) time.Duration { return time.Hour }}))
	h.pools[cfg.ID] = pid
	st := h.waitState("p1", StateReady)
	if !st.Ready || st.PID == nil {
		t.Fatalf("ready status incomplete: %+v", st)
	}
}
