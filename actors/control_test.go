package actors

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/internal/clock"
)

func (h *harness) lease(id string) *LeaseReply {
	return ask(h, h.reg, &AcquireLease{PoolID: id})
}

func (h *harness) release(id, lease string) *ReleaseReply {
	return ask(h, h.reg, &ReleaseLease{PoolID: id, LeaseID: lease})
}

func TestDrainWaitsForLastLease(t *testing.T) {
	h := newHarness(t, nil)
	pid := h.spawn(simPool("p1"))
	h.waitState("p1", StateReady)
	l1, l2 := h.lease("p1"), h.lease("p1")
	if l1.Err != nil || l2.Err != nil || l2.Lease.ActiveLeases != 2 {
		t.Fatalf("leases: %+v %+v", l1, l2)
	}
	r := ask(h, pid, &Drain{Deadline: time.Minute})
	if r.State != StateDraining {
		t.Fatalf("drain answered %v", r.State)
	}
	st := h.get("p1")
	if st.Ready || !st.Draining || st.ActiveLeases != 2 {
		t.Fatalf("draining status: %+v", st)
	}
	if l := h.lease("p1"); l.Err == nil || l.Err.Code != CodePoolDraining {
		t.Fatalf("lease while draining: %+v", l)
	}
	// Idempotent.
	if r := ask(h, pid, &Drain{Deadline: time.Minute}); r.State != StateDraining || r.Err != nil {
		t.Fatalf("second drain: %+v", r)
	}
	h.release("p1", l1.Lease.LeaseID)
	if st := h.get("p1"); st.State != StateDraining {
		t.Fatalf("stopped with a lease still held: %v", st.State)
	}
	h.release("p1", l2.Lease.LeaseID)
	st = h.waitState("p1", StateStopped)
	if st.LastDrain == nil || st.LastDrain.Forced || st.LastDrain.FinalLeases != 0 || st.PID != nil {
		t.Fatalf("drain result: %+v", st.LastDrain)
	}
}

func TestDrainForcedAtDeadline(t *testing.T) {
	clk := clock.NewFollowingFake(time.Unix(1_700_000_000, 0))
	h := newHarness(t, clk)
	pid := h.spawn(simPool("p1"))
	h.waitState("p1", StateReady)
	l := h.lease("p1")
	ask(h, pid, &Drain{Deadline: 5 * time.Second})
	clk.Advance(5 * time.Second)
	st := h.waitState("p1", StateStopped)
	if st.LastDrain == nil || !st.LastDrain.Forced || st.LastDrain.FinalLeases != 1 || st.ActiveLeases != 0 {
		t.Fatalf("forced drain: %+v (leases %d)", st.LastDrain, st.ActiveLeases)
	}
	if r := h.release("p1", l.Lease.LeaseID); r.Err == nil || r.Err.Code != CodeLeaseNotFound {
		t.Fatalf("releasing a dropped lease: %+v", r)
	}
}

func TestDrainDuringPreloadAndBackoffIsHonoured(t *testing.T) {
	h := newHarness(t, nil)
	pid := h.spawn(simPool("p1", "--load-time", "1h"))
	h.waitState("p1", StatePreload)
	ask(h, pid, &Drain{Deadline: time.Minute})
	st := h.waitState("p1", StateStopped)
	if st.PID != nil {
		t.Fatalf("engine kept after drain in preload: %+v", st)
	}

	cfg := simPool("p2", "--exit-immediately")
	cfg.Restart.Initial = time.Hour
	pid2 := h.spawn(cfg)
	h.waitState("p2", StateBackoff)
	ask(h, pid2, &Drain{Deadline: time.Minute})
	h.waitState("p2", StateStopped)
	time.Sleep(0)
	if st := h.get("p2"); st.State != StateStopped || st.NextRestartAtMS != nil {
		t.Fatalf("backoff pool after drain: %+v", st)
	}
}

