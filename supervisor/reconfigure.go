package supervisor

import (
	"context"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/config"
)

// Change summarises what a SIGHUP did.
type Change struct {
	Added, Removed, Changed, Unchanged, Refused []string
}

// Reconfigure applies a new, already validated config (SIGHUP): added pools
// start, removed pools drain and stop, changed pools reload (with rollback),
// unchanged pools are not touched. A changed pool that refuses the change
// (a reload already running) keeps its running config, and that is what the
// daemon remembers, so the next SIGHUP sees it as changed again. Settings
// that need a restart (listen, log, auth, state_dir, gpu) are reported and
// kept as they are. Called from one goroutine (main's signal loop).
func (d *Daemon) Reconfigure(next *config.Config) Change {
	ch := Change{Added: []string{}, Removed: []string{}, Changed: []string{}, Unchanged: []string{}, Refused: []string{}}
	if err := CheckUsers(next.Pools); err != nil {
		d.log.Error("config.reload_failed", "err", err.Error(), "detail", "keeping the running config")
		return ch
	}
	old := map[string]config.Pool{}
	for _, p := range d.cfg.Pools {
		old[p.ID] = p
	}
	applied := make([]config.Pool, 0, len(next.Pools))
	for _, p := range next.Pools {
		prev, ok := old[p.ID]
		delete(old, p.ID)
		switch {
		case !ok:
			ch.Added = append(ch.Added, p.ID)
			d.spawnPool(p)
		case prev.Equal(p):
			ch.Unchanged = append(ch.Unchanged, p.ID)
		case d.applyChange(d.pools[p.ID], p):
			ch.Changed = append(ch.Changed, p.ID)
		default:
			ch.Refused = append(ch.Refused, p.ID)
			p = prev // still running the old config: remember that
		}
		applied = append(applied, p)
	}
	var touched []*actor.PID // added, changed and removed pools, for the barrier below
	for _, id := range ch.Added {
		touched = append(touched, d.pools[id])
	}
	for _, id := range ch.Changed { // each pushed its reloading status before it answered the Reload
		touched = append(touched, d.pools[id])
	}
	for id, p := range old {
		ch.Removed = append(ch.Removed, id)
		pid := d.pools[id]
		delete(d.pools, id)
		actors.SendPool(d.sys.Root, pid, &actors.Drain{Deadline: -1, Reason: "config_removed"})
		touched = append(touched, pid)
		go d.retire(id, pid, p.DrainDeadline+p.StopGrace+shutdownSlack)
	}
	d.settle(touched)
	for _, restartOnly := range []struct {
		name string
		same bool
	}{
		{"listen", d.cfg.Listen == next.Listen}, {"log", d.cfg.Log == next.Log}, {"auth", d.cfg.Auth == next.Auth},
		{"state_dir", d.cfg.StateDir == next.StateDir}, {"gpu", d.cfg.GPU == next.GPU},
		{"cgroup_parent", d.cfg.CgroupParent == next.CgroupParent},
	} {
		if !restartOnly.same {
			d.log.Warn("config.needs_restart", "key", restartOnly.name, "detail", "this setting is applied only at start; the running value is kept")
		}
	}
	kept := *next
	kept.Pools = applied
	kept.Listen, kept.Log, kept.Auth, kept.StateDir, kept.GPU = d.cfg.Listen, d.cfg.Log, d.cfg.Auth, d.cfg.StateDir, d.cfg.GPU
	kept.CgroupParent = d.cfg.CgroupParent
	d.cfg = &kept
	d.setPoolConfigs(applied)
	d.log.Info("config.reloaded", "added", ch.Added, "removed", ch.Removed, "changed", ch.Changed,
		"refused", ch.Refused, "unchanged", len(ch.Unchanged))
	return ch
}

// settle returns once every pool actor in pids has handled what Reconfigure
// sent it (an added one its start, a changed one its Reload, a removed one
// its Drain) and the registry has taken the status updates that caused, so
// a GET right after a SIGHUP shows the added pools, the changed ones
// reloading and the removed ones draining, not the old state.
// Each pool answers a GetStatus after its earlier messages, and its status
// update to the registry is queued before that answer; the registry's Ping,
// sent after, is answered after that update was applied and published.
func (d *Daemon) settle(pids []*actor.PID) {
	if len(pids) == 0 {
		return
	}
	for _, pid := range pids {
		_, _ = actors.Ask(d.sys.Root, pid, &actors.GetStatus{}, askTimeout) // a pool already gone is settled
	}
	_, _ = actors.Ask(d.sys.Root, d.reg, &actors.Ping{}, askTimeout)
}

// applyChange reloads one changed pool, in order with the rest of the SIGHUP
// (the actor answers at once: it never blocks). It reports whether the pool
// took the change; a refusal is logged for the operator.
func (d *Daemon) applyChange(pid *actor.PID, p config.Pool) bool {
	cr, err := actors.Ask(d.sys.Root, pid, &actors.Reload{Config: &p, Deadline: -1}, askTimeout)
	if err != nil {
		d.log.Error("config.change_failed", "pool_id", p.ID, "err", err.Error())
		return false
	}
	if cr.Err != nil {
		d.log.Error("config.change_failed", "pool_id", p.ID, "err", cr.Err.Error(),
			"detail", "the pool keeps its running config; send SIGHUP again once it has settled")
		return false
	}
	return true
}

// retire waits for a removed pool's actor to stop its engine, then stops the
// actor and forgets the pool. It asks the actor itself, not the registry: the
// same id may already belong to a newly added pool.
func (d *Daemon) retire(id string, pid *actor.PID, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		res, err := actors.Ask(d.sys.Root, pid, &actors.GetStatus{}, askTimeout)
		if err != nil {
			break // the actor is gone already (or answered nonsense)
		}
		if st := res.Status; st.State == actors.StateStopped && st.PID == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = d.sys.Root.StopFuture(pid).Wait()
	actors.SendRegistry(d.sys.Root, d.reg, &actors.UnregisterPool{PoolID: id, PID: pid})
	ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
	defer cancel()
	_, err := d.pool(ctx, id)
	readded := err == nil
	if !readded {
		d.metrics.Forget(id)
	}
	d.log.Info("pool.retired", "pool_id", id, "readded", readded)
}
