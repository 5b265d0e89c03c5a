package actors

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// Registry is the read model of every pool and the owner of leases. Pool
// actors push their status to it; HTTP handlers query it. It never asks a
// pool anything synchronously, so a slow pool cannot block a query.
//
// Leases live here (not in pool actors) so placement can pick a pool and
// allocate on it in one message: no double allocation, never a negative count.
type Registry struct {
	clock  clock.Clock
	log    *slog.Logger
	pools  map[string]*entry
	subs   map[chan Transition]struct{}
	events eventLog // numbers transitions, keeps the backlog for resumes
	sorted []string // pool ids, sorted; rebuilt on register/unregister
	pub    publisher
}

type entry struct {
	status PoolStatus
	pid    *actor.PID
	leases map[string]*lease
}

type lease struct {
	expires time.Time
	timer   clock.Timer
}

// subscriberBuffer is how many transitions a subscriber may fall behind before
// it is dropped (an SSE client that stopped reading must not grow memory).
const subscriberBuffer = 256

// NewRegistryProps builds the registry actor's props.
func NewRegistryProps(clk clock.Clock, log *slog.Logger) *actor.Props {
	return NewPublishingRegistryProps(clk, log, nil)
}

// NewPublishingRegistryProps is NewRegistryProps for a registry that also
// publishes its state to view after every change (see RegistryView); a
// nil view publishes nothing.
func NewPublishingRegistryProps(clk clock.Clock, log *slog.Logger, view *RegistryView) *actor.Props {
	clk = clock.OrReal(clk)
	return actor.PropsFromProducer(func() actor.Actor {
		return &Registry{clock: clk, log: log, pools: map[string]*entry{}, subs: map[chan Transition]struct{}{},
			pub: publisher{view: view}}
	})
}

// Receive handles one message. Whatever it changed is published (see
// RegistryView) before the message is answered.
func (r *Registry) Receive(ctx actor.Context) {
	if reply := r.handle(ctx); reply != nil {
		r.pub.publish(r)
		ctx.Respond(reply)
		return
	}
	r.pub.publish(r)
}

// handle handles one message and returns its answer, if it has one.
func (r *Registry) handle(ctx actor.Context) any {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		r.pub.markAll() // a restarted registry starts empty, and says so
	case *actor.Stopping, *actor.Stopped, *actor.Restarting:
	case *RegisterPool:
		r.pools[m.Status.PoolID] = &entry{status: m.Status, pid: m.PID, leases: map[string]*lease{}}
		r.added(m.Status.PoolID)
	case *UnregisterPool:
		if e, ok := r.pools[m.PoolID]; ok && (m.PID == nil || m.PID.Equal(e.pid)) {
			r.dropLeases(e)
			delete(r.pools, m.PoolID)
			r.removed(m.PoolID)
		}
	case *StatusUpdate:
		r.update(ctx, m)
	case *GetPools:
		out := make([]PoolStatus, 0, len(r.sorted))
		for _, id := range r.sorted {
			out = append(out, r.view(r.pools[id]))
		}
		return &PoolsReply{Pools: out}
	case *GetPool:
		e, ok := r.pools[m.PoolID]
		if !ok {
			return &PoolReply{}
		}
		return &PoolReply{Status: r.view(e), PID: e.pid, Found: true}
	case *AcquireLease:
		e, ok := r.pools[m.PoolID]
		if !ok {
			return &LeaseReply{Err: notFound(m.PoolID)}
		}
		if err := r.leasable(e); err != nil {
			return &LeaseReply{Err: err}
		}
		return &LeaseReply{Lease: r.allocate(ctx, e, m.TTL)}
	case *Place:
		return r.place(ctx, m)
	case *ReleaseLease:
		return r.release(ctx, m.PoolID, m.LeaseID)
	case *leaseExpired:
		if e, ok := r.pools[m.PoolID]; ok {
			if l, ok := e.leases[m.LeaseID]; ok && !r.clock.Now().Before(l.expires) {
				r.release(ctx, m.PoolID, m.LeaseID)
				r.log.Info("lease.expired", "pool_id", m.PoolID, "lease_id", m.LeaseID)
			}
		}
	case *Subscribe:
		r.subs[m.Ch] = struct{}{}
	case *SubscribeEvents:
		missed, reset := r.events.since(m.LastEventID)
		r.subs[m.Ch] = struct{}{}
		ctx.Respond(&SubscribeReply{Run: r.events.run, Last: r.events.seq, Missed: missed, Reset: reset})
	case *Unsubscribe:
		if _, ok := r.subs[m.Ch]; ok {
			delete(r.subs, m.Ch)
			close(m.Ch)
		}
	case *Ping:
		return &Pong{}
	case *Broadcast:
		for _, e := range r.pools {
			SendPool(ctx, e.pid, m.Msg)
		}
	default:
		r.log.Warn("registry: unknown message", "type", fmt.Sprintf("%T", m))
	}
	return nil
}

