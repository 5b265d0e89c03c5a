package actors

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/gpu"
)

// ---- drain ----

// handleDrain: at once draining (no new leases), then the engine stops when
// leases reach 0 or at the deadline. A negative deadline means the pool's
// drain_deadline. Idempotent: a second drain can only shorten the deadline.
func (a *pool) handleDrain(m *Drain) *CommandReply {
	deadline := m.Deadline
	if deadline < 0 {
		deadline = a.cfg.DrainDeadline
	}
	reason := m.Reason
	if reason == "" {
		reason = "drain"
	}
	if r := a.reload; r != nil {
		a.finishReload(ReloadCancelled, false, "cancelled by a drain ("+reason+")")
		if a.drain != nil {
			a.drain.then = nil // the drain now ends in stopped
		}
		if r.phase != phaseDrain {
			a.setCfg(r.old) // the new model never became ready: a later start runs the old one
		}
	}
	switch a.st.State {
	case StateStopped:
		return &CommandReply{State: StateStopped}
	case StateDraining:
		if a.drain != nil && !a.drain.stopping {
			a.drain.reason = reason
			a.armTimerIfSooner(deadline)
		}
		return &CommandReply{State: StateDraining}
	}
	a.beginDrain(deadline, reason, nil)
	// "draining" even when there was nothing to wait for and the pool is
	// already stopped: the drain was accepted and has run (docs/contract.md §4).
	return &CommandReply{State: StateDraining, Changed: true}
}

// beginDrain enters draining. From ready the engine keeps serving its leases;
// from any other state there is nothing to wait for and the engine stops now.
func (a *pool) beginDrain(deadline time.Duration, reason string, then func()) {
	wasReady := a.st.State == StateReady
	a.cancelTimer(tRestart)
	a.abandonTimersOnly()
	a.policy.NotReady()
	a.drain = &drainOp{start: a.now(), reason: reason, leases: -1, then: then}
	a.drainDeadlineAt = a.now().Add(deadline)
	a.transition(StateDraining, reason)
	a.log.Info("drain.started", a.withCID([]any{"reason", reason, "deadline_ms", deadline.Milliseconds()})...)
	if !wasReady {
		a.abandonRun() // a preload in flight is abandoned, not awaited
		a.drain.leases = 0
		a.drainStop(false)
		return
	}
	a.armTimer(tDrain, deadline)
	if a.scrapeFast != nil { // the engine reports its queue: read it now, then often
		a.scrapeFast.Store(true)
		select {
		case a.scrapeKick <- struct{}{}:
		default:
		}
	}
}

// armTimerIfSooner moves a drain's deadline earlier, never later: a second
// drain request (draining) with a shorter deadline re-arms tDrain, a longer
// one keeps the first.
func (a *pool) armTimerIfSooner(deadline time.Duration) {
	at := a.now().Add(deadline)
	if at.Before(a.drainDeadlineAt) {
		a.drainDeadlineAt = at
		a.armTimer(tDrain, deadline)
	}
}

// drainQueue is what a drain knows of the engine's in-flight requests.
type drainQueue int

const (
	queuePending drainQueue = iota // metrics_path set: waiting for a reading taken since the drain began
	queueKnown                     // drainOp.inFlight holds the latest such reading
	queueNone                      // the engine does not report its queue: leases alone decide
)

// onLeases takes the registry's count of a pool's active leases (any state;
// only a drain that has not begun stopping its engine uses it): a drain stops
// the engine once the count is 0 and nothing is in flight, or, past its
// deadline, once the count is known at all.
func (a *pool) onLeases(n int) {
	if a.drain == nil || a.drain.stopping {
		return
	}
	a.drain.leases = n
	a.drainMaybeStop()
}

