package supervisor

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/config"
)

// A pool removed by SIGHUP and added back while its old actor still drains
// is a new pool: the old actor can neither overwrite nor unregister it.
func TestReconfigureReAddDuringDrain(t *testing.T) {
	b := simPool("b")
	b.DrainDeadline = 300 * time.Millisecond
	td := startDaemon(t, "", simPool("a"), b)
	td.waitState("b", actors.StateReady)
	if code, _ := td.call("POST", "/v1/pools/b/leases", nil); code != 201 { // keeps the old b draining
		t.Fatalf("lease: %d", code)
	}
	_, old := td.call("GET", "/v1/pools/b", nil)
	oldPID := int(old["pid"].(float64))

	without := *td.cfg
	without.Pools = []config.Pool{td.cfg.Pools[0]}
	if ch := td.Reconfigure(&without); len(ch.Removed) != 1 {
		t.Fatalf("remove: %+v", ch)
	}
	with := without
	with.Pools = []config.Pool{td.cfg.Pools[0], b}
	if ch := td.Reconfigure(&with); len(ch.Added) != 1 {
		t.Fatalf("re-add: %+v", ch)
	}
	st := td.waitState("b", actors.StateReady)
	newPID := int(st["pid"].(float64))
	if newPID == oldPID {
		t.Fatal("the re-added pool reuses the removed pool's engine")
	}
	// The old engine goes away once its drain times out ...
	td.eventually("old engine stopped", func() bool { return syscall.Kill(oldPID, 0) != nil })
	td.eventually("removed pool retired (its actor gone)", func() bool {
		return strings.Contains(td.logs.String(), `"msg":"pool.retired","pool_id":"b"`)
	})
	// ... and the new pool is still listed, ready, with its own engine.
	code, st := td.call("GET", "/v1/pools/b", nil)
	if code != 200 || st["state"] != "ready" || int(st["pid"].(float64)) != newPID {
		t.Fatalf("re-added pool after the old one retired: %d %v", code, st["_raw"])
	}
}

// A change refused because a reload is running is not forgotten: the next
// SIGHUP with the same file applies it.
func TestReconfigureRefusedChangeIsRetried(t *testing.T) {
	a := simPool("a")
	td := startDaemon(t, "", a)
	td.waitState("a", actors.StateReady)
	slow := slowerVersion(a, "v2", "500ms")
	if ch := td.Reconfigure(td.configWith(slow)); len(ch.Changed) != 1 {
		t.Fatalf("first change: %+v", ch)
	}
	final := slow
	final.EngineVersion = "v3"
	cfg3 := td.configWith(final)
	if ch := td.Reconfigure(cfg3); len(ch.Refused) != 1 || len(ch.Changed) != 0 {
		t.Fatalf("change during a reload: %+v", ch)
	}
	td.eventually("first reload settled", td.poolHas("a", map[string]any{"reloading": false, "state": "ready"}))
	if ch := td.Reconfigure(cfg3); len(ch.Changed) != 1 {
		t.Fatalf("the refused change was forgotten: %+v", ch)
	}
	td.eventually("retried change applied (v3)", td.poolHas("a", map[string]any{"engine_version": "v3", "state": "ready"}))
}

// A GET right after a SIGHUP that changed a pool shows that pool's reload
// under way, not its old state: Reconfigure returns only once the registry
// has published what the changed pool pushed before it answered the
// Reload. Work queued ahead in the registry's mailbox makes that publish
// lag unless Reconfigure waits for it.
func TestReconfigureChangedPoolIsVisibleOnReturn(t *testing.T) {
	a := simPool("a")
	td := startDaemon(t, "", a)
	td.waitState("a", actors.StateReady)
	cfg2 := td.configWith(slowerVersion(a, "v2", "2s"))
	for i := 0; i < 20000; i++ { // an unknown pool's update: ignored, but the registry must read it first
		actors.SendRegistry(td.sys.Root, td.reg, &actors.StatusUpdate{Status: actors.PoolStatus{PoolID: "nobody"}})
	}
	if ch := td.Reconfigure(cfg2); len(ch.Changed) != 1 {
		t.Fatalf("change: %+v", ch)
	}
	if pr := td.view.Load().Pool("a"); !pr.Found || !pr.Status.Reloading {
		t.Fatalf("right after the SIGHUP the API shows pool a as %+v, want it reloading", pr.Status)
	}
	td.eventually("reload applied (v2)", td.poolHas("a", map[string]any{"engine_version": "v2", "state": "ready", "reloading": false}))
}

// slowerVersion is p at engine version v with an engine that loads for
// load: a change Reconfigure reloads, and a reload that lasts a while.
func slowerVersion(p config.Pool, v, load string) config.Pool {
	p.EngineVersion = v
	p.Command = append(append([]string{}, p.Command...), "--load-time", load)
	return p
}

// configWith is the daemon's running config with pools in place of its own.
func (td *testDaemon) configWith(pools ...config.Pool) *config.Config {
	c := *td.cfg
	c.Pools = pools
	return &c
}
