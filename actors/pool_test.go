package actors

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/internal/clock"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

func TestPoolBecomesReady(t *testing.T) {
	h := newHarness(t, nil)
	h.spawn(simPool("p1", "--load-time", "200ms"))
	st := h.waitState("p1", StateReady)
	if !st.Ready || !st.Live || st.PID == nil || st.URL == nil || st.Draining {
		t.Fatalf("ready status incomplete: %+v", st)
	}
	resp, err := http.Get(*st.URL + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("engine at %s not healthy: %v %v", *st.URL, resp, err)
	}
	resp.Body.Close()
	if st.RestartCount != 0 || st.LastError != nil {
		t.Fatalf("fresh pool has restart_count %d, last_error %v", st.RestartCount, st.LastError)
	}
}

// A SIGKILLed engine is restarted after a growing, jittered delay. The fake
// clock jumps over the delays; they are hours, so real time never gets
// there first however slow the machine.
func TestPoolKilledEngineRestartsWithGrowingBackoff(t *testing.T) {
	clk := clock.NewFollowingFake(time.Unix(1_700_000_000, 0))
	h := newHarness(t, clk)
	cfg := simPool("p1")
	cfg.Restart.Initial, cfg.Restart.Max = time.Hour, 100*time.Hour
	h.spawn(cfg)
	st := h.waitState("p1", StateReady)
	var delays []time.Duration
	for i := 0; i < 3; i++ {
		if err := syscall.Kill(*st.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		b := h.waitState("p1", StateBackoff)
		if b.LastError == nil || !strings.Contains(*b.LastError, "SIGKILL") {
			t.Fatalf("last_error should name the signal: %v", b.LastError)
		}
		d := time.Duration(*b.NextRestartAtMS-b.StateSinceMS) * time.Millisecond // both stamped as the failure was handled
		delays = append(delays, d)
		clk.Advance(d + time.Millisecond) // next_restart_at_ms is rounded down to the ms
		st = h.waitState("p1", StateReady)
		if st.RestartCount != i+1 {
			t.Fatalf("restart_count %d after %d restarts", st.RestartCount, i+1)
		}
	}
	for i, want := range []time.Duration{time.Hour, 2 * time.Hour, 4 * time.Hour} {
		if !within(delays[i], want, 0.1) {
			t.Fatalf("delay %d = %v, want %v ±10%% (all: %v)", i, delays[i], want, delays)
		}
	}
}

// A crashed engine with restart.initial 0 is replaced at once: the backoff
// of 0 goes through no timer (the clock here never fires an AfterFunc due
// at once, so a restart waiting for one would never come), and the
// replacement starts only after the old engine and its process group are
// gone.
func TestPoolZeroBackoffRestartsWithoutATimer(t *testing.T) {
	clk := &noDueTimers{Clock: clock.Real{}}
	h := newHarness(t, clk)
	cfg := simPool("p1")
	cfg.Restart.Initial, cfg.Restart.Max, cfg.Restart.Jitter = 0, 0, 0
	h.spawn(cfg)
	st := h.waitState("p1", StateReady)
	for i := 0; i < 3; i++ {
		old := *st.PID
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		h.waitState("p1", StateBackoff)
		st = h.waitState("p1", StateReady)
		if st.PID == nil || *st.PID == old || st.RestartCount != i+1 {
			t.Fatalf("after kill %d of pid %d: pid %v, restart_count %d", i+1, old, st.PID, st.RestartCount)
		}
		if !gone(old) || !groupGone(old) {
			t.Fatalf("engine %d (or its group) still there after its replacement %d started", old, *st.PID)
		}
	}
	if n := clk.swallowed.Load(); n != 0 {
		t.Fatalf("%d AfterFunc(d <= 0) armed during the crashes, want none", n)
	}
}

// noDueTimers is a clock whose AfterFunc never runs a function due at
// once (d <= 0), and counts them; everything else is its Clock's.
type noDueTimers struct {
	clock.Clock
	swallowed atomic.Int64
}

func (c *noDueTimers) AfterFunc(d time.Duration, f func()) clock.Timer {
	if d > 0 {
		return c.Clock.AfterFunc(d, f)
	}
	c.swallowed.Add(1)
	t := time.AfterFunc(time.Hour, func() {}) // a Timer that never runs f
	t.Stop()
	return t
}

func TestPoolExitingAtOnceTripsBreaker(t *testing.T) {
	h := newHarness(t, nil)
	cfg := simPool("p1", "--exit-immediately", "--exit-code", "3")
	cfg.Restart.MaxFailures = 2
	h.spawn(cfg)
	h.waitState("p1", StateFailed)
	st := h.waitPID(t, "p1")
	if st.ConsecutiveFailures != 3 || st.Live || st.State != StateFailed {
		t.Fatalf("failed pool: %+v", st)
	}
	if st.LastError == nil || !strings.Contains(*st.LastError, "exit code 3") {
		t.Fatalf("last_error should carry the exit code: %v", st.LastError)
	}
	if !strings.Contains(*st.LastError, "; cause: ") || !strings.Contains(*st.LastError, "simulated --exit-immediately") {
		t.Fatalf("last_error should carry the engine's error line: %v", *st.LastError)
	}
}

func gone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

// groupGone waits (bounded) for every member of a process group to be gone:
// SIGKILLed processes take a moment to be torn down and reaped.
func groupGone(pgid int) bool {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPoolSIGTERMIgnoringEngineIsKilledAfterGrace(t *testing.T) {
	h := newHarness(t, nil)
	cfg := simPool("p1", "--ignore-sigterm")
	cfg.StopGrace = 300 * time.Millisecond
	pid := h.spawn(cfg)
	st := h.waitState("p1", StateReady)
	ask(h, pid, &Drain{Deadline: 0})
	end := h.waitState("p1", StateStopped)
	if !gone(*st.PID) || !groupGone(*st.PID) {
		t.Fatalf("engine %d survived its stop", *st.PID)
	}
	if end.LastDrain == nil || end.LastDrain.DurationMS < cfg.StopGrace.Milliseconds() {
		t.Fatalf("stop returned before stop_grace: %+v", end.LastDrain)
	}
	if !strings.Contains(h.logs.String(), `"signal":"SIGKILL"`) {
		t.Fatalf("engine.stopped should record SIGKILL; logs:\n%s", h.logs.String())
	}
}

func TestPoolForkingEngineLeavesNoProcess(t *testing.T) {
	h := newHarness(t, nil)
	pid := h.spawn(simPool("p1", "--fork-children", "3"))
	st := h.waitState("p1", StateReady)
	ask(h, pid, &Drain{Deadline: 0})
	h.waitState("p1", StateStopped)
	if !groupGone(*st.PID) {
		t.Fatalf("process group %d still has members after stop", *st.PID)
	}
}

// The clock jumps past startup_timeout once the engine runs, instead of
// the test waiting for it.
func TestPoolHungHealthFailsByStartupTimeout(t *testing.T) {
	clk := clock.NewFollowingFake(time.Now())
	h := newHarness(t, clk)
	cfg := simPool("p1", "--hang-health")
	cfg.StartupTimeout = time.Hour
	cfg.Readiness.Timeout = 100 * time.Millisecond
	cfg.Restart.Initial = time.Hour
	h.spawn(cfg)
	h.waitSpawned("p1")
	if st := h.get("p1"); st.State != StatePreload {
		t.Fatalf("state %s before startup_timeout", st.State)
	}
	clk.Advance(cfg.StartupTimeout)
	st := h.waitState("p1", StateBackoff)
	if st.LastError == nil || !strings.Contains(*st.LastError, "startup_timeout") {
		t.Fatalf("last_error: %v", st.LastError)
	}
	h.waitPID(t, "p1") // the hung engine is stopped, not left running
}

// waitSpawned waits (by polling the registry) until the pool has an engine.
func (h *harness) waitSpawned(id string) PoolStatus {
	h.t.Helper()
	var st PoolStatus
	testutil.Eventually(h.t, waitLimit, "pool "+id+" to spawn its engine", func() bool { st = h.get(id); return st.PID != nil })
	return st
}

// waitPID waits (by polling the registry) until the pool no longer has an engine.
func (h *harness) waitPID(t *testing.T, id string) PoolStatus {
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		if st := h.get(id); st.PID == nil {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pool %s kept its engine", id)
	return PoolStatus{}
}

func TestPoolHungHealthWhenReadyFailsLiveness(t *testing.T) {
	h := newHarness(t, nil)
	cfg := simPool("p1", "--hang-health-after", "300ms")
	cfg.Liveness = cfgLiveness(100*time.Millisecond, 100*time.Millisecond, 2)
	cfg.Restart.Initial = time.Hour
	h.spawn(cfg)
	h.waitState("p1", StateReady)
	st := h.waitState("p1", StateBackoff)
	if st.LastError == nil || !strings.Contains(*st.LastError, "liveness") {
		t.Fatalf("last_error: %v", st.LastError)
	}
	if st.LastHeartbeatMS == nil {
		t.Fatal("a ready engine with passing liveness should have had a heartbeat")
	}
}

func TestPoolMissingModelNeverSpawns(t *testing.T) {
	h := newHarness(t, nil)
	cfg := simPool("p1")
	cfg.ModelRef = filepath.Join(t.TempDir(), "missing.gguf")
	cfg.Restart.Initial = time.Hour
	h.spawn(cfg)
	st := h.waitState("p1", StateBackoff)
	if st.LastError == nil || !strings.Contains(*st.LastError, "missing.gguf") {
		t.Fatalf("last_error should name the model: %v", st.LastError)
	}
	if strings.Contains(h.logs.String(), "engine.spawned") {
		t.Fatal("an engine was spawned for a missing model")
	}
}

// A silent engine whose readiness probe hangs is stalled once stall_timeout
// passes on the pool's clock (which jumps there instead of the test
// waiting). The clock is years from the wall on purpose: the engine's
// activity stamps must be on it too.
func TestPoolStallTimeout(t *testing.T) {
	clk := clock.NewFollowingFake(time.Unix(1_700_000_000, 0))
	h := newHarness(t, clk)
	cfg := simPool("p1", "--hang-health")
	cfg.StallTimeout, cfg.StartupTimeout = 10*time.Minute, time.Hour
	cfg.Readiness.Timeout = time.Hour // the probe hangs: no answer is no change
	cfg.Restart.Initial = time.Hour
	pid := h.spawn(cfg)
	h.waitSpawned("p1")
	// Its last line, once it listens: no activity is stamped after it, so
	// the jump is a stall_timeout of silence.
	testutil.Eventually(t, waitLimit, "the engine's ready line", func() bool {
		l := ask(h, pid, &GetLogs{Tail: 1}).Lines
		return len(l) == 1 && strings.HasPrefix(l[0].Text, "sim-engine: ready")
	})
	clk.Advance(cfg.StallTimeout)
	st := h.waitState("p1", StateBackoff)
	if st.LastError == nil || !strings.Contains(*st.LastError, "stall") {
		t.Fatalf("last_error = %q, want a stall", deref(st.LastError))
	}
}

// The stall check compares the pool's clock with the engine's activity
// stamps, so both must come from that clock. Here the clock jumps in
// steps; between two steps the engine prints. It never went a stall_timeout
// without a line on that clock, so it must not be judged stalled, however
// far the steps take the clock from the wall.
func TestPoolNotStalledWhileTheEnginePrints(t *testing.T) {
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

func TestPoolStartFromFailedResetsBreaker(t *testing.T) {
	h := newHarness(t, nil)
	dir := t.TempDir()
	model := filepath.Join(dir, "m.gguf")
	cfg := simPool("p1")
	cfg.ModelRef = model
	cfg.Restart.MaxFailures = 0
	pid := h.spawn(cfg)
	h.waitState("p1", StateFailed)
	if err := os.WriteFile(model, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := ask(h, pid, &Start{})
	if r.Err != nil || !r.Changed {
		t.Fatalf("start: %+v", r)
	}
	st := h.waitState("p1", StateReady)
	if st.ConsecutiveFailures != 0 {
		t.Fatalf("breaker not reset: %+v", st)
	}
	if r := ask(h, pid, &Start{}); r.Changed || r.State != StateReady {
		t.Fatalf("start on a ready pool: %+v", r)
	}
}

// An engine that stayed ready for reset_after starts over at the initial
// delay. The delays are hours, jumped over (see
// TestPoolKilledEngineRestartsWithGrowingBackoff).
func TestPoolBackoffResetsAfterStableUptime(t *testing.T) {
	clk := clock.NewFollowingFake(time.Unix(1_700_000_000, 0))
	h := newHarness(t, clk)
	cfg := simPool("p1")
	cfg.Restart.Initial, cfg.Restart.Max, cfg.Restart.ResetAfter = time.Hour, 100*time.Hour, 10*time.Hour
	h.spawn(cfg)
	st := h.waitState("p1", StateReady)
	kill := func() time.Duration {
		if err := syscall.Kill(*st.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		b := h.waitState("p1", StateBackoff)
		d := time.Duration(*b.NextRestartAtMS-b.StateSinceMS) * time.Millisecond // both stamped as the failure was handled
		clk.Advance(d + time.Millisecond)
		st = h.waitState("p1", StateReady)
		return d
	}
	kill()
	if d := kill(); !within(d, 2*time.Hour, 0.1) {
		t.Fatalf("second delay %v, want 2h ±10%%", d)
	}
	clk.Advance(cfg.Restart.ResetAfter)
	if d := kill(); !within(d, time.Hour, 0.1) {
		t.Fatalf("after %v of uptime the delay is %v, want the initial 1h", cfg.Restart.ResetAfter, d)
	}
}

// restart_count counts restarts after failures only; starts counts every
// spawn. An operator's drain and start is no restart; a crash is.
func TestRestartCountCountsOnlyRestartsAfterFailures(t *testing.T) {
	h := newHarness(t, nil)
	pid := h.spawn(simPool("p1"))
	st := h.waitState("p1", StateReady)
	if st.RestartCount != 0 || st.Starts != 1 {
		t.Fatalf("first start: restart_count %d, starts %d; want 0, 1", st.RestartCount, st.Starts)
	}
	ask(h, pid, &Drain{Deadline: 0})
	h.waitState("p1", StateStopped)
	ask(h, pid, &Start{})
	st = h.waitState("p1", StateReady)
	if st.RestartCount != 0 || st.Starts != 2 {
		t.Fatalf("after drain + start: restart_count %d, starts %d; want 0, 2", st.RestartCount, st.Starts)
	}
	res := make(chan ReloadResult, 1)
	ask(h, pid, &Reload{ModelRef: "test/model-b", Deadline: -1, Result: res})
	if out := <-res; out.Result != "succeeded" {
		t.Fatalf("reload: %+v", out)
	}
	st = h.get("p1")
	if st.RestartCount != 0 || st.Starts != 3 {
		t.Fatalf("after a reload: restart_count %d, starts %d; want 0, 3", st.RestartCount, st.Starts)
	}
	if err := syscall.Kill(*st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.waitState("p1", StateBackoff)
	st = h.waitState("p1", StateReady)
	if st.RestartCount != 1 || st.Starts != 4 {
		t.Fatalf("after a crash: restart_count %d, starts %d; want 1, 4", st.RestartCount, st.Starts)
	}
	if !strings.Contains(h.logs.String(), `"restart_count":1,"starts":4`) {
		t.Fatalf("engine.spawned should log both counters; logs:\n%s", h.logs.String())
	}
}