// drainOnMetrics takes a reading of the engine's queue into a drain in
// progress. Only scrapes begun after the drain began count: an older 0 says
// nothing about a request that arrived since. A timeout keeps the drain
// waiting (the engine is busy); any other failure (metrics_path answering
// 404, a page without the series) means the engine cannot say, so leases
// alone decide, as for an engine without metrics_path.
func (a *pool) drainOnMetrics(m *engineMetrics) {
	d := a.drain
	if d == nil || d.stopping || m.at.Before(d.start) {
		return
	}
	switch {
	case m.err == nil && m.q.Reported:
		d.queue, d.inFlight = queueKnown, m.q.InFlight()
		if d.inFlight == 0 {
			d.zeros++
		} else {
			d.zeros = 0
		}
	case m.err == nil || !isTimeout(m.err):
		if d.queue == queuePending {
			d.queue = queueNone
			a.log.Info("drain.no_engine_queue", "metrics_path", a.cfg.MetricsPath, "detail", drainQueueWhy(m.err))
		}
	default:
		return // timed out: nothing learnt
	}
	a.drainMaybeStop()
}

// drainQueueWhy is the detail of drain.no_engine_queue: why the engine's
// queue cannot hold the drain (err is the scrape's, nil when the page lacks
// the series).
func drainQueueWhy(err error) string {
	if err != nil {
		return "scrape failed: " + err.Error() + "; the drain waits for leases only"
	}
	return "the engine reports no in-flight series; the drain waits for leases only"
}

// drainZeros is how many readings in a row must show nothing in flight
// before a drain stops the engine. llama-server counts a request as done
// when its slot is released, a moment before its HTTP thread has written
// the answer; a second reading (scrapeFastEvery later) lets that finish.
const drainZeros = 2

// drainIdle reports whether nothing holds the drain any more: no lease,
// and, where the engine reports its queue (metrics_path), nothing in flight
// in the last drainZeros readings taken since the drain began.
func (a *pool) drainIdle() bool {
	d := a.drain
	if d.leases != 0 {
		return false
	}
	if a.cfg.MetricsPath == "" || a.scrapeFast == nil {
		return true // no scraper for this engine: nothing else to wait for
	}
	switch d.queue {
	case queueKnown:
		return d.zeros >= drainZeros
	case queueNone:
		return true
	}
	return false
}

// drainMaybeStop ends a drain that has nothing left to wait for, or whose
// deadline has passed.
func (a *pool) drainMaybeStop() {
	switch {
	case a.drainIdle():
		a.drainStop(false)
	case a.drain.deadlinePassed && a.drain.leases >= 0:
		a.drainStop(true)
	}
}

// onDrainDeadline runs when drain_deadline (or the API's deadline_ms) is
// reached: the engine stops now, forced when leases or in-flight requests
// remain.
func (a *pool) onDrainDeadline() {
	d := a.drain
	if d == nil {
		return
	}
	switch {
	case d.leases >= 0:
		d.deadlinePassed = true
		a.drainStop(!a.drainIdle())
	case !d.deadlinePassed:
		// The registry has not told us the lease count yet (it
		// normally does within microseconds): give it a moment.
		d.deadlinePassed = true
		a.armTimer(tDrain, leaseCountGrace)
	default: // still no count: stop anyway rather than drain forever
		a.drainStop(true)
	}
}

// drainStop ends a drain's wait (once: later calls do nothing): it cancels
// tDrain and stops the engine, then finishDrain records the drain, forced
// when leases or in-flight requests remained, with the last lease count.
func (a *pool) drainStop(forced bool) {
	d := a.drain
	if d.stopping {
		return
	}
	d.stopping = true
	a.cancelTimer(tDrain)
	final := d.leases
	if final < 0 {
		final = 0
	}
	a.stopEngine(func() { a.finishDrain(forced, final) })
}

// finishDrain records a drain that has stopped its engine (draining; nothing
// when no drain runs): last_drain, drains_total and drain.finished with the
// final lease count (final[0], 0 when absent). A reload's drain then
// continues with the reload's next step (drainOp.then); any other drain ends
// in stopped.
func (a *pool) finishDrain(forced bool, final ...int) {
	d := a.drain
	if d == nil {
		return
	}
	a.drain = nil
	a.cancelTimer(tDrain)
	fl := 0
	if len(final) > 0 {
		fl = final[0]
	}
	dur := a.now().Sub(d.start)
	a.st.LastDrain = &DrainInfo{Forced: forced, DurationMS: dur.Milliseconds(), FinalLeases: fl}
	a.dirty = true
	a.d.Observer.Drain(a.cfg.ID, forced, dur)
	attrs := []any{"reason", d.reason, "forced", forced, "duration_ms", dur.Milliseconds(), "final_leases", fl}
	if d.queue == queueKnown {
		attrs = append(attrs, "final_in_flight", d.inFlight)
	}
	a.log.Info("drain.finished", attrs...)
	if d.then != nil {
		d.then()
		return
	}
	a.transition(StateStopped, d.reason+" done")
}

