// The chaos and lease loops. Each action holds the gate shared, so a quiet
// point (gate held alone) waits for actions in flight and starts no new one.

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"
)

// Pacing of the loops: with 2 chaos workers a pool is hit every few seconds,
// and 3 lease workers keep a few dozen leases moving, without saturating a
// 2-core CI machine.
const (
	chaosPauseMin = 150 * time.Millisecond
	chaosPauseMax = 450 * time.Millisecond
	leasePauseMin = 20 * time.Millisecond
	leasePauseMax = 120 * time.Millisecond
	maxHeld       = 40 // above this the lease loops only release
)

func (s *soak) chaosLoop(ctx context.Context, r *rand.Rand) {
	for sleepCtx(ctx, between(r, chaosPauseMin, chaosPauseMax)) {
		s.gate.RLock()
		if ctx.Err() == nil {
			s.chaosOnce(ctx, r)
		}
		s.gate.RUnlock()
	}
}

// chaosOnce does one random action on one random pool.
func (s *soak) chaosOnce(ctx context.Context, r *rand.Rand) {
	pools := s.latest()
	if len(pools) == 0 {
		return
	}
	p := pools[r.IntN(len(pools))]
	if s.o.hostileAPI && r.IntN(100) < 15 {
		s.hostile(ctx, p.PoolID, r)
		return
	}
	switch x := r.IntN(100); {
	case x < 35:
		s.signalPool(p, syscall.SIGKILL, r)
	case x < 50:
		s.signalPool(p, syscall.SIGSTOP, r)
	case x < 67:
		s.drainThenStart(ctx, p.PoolID, r)
	case x < 87:
		s.reload(ctx, p.PoolID, r)
	default:
		_, _ = s.api.call(ctx, "POST", "/v1/pools/"+p.PoolID+"/start", nil, 200, 202)
		s.count("start")
	}
}

// signalPool sends sig to the pool's engine leader. A SIGSTOPped engine gets
// SIGCONT after a while: short stops pass unnoticed, long ones fail
// liveness (2 × 500ms) and the daemon must kill the frozen engine.
func (s *soak) signalPool(p poolStatus, sig syscall.Signal, r *rand.Rand) {
	if p.PID == nil {
		return
	}
	proc, err := signalEngine(s.runID, *p.PID, sig)
	if err != nil {
		return // gone or replaced since the snapshot
	}
	s.logf("%s %s pid %d", sigName(sig), p.PoolID, *p.PID)
	if sig != syscall.SIGSTOP {
		s.count(sigName(sig))
		_ = proc.Release()
		return
	}
	s.count("SIGSTOP (then SIGCONT)")
	stopFor := between(r, 200*time.Millisecond, 2500*time.Millisecond)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		time.Sleep(stopFor) // not cut short: every stop gets its SIGCONT, also at the end
		_ = proc.Signal(syscall.SIGCONT)
		_ = proc.Release()
	}()
}

func sigName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGSTOP:
		return "SIGSTOP"
	}
	return sig.String()
}

// drainThenStart drains the pool and starts it again a little later.
func (s *soak) drainThenStart(ctx context.Context, id string, r *rand.Rand) {
	body := map[string]any{"deadline_ms": r.IntN(500)}
	an, err := s.api.call(ctx, "POST", "/v1/pools/"+id+"/drain", body, 202)
	if err != nil || an.status != 202 {
		return
	}
	s.count("drain (then start)")
	s.logf("drain %s", id)
	wait := between(r, 200*time.Millisecond, 1500*time.Millisecond)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		for range 10 {
			if !sleepCtx(ctx, wait) {
				return // the final settle starts it
			}
			an, err := s.api.call(ctx, "POST", "/v1/pools/"+id+"/start", nil, 200, 202)
			if err == nil && an.code != "POOL_DRAINING" {
				return
			}
			wait = 300 * time.Millisecond
		}
	}()
}