// added puts a newly registered (or re-registered) pool's id into the
// sorted list of pool ids, the order every listing and placement scan
// uses, and marks it for the next snapshot; the others keep their
// published entries (publisher.publish).
func (r *Registry) added(id string) {
	if i, found := slices.BinarySearch(r.sorted, id); !found {
		r.sorted = slices.Insert(r.sorted, i, id)
	}
	r.pub.markAll()
	r.pub.mark(id)
}

// removed takes an unregistered pool's id out of the sorted list.
func (r *Registry) removed(id string) {
	if i, found := slices.BinarySearch(r.sorted, id); found {
		r.sorted = slices.Delete(r.sorted, i, i+1)
	}
	r.pub.markAll()
}

// view is the status as callers see it: with the registry's lease count.
func (r *Registry) view(e *entry) PoolStatus {
	s := e.status
	s.ActiveLeases = len(e.leases)
	return s
}

// update takes a pool actor's StatusUpdate, only from the actor the pool is
// registered with (a removed pool's old actor is ignored). A pool that is
// neither ready nor draining loses its leases; a draining pool is told its
// lease count; each transition is numbered into the event backlog and sent
// to every subscriber, and a subscriber whose channel is full is dropped
// (its channel closed) rather than block the registry.
func (r *Registry) update(ctx actor.Context, m *StatusUpdate) {
	e, ok := r.pools[m.Status.PoolID]
	if !ok || (m.PID != nil && !m.PID.Equal(e.pid)) {
		return // unregistered, or a removed pool's old actor: not this entry's writer
	}
	e.status = m.Status
	r.pub.mark(m.Status.PoolID)
	if s := m.Status.State; s != StateReady && s != StateDraining {
		if n := len(e.leases); n > 0 {
			r.log.Info("leases.dropped", "pool_id", m.Status.PoolID, "count", n, "state", string(s))
		}
		r.dropLeases(e) // docs/contract.md §3: when a pool stops, its leases are dropped
	}
	if m.Status.State == StateDraining {
		SendPool(ctx, e.pid, &LeasesChanged{Active: len(e.leases)})
	}
	r.pub.publish(r) // a subscriber that reads on an event sees its state
	for _, t := range m.Transitions {
		t = r.events.add(t)
		for ch := range r.subs {
			select {
			case ch <- t:
			default: // fell behind: drop it rather than block the registry
				delete(r.subs, ch)
				close(ch)
			}
		}
	}
}

// dropLeases forgets every lease of e and stops their expiry timers.
func (r *Registry) dropLeases(e *entry) {
	if len(e.leases) > 0 {
		r.pub.mark(e.status.PoolID)
	}
	for id, l := range e.leases {
		if l.timer != nil {
			l.timer.Stop()
		}
		delete(e.leases, id)
	}
}

// notFound is the POOL_NOT_FOUND error for pool id.
func notFound(id string) *Error {
	return &Error{Code: CodePoolNotFound, Message: "no pool with id " + quote(id)}
}

// quote puts s in double quotes for an error message (no escaping: ids are
// validated by the config).
func quote(s string) string { return "\"" + s + "\"" }

// leasable says why a lease cannot be allocated on e, or nil.
func (r *Registry) leasable(e *entry) *Error {
	s := e.status
	switch {
	case s.Draining || s.State == StateDraining:
		return &Error{Code: CodePoolDraining, Message: "pool " + quote(s.PoolID) + " is draining"}
	case s.State != StateReady:
		e := &Error{Code: CodePoolUnready, Message: "pool " + quote(s.PoolID) + " is " + string(s.State) + ", not ready"}
		if s.State == StatePreload || s.State == StateBackoff {
			e.RetryAfterMS = retryAfter(r.clock.Now(), s)
		} else {
			e.Message += " (it needs POST /v1/pools/" + s.PoolID + "/start)"
		}
		return e
	case s.Slots > 0 && len(e.leases) >= s.Slots:
		return &Error{Code: CodePoolBusy, Message: "pool " + quote(s.PoolID) + " has all its slots leased", RetryAfterMS: busyRetryMS}
	}
	return nil
}

// busyRetryMS is the hint given when every slot is leased: leases are short
// (one request), so a retry soon is likely to find a slot.
const busyRetryMS = 100

// retryAfter estimates when a pool that is not ready might be.
func retryAfter(now time.Time, s PoolStatus) int64 {
	if s.State == StateBackoff && s.NextRestartAtMS != nil {
		if d := *s.NextRestartAtMS - now.UnixMilli(); d > 1000 {
			return d
		}
	}
	return 1000
}