// ---- reload ----

// handleReload answers a Reload (the API's, or a SIGHUP's config change in
// m.Config). It refuses, touching nothing, while another reload runs
// (RELOAD_IN_PROGRESS), while draining (POOL_DRAINING; a SIGHUP config is
// taken, not started, in stopped and draining), and when the preflight of
// the new model and config fails (PREFLIGHT_FAILED: the engine keeps its pid,
// the pool its state and last_error). Otherwise it promises one
// ReloadResult on m.Result (when set) and one reload.finished: from ready it
// drains the old engine (drain_deadline or m.Deadline) first; from preload,
// backoff, stopped or failed (the breaker closes) it stops what runs and
// starts the new model at once (reloadStartNew). A new model that fails is
// rolled back to the old one (rollback).
func (a *pool) handleReload(m *Reload) *CommandReply {
	if a.reload != nil {
		return &CommandReply{State: a.st.State, Err: &Error{Code: CodeReloadInProgress, Message: "a reload of pool " + quote(a.cfg.ID) + " is already running"}}
	}
	if m.Config != nil && (a.st.State == StateStopped || a.st.State == StateDraining) {
		// A config change (SIGHUP) for a pool an operator stopped or is
		// draining: take the new config, but do not start the engine.
		a.setCfg(*m.Config)
		a.log.Info("config.applied", "state", a.st.State, "detail", "the engine is not started; POST /start runs the new config")
		return &CommandReply{State: a.st.State, Changed: true}
	}
	if a.drain != nil || a.st.State == StateDraining {
		return &CommandReply{State: a.st.State, Err: &Error{Code: CodePoolDraining, Message: "pool " + quote(a.cfg.ID) + " is draining"}}
	}
	next := a.cfg
	if m.Config != nil {
		next = *m.Config
	} else {
		next.ModelRef = m.ModelRef
		if m.EngineVersion != "" {
			next.EngineVersion = m.EngineVersion
		}
	}
	if err := a.reloadPreflight(next); err != nil {
		// Refused before anything is touched: no drain, the engine keeps its
		// pid, the pool keeps its state and its last_error.
		a.log.Warn("reload.preflight_failed", a.withCID([]any{"model_ref", next.ModelRef, "err", err.Error()})...)
		return &CommandReply{State: a.st.State, Err: &Error{Code: CodePreflightFailed, Message: "reload of pool " + quote(a.cfg.ID) + " refused: " + err.Error()}}
	}
	deadline := m.Deadline
	if deadline < 0 {
		deadline = a.cfg.DrainDeadline
	}
	if a.st.State == StateFailed { // docs/contract.md §3: a reload leaves failed with a closed breaker
		a.policy.Reset()
		a.st.ConsecutiveFailures = 0
	}
	a.reload = &reloadOp{old: a.cfg, new: next, start: a.now(), phase: phaseDrain, result: m.Result}
	a.st.Reloading = true
	a.dirty = true
	a.log.Info("reload.started", a.withCID([]any{"model_ref", next.ModelRef, "engine_version", next.EngineVersion,
		"from_model_ref", a.cfg.ModelRef, "from_engine_version", a.cfg.EngineVersion})...)
	switch a.st.State {
	case StateReady:
		a.beginDrain(deadline, "reload", a.reloadStartNew)
	default: // preload, backoff, stopped, failed: nothing to drain
		a.cancelTimer(tRestart)
		a.abandonRun()
		a.stopEngine(a.reloadStartNew)
	}
	return &CommandReply{State: a.st.State, Changed: true}
}

// preflightTimeout bounds the NVML snapshot of a reload preflight.
const preflightTimeout = 2 * time.Second

