// The lease ledger: every lease the soak was granted and has not released.
//
// The daemon drops a pool's leases whenever the pool leaves ready/draining
// (crash, drain done, reload) and all of them when it restarts. The soak
// does not guess drops while chaos runs; at the end it decides for each
// lease from the pool's ready_since_ms: a lease answered (201) before the
// current ready period began was dropped; one requested after it began is
// held; one in flight across the start is uncertain and resolved by
// releasing it. Leases from an earlier daemon process are all dropped.

package main

import (
	"math/rand/v2"
	"sync"
)

// lease is one granted lease.
type lease struct {
	id, pool      string
	gen           int   // daemon generation that answered (see soak.gen)
	reqMS, respMS int64 // wall clock when requested and when the 201 arrived
	genAtRequest  int
	viaPlacement  bool
}

// ledger is safe for concurrent use.
type ledger struct {
	mu   sync.Mutex
	held map[string]*lease
	out  map[string]*lease // taken for release, answer pending
	adj  map[string]int    // the planted accounting fault (-plant-negative-lease)

	plant    bool // on the next release, count it twice
	acquired int
	placed   int
	released int // 200 on DELETE
	gone     int // 404 on DELETE: dropped by the daemon before we released it
}

func newLedger(plant bool) *ledger {
	return &ledger{held: map[string]*lease{}, out: map[string]*lease{}, adj: map[string]int{}, plant: plant}
}

func (l *ledger) add(ls *lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held[ls.id] = ls
	l.acquired++
	if ls.viaPlacement {
		l.placed++
	}
}

// take checks a random held lease out for release, or returns nil. A
// taken lease is invisible to other takers, so two lease loops never
// release the same lease; done or putBack ends the checkout.
func (l *ledger) take(r *rand.Rand) *lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.held) == 0 {
		return nil
	}
	i := r.IntN(len(l.held))
	for id, ls := range l.held {
		if i == 0 {
			delete(l.held, id)
			l.out[id] = ls
			return ls
		}
		i--
	}
	return nil
}

// putBack returns a taken lease whose release got no answer.
func (l *ledger) putBack(ls *lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.out[ls.id]; ok {
		delete(l.out, ls.id)
		l.held[ls.id] = ls
	}
}

// done records the answer to releasing ls: released (200) or already gone
// (404). With -plant-negative-lease, the first release is counted twice:
// the bug a client makes when it retries a release and books both.
func (l *ledger) done(ls *lease, released bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, held := l.held[ls.id]
	_, taken := l.out[ls.id]
	if !held && !taken {
		return
	}
	delete(l.held, ls.id)
	delete(l.out, ls.id)
	if !released {
		l.gone++
		return
	}
	l.released++
	if l.plant {
		l.plant = false
		l.adj[ls.pool]--
	}
}

// size is the number of held leases, taken ones included.
func (l *ledger) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.held) + len(l.out)
}

// all returns the held leases.
func (l *ledger) all() []*lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*lease, 0, len(l.held))
	for _, ls := range l.held {
		out = append(out, ls)
	}
	return out
}

// drop forgets leases the daemon has certainly dropped.
func (l *ledger) drop(ls []*lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range ls {
		if _, ok := l.held[x.id]; ok {
			delete(l.held, x.id)
			l.gone++
		}
	}
}

// expected is the number of leases the soak believes it holds on pool.
func (l *ledger) expected(pool string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.adj[pool]
	for _, ls := range l.held {
		if ls.pool == pool {
			n++
		}
	}
	return n
}

// stats returns the counters for the report.
func (l *ledger) stats() (acquired, placed, released, gone int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acquired, l.placed, l.released, l.gone
}