// reload asks for a new model: usually a relative (unchecked) name, one in
// four times an absolute path that does not exist, which the preflight must
// refuse (409 PREFLIGHT_FAILED) without touching the engine.
// One in five waits for the outcome, in the background.
func (s *soak) reload(ctx context.Context, id string, r *rand.Rand) {
	bad := r.IntN(4) == 0
	ref := fmt.Sprintf("soak/model-%c", 'a'+r.IntN(3))
	if bad {
		ref = fmt.Sprintf("/nonexistent/poolsoak/model-%d.gguf", r.IntN(1000))
	}
	body := map[string]any{"new_model_ref": ref, "deadline_ms": r.IntN(300)}
	if r.IntN(3) == 0 {
		body["engine_version"] = fmt.Sprintf("v%d", 1+r.IntN(3))
	}
	kind := "reload"
	if bad {
		kind = "reload to a missing model"
	}
	s.count(kind)
	s.logf("%s %s → %s", kind, id, ref)
	if r.IntN(5) != 0 {
		_, _ = s.api.call(ctx, "POST", "/v1/pools/"+id+"/reload", body, 202)
		return
	}
	body["wait"] = true
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		// Not cancelled when chaos stops: the daemon would log a cancelled
		// wait as an internal error. It ends when the pool settles.
		an, err := s.api.call(context.WithoutCancel(ctx), "POST", "/v1/pools/"+id+"/reload", body, 200)
		if err == nil && bad && an.status == 200 {
			s.fail("reload of %s to missing %s succeeded: %v", id, ref, an.body)
		}
		if err == nil && bad && an.code == "RELOAD_FAILED" {
			s.fail("reload of %s to missing %s started and failed; the preflight should have refused it: %v", id, ref, an.body)
		}
		if err == nil && !bad && an.code == "PREFLIGHT_FAILED" {
			s.fail("reload of %s to %s refused by the preflight: %v", id, ref, an.body)
		}
	}()
}

func (s *soak) leaseLoop(ctx context.Context, r *rand.Rand) {
	for sleepCtx(ctx, between(r, leasePauseMin, leasePauseMax)) {
		s.gate.RLock()
		if ctx.Err() == nil {
			s.leaseOnce(ctx, r)
		}
		s.gate.RUnlock()
	}
}

func (s *soak) leaseOnce(ctx context.Context, r *rand.Rand) {
	held := s.led.size()
	switch x := r.IntN(100); {
	case held > 0 && (held >= maxHeld || x < 40):
		if ls := s.led.take(r); ls != nil {
			s.release(ctx, ls)
		}
	case x < 75:
		s.acquire(ctx, "/v1/pools/"+s.ids[r.IntN(len(s.ids))]+"/leases", map[string]any{})
	default:
		body := map[string]any{}
		if r.IntN(2) == 0 {
			body["pool_ids"] = []string{s.ids[r.IntN(len(s.ids))], s.ids[r.IntN(len(s.ids))]}
		}
		s.acquire(ctx, "/v1/placement", body)
	}
}

// acquire asks for a lease (on a pool, or by placement) and books it. The
// request is not cancelled when chaos stops: a lease granted to a
// cancelled request would be held by the daemon and unknown to the ledger.
func (s *soak) acquire(ctx context.Context, path string, body map[string]any) {
	ctx = context.WithoutCancel(ctx)
	genReq, reqMS := int(s.gen.Load()), time.Now().UnixMilli()
	an, err := s.api.call(ctx, "POST", path, body, 201)
	if err != nil || an.status != 201 {
		return
	}
	id, _ := an.body["lease_id"].(string)
	pool, _ := an.body["pool_id"].(string)
	if id == "" || pool == "" {
		s.fail("POST %s: 201 without lease_id/pool_id: %v", path, an.body)
		return
	}
	s.led.add(&lease{id: id, pool: pool, gen: int(s.gen.Load()), genAtRequest: genReq,
		reqMS: reqMS, respMS: time.Now().UnixMilli(), viaPlacement: path == "/v1/placement"})
}

// release gives a lease back. A 404 is fine when the pool left ready (or the
// daemon restarted) since the lease was granted; when the pool has been
// ready all along, the daemon lost a lease. Not cancelled when chaos stops,
// for the same reason as acquire.
func (s *soak) release(ctx context.Context, ls *lease) {
	ctx = context.WithoutCancel(ctx) // like acquire: the answer must be booked
	an, err := s.api.call(ctx, "DELETE", "/v1/pools/"+ls.pool+"/leases/"+ls.id, nil, 200)
	switch {
	case err == nil && an.code == "":
		s.led.done(ls, true)
	case err == nil && an.code == "LEASE_NOT_FOUND":
		s.led.done(ls, false)
		s.checkLost(ctx, ls)
	default: // no answer (the daemon is down): the final accounting decides
		s.led.putBack(ls)
	}
}

// checkLost fails the run if ls's pool has been ready, under the same
// daemon, since before ls was requested: nothing can have dropped it.
func (s *soak) checkLost(ctx context.Context, ls *lease) {
	gen := int(s.gen.Load())
	an, err := s.api.call(ctx, "GET", "/v1/pools/"+ls.pool, nil, 200)
	if err != nil || an.status != 200 || int(s.gen.Load()) != gen || ls.gen != gen || ls.genAtRequest != gen {
		return
	}
	since, ok := an.body["ready_since_ms"].(float64)
	if an.body["state"] == "ready" && ok && int64(since) < ls.reqMS {
		s.fail("pool %s lost lease %s: ready since %d, lease requested at %d, release answered 404",
			ls.pool, ls.id, int64(since), ls.reqMS)
	}
}