// allocate grants a new lease on e (the caller checked it may), with an
// expiry timer on the registry's clock when ttl > 0.
func (r *Registry) allocate(ctx actor.Context, e *entry, ttl time.Duration) Lease {
	id := newLeaseID()
	l := &lease{}
	out := Lease{LeaseID: id, PoolID: e.status.PoolID}
	if e.status.URL != nil {
		out.URL = *e.status.URL
	}
	if ttl > 0 {
		l.expires = r.clock.Now().Add(ttl)
		out.ExpiresAtMS = ptr(l.expires.UnixMilli())
		self, root, pool := ctx.Self(), ctx.ActorSystem().Root, e.status.PoolID
		l.timer = r.clock.AfterFunc(ttl, func() { SendRegistry(root, self, &leaseExpired{PoolID: pool, LeaseID: id}) })
	}
	e.leases[id] = l
	r.pub.mark(e.status.PoolID)
	out.ActiveLeases = len(e.leases)
	return out
}

// release ends lease leaseID of pool poolID: POOL_NOT_FOUND or
// LEASE_NOT_FOUND (unknown, expired, released, or dropped when the pool
// stopped) when there is none; a draining pool hears its new count.
func (r *Registry) release(ctx actor.Context, poolID, leaseID string) *ReleaseReply {
	e, ok := r.pools[poolID]
	if !ok {
		return &ReleaseReply{Err: notFound(poolID)}
	}
	l, ok := e.leases[leaseID]
	if !ok {
		return &ReleaseReply{Err: &Error{Code: CodeLeaseNotFound, Message: "no active lease " + quote(leaseID) + " on pool " + quote(poolID) + " (unknown, expired, released, or dropped when the pool stopped)"}}
	}
	if l.timer != nil {
		l.timer.Stop()
	}
	delete(e.leases, leaseID)
	r.pub.mark(poolID)
	if e.status.State == StateDraining {
		SendPool(ctx, e.pid, &LeasesChanged{Active: len(e.leases)})
	}
	return &ReleaseReply{ActiveLeases: len(e.leases)}
}

// place implements POST /v1/placement: the ready, non-draining pool with a
// free slot and the fewest leases; ties: most free VRAM (unknown counts as
// equal), then id.
func (r *Registry) place(ctx actor.Context, m *Place) *LeaseReply {
	ids := m.PoolIDs
	if len(ids) == 0 {
		ids = r.sorted
	}
	var best *entry
	for _, id := range ids {
		e, ok := r.pools[id]
		if !ok {
			return &LeaseReply{Err: notFound(id)}
		}
		if (m.ModelRef != "" && e.status.ModelRef != m.ModelRef) || r.leasable(e) != nil {
			continue
		}
		if best == nil || better(e, best) {
			best = e
		}
	}
	if best == nil {
		return &LeaseReply{Err: &Error{Code: CodePoolUnavailable, Message: "no ready pool with a free slot", RetryAfterMS: r.placementRetry(ids)}}
	}
	return &LeaseReply{Lease: r.allocate(ctx, best, m.TTL)}
}

// better is placement's order: fewer active leases first, then more free
// VRAM on the tightest device (when both pools report devices), then the
// smaller pool id, so equal pools are chosen deterministically.
func better(a, b *entry) bool {
	if la, lb := len(a.leases), len(b.leases); la != lb {
		return la < lb
	}
	fa, oka := freeVRAM(a.status)
	fb, okb := freeVRAM(b.status)
	if oka && okb && fa != fb {
		return fa > fb
	}
	return a.status.PoolID < b.status.PoolID
}

// freeVRAM is the smallest free memory among a pool's devices: the engine is
// as roomy as its tightest GPU.
func freeVRAM(s PoolStatus) (uint64, bool) {
	if len(s.Devices) == 0 {
		return 0, false
	}
	min := s.Devices[0].MemoryFreeBytes
	for _, d := range s.Devices[1:] {
		if d.MemoryFreeBytes < min {
			min = d.MemoryFreeBytes
		}
	}
	return min, true
}

// placementRetry is the retry_after_ms of a refused placement over ids: the
// soonest any candidate may take a lease (busyRetryMS for a ready pool whose
// slots are full, the backoff's time left for one coming up), or 5 s when
// none is coming up (stopped, failed, draining).
func (r *Registry) placementRetry(ids []string) int64 {
	best := int64(0)
	now := r.clock.Now()
	for _, id := range ids {
		e := r.pools[id]
		var ms int64
		switch {
		case e.status.State == StateReady && !e.status.Draining:
			ms = busyRetryMS
		case e.status.State == StatePreload || e.status.State == StateBackoff:
			ms = retryAfter(now, e.status)
		default:
			continue
		}
		if best == 0 || ms < best {
			best = ms
		}
	}
	if best == 0 {
		best = 5000 // nothing is coming up soon: stopped, failed or draining
	}
	return best
}

// newLeaseID is a random lease id, "ls_" and 24 hex digits.
func newLeaseID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "ls_" + hex.EncodeToString(b[:])
}
