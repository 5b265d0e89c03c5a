package actors

import (
	"encoding/json"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// A start that arrives during a reload neither cancels nor strands it.
func TestStartDuringReloadLeavesReloadAlone(t *testing.T) {
	h := newHarness(t, nil)
	cfg := simPool("p1")
	pid := h.spawn(cfg)
	h.waitState("p1", StateReady)
	next := cfg
	next.EngineVersion = "v2"
	next.Command = append(append([]string{}, cfg.Command...), "--load-time", "300ms")
	res := make(chan ReloadResult, 1)
	ask(h, pid, &Reload{Config: &next, Deadline: -1, Result: res})
	if r := ask(h, pid, &Start{}); r.Changed || r.Err != nil {
		t.Fatalf("start during reload: %+v", r)
	}
	out := <-res
	if st := h.get("p1"); out.Result != "succeeded" || st.Reloading || st.EngineVersion != "v2" || !st.Ready {
		t.Fatalf("reload %+v, status %+v", out, st)
	}
}

// A reload out of failed closes the breaker (docs/contract.md §3).
func TestReloadFromFailedResetsBreaker(t *testing.T) {
	h := newHarness(t, nil)
	bad := simPool("p1", "--exit-immediately")
	bad.Restart.MaxFailures = 1
	pid := h.spawn(bad)
	h.waitState("p1", StateFailed)
	good := simPool("p1")
	good.Restart.MaxFailures = 1
	// A long backoff keeps the pool in backoff while the test looks (with
	// 10 ms it may already be preloading again).
	good.Restart.Initial, good.Restart.Max = time.Hour, time.Hour
	res := make(chan ReloadResult, 1)
	ask(h, pid, &Reload{Config: &good, Deadline: -1, Result: res})
	if out := <-res; out.Result != "succeeded" {
		t.Fatalf("reload: %+v", out)
	}
	st := h.get("p1")
	if st.ConsecutiveFailures != 0 {
		t.Fatalf("consecutive failures kept: %+v", st)
	}
	_ = syscall.Kill(*st.PID, syscall.SIGKILL) // one failure is within max_failures again
	if b := h.waitState("p1", StateBackoff); b.State != StateBackoff {
		t.Fatalf("after one crash: %v", b.State)
	}
}

// A drain that cancels a reload leaves the previous model in place.
func TestCancelledReloadKeepsPreviousModel(t *testing.T) {
	h := newHarness(t, nil)
	cfg := simPool("p1")
	pid := h.spawn(cfg)
	h.waitState("p1", StateReady)
	ask(h, pid, &Drain{Deadline: 0})
	h.waitState("p1", StateStopped)
	slow := cfg
	slow.ModelRef = "test/slow"
	slow.Command = append(append([]string{}, cfg.Command...), "--load-time", "1h")
	res := make(chan ReloadResult, 1)
	ask(h, pid, &Reload{ModelRef: "test/slow", Deadline: -1, Result: res})
	h.waitState("p1", StatePreload)
	r := ask(h, pid, &Drain{Deadline: 0})
	if out := <-res; out.Result != "cancelled" || r.State != StateDraining {
		t.Fatalf("reload %+v, drain reply %+v", out, r)
	}
	if st := h.waitState("p1", StateStopped); st.ModelRef != "test/model-a" {
		t.Fatalf("the unverified model stayed: %+v", st)
	}
}

// A fixed port another process holds is refused before spawning: the probe
// would otherwise reach the stranger and call the pool ready.
func TestFixedPortInUseIsRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h := newHarness(t, nil)
	cfg := simPool("p1")
	cfg.Port = ln.Addr().(*net.TCPAddr).Port
	cfg.Restart.Initial = time.Hour
	h.spawn(cfg)
	st := h.waitState("p1", StateBackoff)
	if st.LastError == nil || !strings.Contains(*st.LastError, "not free") || strings.Contains(h.logs.String(), "engine.spawned") {
		t.Fatalf("status %+v", st)
	}
}

// Stopping the actor while its engine preloads leaves no engine behind.
func TestActorStopDuringPreloadKillsEngine(t *testing.T) {
	h := newHarness(t, nil)
	pid := h.spawn(simPool("p1", "--load-time", "1h"))
	h.waitState("p1", StatePreload)
	var enginePID int
	deadline := time.Now().Add(waitLimit)
	for enginePID == 0 && time.Now().Before(deadline) {
		if st := h.get("p1"); st.PID != nil {
			enginePID = *st.PID
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := h.sys.Root.StopFuture(pid).Wait(); err != nil {
		t.Fatal(err)
	}
	delete(h.pools, "p1")
	if enginePID == 0 || !groupGone(enginePID) {
		t.Fatalf("engine %d survived its actor", enginePID)
	}
}

// Updates from an actor that is no longer the registered one are ignored
// (a removed pool still stopping while a new one with its id runs).
func TestRegistryIgnoresStaleActor(t *testing.T) {
	h := newHarness(t, nil)
	h.register(readyStatus("a"))
	stale := h.sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
	st := readyStatus("a")
	st.State, st.Ready = StateStopped, false
	SendRegistry(h.sys.Root, h.reg, &StatusUpdate{Status: st, PID: stale})
	SendRegistry(h.sys.Root, h.reg, &UnregisterPool{PoolID: "a", PID: stale})
	if got := h.get("a"); got.PoolID != "a" || got.State != StateReady {
		t.Fatalf("a stale actor changed the entry: %+v", got)
	}
}

func TestPoolStatusJSONNullEngineVersion(t *testing.T) {
	b, _ := json.Marshal(PoolStatus{PoolID: "a", State: StateStopped})
	if !strings.Contains(string(b), `"engine_version":null`) || strings.Count(string(b), `"engine_version":`) != 1 {
		t.Fatalf("empty engine_version: %s", b)
	}
	b, _ = json.Marshal(PoolStatus{PoolID: "a", EngineVersion: "b1"})
	if !strings.Contains(string(b), `"engine_version":"b1"`) {
		t.Fatalf("engine_version: %s", b)
	}
}