func TestLeaseReleaseNeverNegative(t *testing.T) {
	h := newHarness(t, nil)
	h.spawn(simPool("p1"))
	h.waitState("p1", StateReady)
	l := h.lease("p1")
	if r := h.release("p1", l.Lease.LeaseID); r.Err != nil || r.ActiveLeases != 0 {
		t.Fatalf("release: %+v", r)
	}
	if r := h.release("p1", l.Lease.LeaseID); r.Err == nil || r.Err.Code != CodeLeaseNotFound {
		t.Fatalf("double release: %+v", r)
	}
	if r := h.release("p1", "ls_unknown"); r.Err == nil || r.Err.Code != CodeLeaseNotFound {
		t.Fatalf("unknown release: %+v", r)
	}
	if r := h.release("nope", "x"); r.Err == nil || r.Err.Code != CodePoolNotFound {
		t.Fatalf("unknown pool: %+v", r)
	}
	if st := h.get("p1"); st.ActiveLeases != 0 {
		t.Fatalf("active leases %d", st.ActiveLeases)
	}
}

// Thousands of concurrent allocations and releases, with slots: the count
// never goes negative, never exceeds slots, and ends at exactly what is held.
func TestLeasesConcurrent(t *testing.T) {
	h := newHarness(t, nil)
	a, b := simPool("a"), simPool("b")
	a.Slots, b.Slots = 8, 8
	h.spawn(a)
	h.spawn(b)
	h.waitState("a", StateReady)
	h.waitState("b", StateReady)
	var wg sync.WaitGroup
	var held sync.Map
	var over atomic.Int32
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				var r *LeaseReply
				if i%2 == 0 {
					r = ask(h, h.reg, &Place{})
				} else {
					r = h.lease([]string{"a", "b"}[w%2])
				}
				if r.Err != nil {
					if r.Err.Code != CodePoolBusy && r.Err.Code != CodePoolUnavailable {
						over.Add(1)
					}
					continue
				}
				if r.Lease.ActiveLeases > 8 || r.Lease.ActiveLeases < 1 {
					over.Add(1)
				}
				if _, dup := held.LoadOrStore(r.Lease.LeaseID, r.Lease.PoolID); dup {
					over.Add(1)
				}
				if i%3 != 0 {
					rr := h.release(r.Lease.PoolID, r.Lease.LeaseID)
					if rr.Err != nil || rr.ActiveLeases < 0 {
						over.Add(1)
					}
					held.Delete(r.Lease.LeaseID)
					// a second release must fail, not go negative
					if rr2 := h.release(r.Lease.PoolID, r.Lease.LeaseID); rr2.Err == nil {
						over.Add(1)
					}
				}
			}
		}(w)
	}
	wg.Wait()
	if over.Load() != 0 {
		t.Fatalf("%d invariant violations", over.Load())
	}
	count := map[string]int{}
	held.Range(func(_, v any) bool { count[v.(string)]++; return true })
	for _, id := range []string{"a", "b"} {
		if st := h.get(id); st.ActiveLeases != count[id] || st.ActiveLeases > 8 {
			t.Fatalf("pool %s: registry says %d leases, callers hold %d", id, st.ActiveLeases, count[id])
		}
	}
}

func TestPlacementPicksFewestLeases(t *testing.T) {
	h := newHarness(t, nil)
	for _, id := range []string{"a", "b", "c"} {
		h.spawn(simPool(id))
	}
	for _, id := range []string{"a", "b", "c"} {
		h.waitState(id, StateReady)
	}
	h.lease("a")
	h.lease("b")
	r := ask(h, h.reg, &Place{})
	if r.Err != nil || r.Lease.PoolID != "c" {
		t.Fatalf("placement: %+v", r)
	}
	r = ask(h, h.reg, &Place{PoolIDs: []string{"b", "a"}})
	if r.Err != nil || r.Lease.PoolID != "a" { // tie on leases: id
		t.Fatalf("placement tie: %+v", r)
	}
	if r := ask(h, h.reg, &Place{PoolIDs: []string{"zz"}}); r.Err == nil || r.Err.Code != CodePoolNotFound {
		t.Fatalf("unknown id: %+v", r)
	}
	if r := ask(h, h.reg, &Place{ModelRef: "other"}); r.Err == nil || r.Err.Code != CodePoolUnavailable || r.Err.RetryAfterMS <= 0 {
		t.Fatalf("no match: %+v", r)
	}
}

