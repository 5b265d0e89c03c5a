// This file publishes the registry's read model as an immutable snapshot,
// so queries are served without a round trip through its mailbox.

package actors

import (
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// RegistryView is where a registry publishes its snapshots: the registry
// actor stays the single writer of pools and leases, and publishes a new
// Snapshot (an atomic pointer swap) after every change and before it
// answers the message that caused it, or sends the transitions it caused
// to subscribers. So a reader that loads the view after a lease answer, a
// command answer of a pool (which pushes its status to the registry before
// it answers: see Daemon.command's barrier) or an event sees that effect.
// Safe for concurrent use; the zero value holds an empty snapshot.
type RegistryView struct {
	p atomic.Pointer[Snapshot]
}

// Load returns the current snapshot (never nil).
func (v *RegistryView) Load() *Snapshot {
	if s := v.p.Load(); s != nil {
		return s
	}
	return &emptySnapshot
}

var emptySnapshot Snapshot

// Snapshot is one immutable state of the registry. Its methods copy what
// they return, so callers may keep or change the results.
type Snapshot struct {
	ids   []string       // sorted; shared between snapshots until a pool is added or removed
	index map[string]int // id -> position in ids; shared likewise
	pools []*snapPool    // pools[i] is ids[i]; an element is replaced, never changed
}

type snapPool struct {
	status PoolStatus // with the registry's lease count
	pid    *actor.PID
}

// Len is the number of registered pools.
func (s *Snapshot) Len() int { return len(s.ids) }

// Pools returns every pool, sorted by id, as GetPools would.
func (s *Snapshot) Pools() []PoolStatus {
	out := make([]PoolStatus, len(s.pools))
	for i, p := range s.pools {
		out[i] = p.status
	}
	return out
}

// StateCounts is how many pools are in each state (states with no pool
// are absent), without copying any status.
func (s *Snapshot) StateCounts() map[State]int {
	counts := make(map[State]int, len(States))
	for _, p := range s.pools {
		counts[p.status.State]++
	}
	return counts
}

// Pool returns one pool as GetPool would; Found is false for an unknown id.
func (s *Snapshot) Pool(id string) PoolReply {
	i, ok := s.index[id]
	if !ok {
		return PoolReply{}
	}
	p := s.pools[i]
	return PoolReply{Status: p.status, PID: p.pid, Found: true}
}

// publisher builds the registry's snapshots: a changed pool costs one new
// element and a copy of the pointer slice; adding or removing a pool
// rebuilds the index.
type publisher struct {
	view    *RegistryView // nil: nothing is published
	cur     *Snapshot
	all     bool            // pools were added or removed
	changed map[string]bool // pools whose status or leases changed
}

func (p *publisher) markAll() { p.all = true }

func (p *publisher) mark(id string) {
	if p.changed == nil {
		p.changed = map[string]bool{}
	}
	p.changed[id] = true
}

// publish swaps in a snapshot of r if anything was marked since the last.
func (p *publisher) publish(r *Registry) {
	if p.view == nil || (!p.all && len(p.changed) == 0) {
		return
	}
	next := &Snapshot{}
	if p.all || p.cur == nil {
		// A pool added or removed: a new order and index, but every pool
		// not marked changed keeps its entry from the current snapshot.
		next.ids = append([]string(nil), r.sorted...)
		next.index = make(map[string]int, len(next.ids))
		next.pools = make([]*snapPool, len(next.ids))
		for i, id := range next.ids {
			next.index[id] = i
			if p.cur != nil && !p.changed[id] {
				if j, ok := p.cur.index[id]; ok {
					next.pools[i] = p.cur.pools[j]
					continue
				}
			}
			e := r.pools[id]
			next.pools[i] = &snapPool{status: r.view(e), pid: e.pid}
		}
	} else {
		next.ids, next.index = p.cur.ids, p.cur.index
		next.pools = append([]*snapPool(nil), p.cur.pools...)
		for id := range p.changed {
			if i, ok := next.index[id]; ok {
				e := r.pools[id]
				next.pools[i] = &snapPool{status: r.view(e), pid: e.pid}
			}
		}
	}
	p.cur = next
	p.all = false
	clear(p.changed)
	p.view.p.Store(next)
}