// reloadPreflight checks, in any state and before the running engine is
// touched, what the new config needs: the model file (engine.CheckModel),
// that the pool's user may read it (mode bits), host RAM and GPU memory.
// Memory the running engine holds comes back when it stops, so it counts as
// available: host RAM is MemAvailable plus the resident memory of the
// engine's process group; on a GPU the running engine uses, the bound is the
// device's total memory (NVML does not say what the engine holds), elsewhere
// its free memory. Without NVML (or with no devices or no
// min_free_vram_mib) the VRAM check is left to the preload's guardrail.
// Everything here is a stat, an 8-byte read, /proc reads and NVML queries:
// the reload answers in milliseconds.
func (a *pool) reloadPreflight(next config.Pool) error {
	if err := engine.CheckModel(next.ModelRef); err != nil {
		return err
	}
	if next.User != "" {
		cred, err := engine.LookupCredential(next.User)
		if err != nil {
			return fmt.Errorf("user %q: %w", next.User, err)
		}
		if err := engine.CheckReadableBy(next.ModelRef, cred); err != nil {
			return err
		}
	}
	if next.MinFreeRAMMiB > 0 {
		have, err := engine.MemAvailableMiB()
		if err != nil {
			return err
		}
		if a.proc != nil {
			have += engine.GroupRSSMiB(a.proc.Pgid())
		}
		if have < next.MinFreeRAMMiB {
			return fmt.Errorf("host RAM: %d MiB available (MemAvailable plus what the running engine holds), pool needs %d MiB (min_free_ram_mib)", have, next.MinFreeRAMMiB)
		}
	}
	if next.MinFreeVRAMMiB == 0 || len(next.Devices) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), preflightTimeout)
	defer cancel()
	snap, err := a.d.Guard.Snapshot(ctx)
	if err != nil || len(snap) == 0 {
		return nil // NVML unusable: the preload's guardrail says why, with its full checks
	}
	held := map[string]bool{}
	if a.proc != nil {
		for _, d := range a.st.Devices {
			held[d.UUID] = true
		}
	}
	for _, id := range next.Devices {
		d, ok := findDevice(snap, id)
		if !ok {
			return fmt.Errorf("gpu: device %s: no such device; %d present", id, len(snap))
		}
		have, what := d.MemoryFreeBytes>>20, "free"
		if held[d.UUID] {
			have, what = d.MemoryTotalBytes>>20, "in total (the running engine's memory comes back when it stops)"
		}
		if have < next.MinFreeVRAMMiB {
			return fmt.Errorf("gpu: device %s (%s): %d MiB %s, pool needs %d MiB (min_free_vram_mib)", id, d.UUID, have, what, next.MinFreeVRAMMiB)
		}
	}
	return nil
}

// findDevice finds a configured device (an index or a UUID) in a snapshot.
func findDevice(snap []gpu.Device, id string) (gpu.Device, bool) {
	for _, d := range snap {
		if d.UUID == id || strconv.Itoa(d.Index) == id {
			return d, true
		}
	}
	return gpu.Device{}, false
}

// reloadStartNew is a reload's second phase, once the old engine is gone:
// the pool takes the new config and preloads it (phase new). Without a
// reload in progress (a drain cancelled it) it does nothing.
func (a *pool) reloadStartNew() {
	r := a.reload
	if r == nil {
		return
	}
	r.phase = phaseNew
	a.setCfg(r.new)
	a.startPreload("reload")
}

// setCfg switches the pool to another config (reload, rollback, SIGHUP).
func (a *pool) setCfg(c config.Pool) {
	if c.Restart != a.cfg.Restart {
		a.policy = NewPolicy(c.Restart, a.d.Clock)
	}
	a.cfg = c
	a.applyCfgToStatus()
}

// rollback handles a new model that failed during a reload (phase new): it
// records why as last_error, stops the failed engine and preloads the old
// config again (phase rollback). Ready again: rolled_back; failing again:
// failed (see fail).
func (a *pool) rollback(why string) {
	r := a.reload
	r.phase = phaseRollback
	r.err = why
	a.setError(fmt.Sprintf("reload to %s (%s) failed: %s; rolling back to %s (%s)",
		r.new.ModelRef, r.new.EngineVersion, why, r.old.ModelRef, r.old.EngineVersion))
	a.log.Warn("reload.rollback", "last_error", why)
	a.stopEngine(func() {
		a.setCfg(r.old)
		a.startPreload("rollback")
	})
}

