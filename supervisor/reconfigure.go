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
	Added, Removed, Changed, Unchanged []string
}

// Reconfigure applies a new, already validated config (SIGHUP): added pools
// start, removed pools drain and stop, changed pools reload (with rollback),
// unchanged pools are not touched. Settings that need a restart (listen,
// log, auth, state_dir, gpu) are reported and kept as they are.
func (d *Daemon) Reconfigure(next *config.Config) Change {
	var ch Change
	if err := checkUsers(next.Pools); err != nil {
		d.log.Error("config.reload_failed", "err", err.Error(), "detail", "keeping the running config")
		return ch
	}
	old := map[string]config.Pool{}
	for _, p := range d.cfg.Pools {
		old[p.ID] = p
	}
	for _, p := range next.Pools {
		prev, ok := old[p.ID]
		delete(old, p.ID)
		switch {
		case !ok:
			ch.Added = append(ch.Added, p.ID)
			d.spawnPool(p)
		case prev.Equal(p):
			ch.Unchanged = append(ch.Unchanged, p.ID)
		default:
			ch.Changed = append(ch.Changed, p.ID)
			go d.applyChange(d.pools[p.ID], p)
		}
	}
	for id, p := range old {
		ch.Removed = append(ch.Removed, id)
		pid := d.pools[id]
		delete(d.pools, id)
		d.sys.Root.Send(pid, &actors.Drain{Deadline: -1, Reason: "config_removed"})
		go d.retire(id, pid, p.DrainDeadline+p.StopGrace+shutdownSlack)
	}
	for _, restartOnly := range []struct {
		name string
		same bool
	}{
		{"listen", d.cfg.Listen == next.Listen}, {"log", d.cfg.Log == next.Log}, {"auth", d.cfg.Auth == next.Auth},
		{"state_dir", d.cfg.StateDir == next.StateDir}, {"gpu", d.cfg.GPU == next.GPU},
	} {
		if !restartOnly.same {
			d.log.Warn("config.needs_restart", "key", restartOnly.name, "detail", "this setting is applied only at start; the running value is kept")
		}
	}
	kept := *next
	kept.Listen, kept.Log, kept.Auth, kept.StateDir, kept.GPU = d.cfg.Listen, d.cfg.Log, d.cfg.Auth, d.cfg.StateDir, d.cfg.GPU
	d.cfg = &kept
	d.log.Info("config.reloaded", "added", ch.Added, "removed", ch.Removed, "changed", ch.Changed, "unchanged", len(ch.Unchanged))
	return ch
}

// retire drains a removed pool, then stops its actor and forgets it.
func (d *Daemon) retire(id string, pid *actor.PID, limit time.Duration) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(limit)
		for time.Now().Before(deadline) {
			ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
			pr, err := d.pool(ctx, id)
			cancel()
			if err != nil || pr.Status.State == actors.StateStopped && pr.Status.PID == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	<-done
	_ = d.sys.Root.StopFuture(pid).Wait()
	d.sys.Root.Send(d.reg, &actors.UnregisterPool{PoolID: id})
	d.metrics.Forget(id)
}

// applyChange reloads one changed pool and logs a refusal (a reload already
// running): the operator must send SIGHUP again once it has settled.
func (d *Daemon) applyChange(pid *actor.PID, p config.Pool) {
	res, err := d.sys.Root.RequestFuture(pid, &actors.Reload{Config: &p, Deadline: -1}, askTimeout).Result()
	if err != nil {
		d.log.Error("config.change_failed", "pool_id", p.ID, "err", err.Error())
		return
	}
	if cr := res.(*actors.CommandReply); cr.Err != nil {
		d.log.Error("config.change_failed", "pool_id", p.ID, "err", cr.Err.Error(),
			"detail", "the pool keeps its running config; send SIGHUP again once it has settled")
	}
}