func TestReloadSucceeds(t *testing.T) {
	h := newHarness(t, nil)
	pid := h.spawn(simPool("p1"))
	old := h.waitState("p1", StateReady)
	res := make(chan ReloadResult, 1)
	r := ask(h, pid, &Reload{ModelRef: "test/model-b", EngineVersion: "v2", Deadline: -1, Result: res})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if r2 := ask(h, pid, &Reload{ModelRef: "x", Deadline: -1}); r2.Err == nil || r2.Err.Code != CodeReloadInProgress {
		t.Fatalf("second reload: %+v", r2)
	}
	out := <-res
	st := h.get("p1")
	if out.Result != "succeeded" || st.EngineVersion != "v2" || st.ModelRef != "test/model-b" || !st.Ready {
		t.Fatalf("reload: %+v, status %+v", out, st)
	}
	if *st.PID == *old.PID {
		t.Fatal("reload kept the old engine process")
	}
}

// A reload to a model that fails the preflight is refused at once: no drain,
// the engine keeps its pid, nothing is recorded as a reload or a failure.
func TestReloadToMissingModelRefusedByPreflight(t *testing.T) {
	h := newHarness(t, nil)
	pid := h.spawn(simPool("p1"))
	old := h.waitState("p1", StateReady)
	res := make(chan ReloadResult, 1)
	missing := filepath.Join(t.TempDir(), "model.gguf")
	r := ask(h, pid, &Reload{ModelRef: missing, EngineVersion: "v2", Deadline: -1, Result: res})
	if r.Err == nil || r.Err.Code != CodePreflightFailed || !strings.Contains(r.Err.Message, missing+": no such file or directory") {
		t.Fatalf("reload reply: %+v", r)
	}
	if r.State != StateReady {
		t.Fatalf("reply state %s, want ready", r.State)
	}
	st := h.get("p1")
	if !st.Ready || *st.PID != *old.PID || st.Reloading || st.LastReload != nil || st.LastError != nil || st.ModelRef != "test/model-a" || st.EngineVersion != "v1" {
		t.Fatalf("after a refused reload: %+v", st)
	}
	select {
	case out := <-res:
		t.Fatalf("a refused reload sent a result: %+v", out)
	default:
	}
	if logs := h.logs.String(); strings.Contains(logs, "drain.started") || !strings.Contains(logs, "reload.preflight_failed") {
		t.Fatalf("want reload.preflight_failed and no drain; logs:\n%s", logs)
	}
}

func TestReloadToCrashingCommandRollsBack(t *testing.T) {
	h := newHarness(t, nil)
	cfg := simPool("p1")
	pid := h.spawn(cfg)
	h.waitState("p1", StateReady)
	bad := cfg
	bad.Command = append(append([]string{}, cfg.Command...), "--exit-immediately")
	bad.EngineVersion = "v2"
	res := make(chan ReloadResult, 1)
	ask(h, pid, &Reload{Config: &bad, Deadline: -1, Result: res})
	out := <-res
	if st := h.get("p1"); out.Result != "rolled_back" || !st.Ready || st.EngineVersion != "v1" {
		t.Fatalf("rollback: %+v %+v", out, st)
	}
	_ = fmt.Sprint()
}

// A config change for a pool an operator stopped is taken but does not start it.
func TestConfigChangeOnStoppedPoolKeepsItStopped(t *testing.T) {
	h := newHarness(t, nil)
	cfg := simPool("p1")
	pid := h.spawn(cfg)
	h.waitState("p1", StateReady)
	ask(h, pid, &Drain{Deadline: 0})
	h.waitState("p1", StateStopped)
	next := cfg
	next.EngineVersion = "v9"
	r := ask(h, pid, &Reload{Config: &next, Deadline: -1})
	if st := h.get("p1"); r.Err != nil || st.State != StateStopped || st.EngineVersion != "v9" || st.PID != nil {
		t.Fatalf("reply %+v, status %+v", r, st)
	}
	ask(h, pid, &Start{})
	if st := h.waitState("p1", StateReady); st.EngineVersion != "v9" {
		t.Fatalf("start ran the old config: %+v", st)
	}
}