// finishReload ends the reload in progress with result: last_reload,
// reloads_total and reload.finished, then, when the caller waits
// (wait:true), one ReloadResult, sent after the status is published so the
// registry already shows the outcome. It changes no state: the caller has.
func (a *pool) finishReload(result ReloadOutcome, rolledBack bool, errMsg string) {
	r := a.reload
	a.reload = nil
	a.st.Reloading = false
	dur := a.now().Sub(r.start)
	a.st.LastReload = &ReloadInfo{Result: string(result), RolledBack: rolledBack, DurationMS: dur.Milliseconds(), Error: errMsg}
	a.dirty = true
	a.d.Observer.Reload(a.cfg.ID, string(result))
	a.log.Info("reload.finished", "result", result, "rolled_back", rolledBack, "duration_ms", dur.Milliseconds(),
		"engine_version", a.cfg.EngineVersion, "model_ref", a.cfg.ModelRef)
	if r.result != nil {
		a.publish() // the registry shows the outcome before the waiter hears of it
		select {
		case r.result <- ReloadResult{Result: result, RolledBack: rolledBack, EngineVersion: a.cfg.EngineVersion, Duration: dur, Error: errMsg}:
		default:
		}
	}
}

// ---- start ----

// handleStart answers a Start. In preload and ready, and while a reload runs
// (it brings the pool up by itself), it changes nothing (Changed false);
// draining refuses with POOL_DRAINING. In stopped, backoff and failed it
// closes the breaker, resets consecutive_failures, clears the XID marks of
// the pool's devices, and preloads once any engine still stopping is gone.
func (a *pool) handleStart() *CommandReply {
	if a.reload != nil { // the reload brings the pool up (or back) by itself
		return &CommandReply{State: a.st.State}
	}
	switch a.st.State {
	case StatePreload, StateReady:
		return &CommandReply{State: a.st.State}
	case StateDraining:
		return &CommandReply{State: a.st.State, Err: &Error{Code: CodePoolDraining, Message: "pool " + quote(a.cfg.ID) + " is draining"}}
	}
	a.policy.Reset()
	a.st.ConsecutiveFailures = 0
	for _, d := range a.st.Devices {
		a.d.Guard.ClearUnhealthy(d.UUID) // an operator restart clears a device-level XID mark
	}
	a.cancelTimer(tRestart)
	a.stopEngine(func() { a.startPreload("start") })
	return &CommandReply{State: a.st.State, Changed: true}
}

// ---- GPU health ----

// onGPUEvent fails the engine (gpu_xid) when an XID error hits a device the
// pool uses and an engine runs that is not already being stopped (preload
// or ready, in practice); other events are ignored.
func (a *pool) onGPUEvent(ev gpu.Event) {
	uses := false
	for _, d := range a.st.Devices {
		if d.UUID == ev.UUID {
			uses = true
		}
	}
	if !uses || a.proc == nil || a.stopReq {
		return
	}
	a.log.Error("gpu.xid", "uuid", ev.UUID, "xid", ev.XID, "device_level", ev.DeviceLevel, "message", ev.Message)
	a.fail(ReasonGPUXid, fmt.Errorf("gpu: XID %d on %s: %s", ev.XID, ev.UUID, ev.Message))
}

// onDevices refreshes the free memory of the pool's own devices from a GPU
// snapshot (any state; nothing for a pool without devices), copying the
// slice so the status the registry holds is never written to.
func (a *pool) onDevices(devs []gpu.Device) {
	if len(a.st.Devices) == 0 {
		return
	}
	next := make([]gpu.Device, len(a.st.Devices))
	copy(next, a.st.Devices) // the registry holds the old slice: never write into it
	changed := false
	for i, mine := range next {
		for _, d := range devs {
			if d.UUID == mine.UUID && d.MemoryFreeBytes != mine.MemoryFreeBytes {
				next[i].MemoryFreeBytes = d.MemoryFreeBytes
				changed = true
			}
		}
	}
	if changed {
		a.st.Devices = next
		a.dirty = true
	}
}
