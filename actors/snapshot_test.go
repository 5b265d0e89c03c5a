package actors

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// The registry publishes every change before it answers or sends the
// transition: a lease answer, a status update's event and a removal are
// visible in the view to whoever reads it right after.
func TestRegistryPublishesBeforeAnswering(t *testing.T) {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
	defer sys.Shutdown()
	var view RegistryView
	if view.Load().Len() != 0 || view.Load().Pool("p1").Found {
		t.Fatal("zero view is not empty")
	}
	reg := sys.Root.Spawn(NewPublishingRegistryProps(clock.Real{}, slog.New(slog.NewTextHandler(io.Discard, nil)), &view))
	pool := sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
	ping := func() {
		t.Helper()
		if _, err := Ask(sys.Root, reg, &Ping{}, 10*time.Second); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	}
	events := make(chan Transition, 8)
	SendRegistry(sys.Root, reg, &Subscribe{Ch: events})
	for _, id := range []string{"p2", "p1"} {
		SendRegistry(sys.Root, reg, &RegisterPool{Status: PoolStatus{PoolID: id, State: StatePreload}, PID: pool})
	}
	ping()
	if got := view.Load().Pools(); len(got) != 2 || got[0].PoolID != "p1" || got[1].PoolID != "p2" {
		t.Fatalf("view after registering = %+v, want p1, p2", got)
	}

	SendRegistry(sys.Root, reg, &StatusUpdate{Status: PoolStatus{PoolID: "p1", State: StateReady, Ready: true}, PID: pool,
		Transitions: []Transition{{PoolID: "p1", From: StatePreload, To: StateReady}}})
	select {
	case <-events:
	case <-time.After(waitLimit):
		t.Fatal("no transition event")
	}
	if pr := view.Load().Pool("p1"); !pr.Found || pr.Status.State != StateReady || !pr.PID.Equal(pool) {
		t.Fatalf("view on the ready event = %+v, want p1 ready", pr)
	}

	before := view.Load()
	lr, err := Ask(sys.Root, reg, &AcquireLease{PoolID: "p1"}, 10*time.Second)
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	if lr.Err != nil {
		t.Fatal(lr.Err)
	}
	if n := view.Load().Pool("p1").Status.ActiveLeases; n != 1 {
		t.Fatalf("active leases in the view after the lease answer = %d, want 1", n)
	}
	if n := before.Pool("p1").Status.ActiveLeases; n != 0 {
		t.Fatalf("an earlier snapshot changed: %d leases, want 0", n)
	}
	if _, err := Ask(sys.Root, reg, &ReleaseLease{PoolID: "p1", LeaseID: lr.Lease.LeaseID}, 10*time.Second); err != nil {
		t.Fatalf("ReleaseLease: %v", err)
	}
	if n := view.Load().Pool("p1").Status.ActiveLeases; n != 0 {
		t.Fatalf("active leases in the view after the release answer = %d, want 0", n)
	}

	SendRegistry(sys.Root, reg, &UnregisterPool{PoolID: "p2", PID: pool})
	ping()
	if got := view.Load().Pools(); len(got) != 1 || got[0].PoolID != "p1" || view.Load().Pool("p2").Found {
		t.Fatalf("view after removing p2 = %+v", got)
	}
}

// Adding or removing a pool republishes the others as they were: their
// published entries are shared with the previous snapshot, not rebuilt, so
// registering N pools (a daemon's start) costs O(N) entries, not O(N²).
// A pool registered again under its id (a reload) gets a new entry.
func TestRegistryMembershipChangeKeepsTheOtherEntries(t *testing.T) {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	defer sys.Shutdown()
	var view RegistryView
	reg := sys.Root.Spawn(NewPublishingRegistryProps(clock.Real{}, slog.New(slog.DiscardHandler), &view))
	pool := sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
	send := func(m RegistryMessage) {
		t.Helper()
		SendRegistry(sys.Root, reg, m)
		if _, err := Ask(sys.Root, reg, &Ping{}, 10*time.Second); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	}
	register := func(id string, st State) {
		send(&RegisterPool{Status: PoolStatus{PoolID: id, State: st}, PID: pool})
	}
	entryOf := func(s *Snapshot, id string) *snapPool {
		t.Helper()
		i, ok := s.index[id]
		if !ok {
			t.Fatalf("%s is not in the snapshot (ids %v)", id, s.ids)
		}
		return s.pools[i]
	}
	register("b", StateReady)
	register("d", StateReady)
	first := view.Load()
	register("a", StatePreload)
	register("c", StatePreload)
	second := view.Load()
	if got := second.ids; len(got) != 4 || got[0] != "a" || got[1] != "b" || got[2] != "c" || got[3] != "d" {
		t.Fatalf("ids = %v, want a b c d", got)
	}
	for _, id := range []string{"b", "d"} {
		if entryOf(first, id) != entryOf(second, id) {
			t.Errorf("pool %s: registering others rebuilt its entry", id)
		}
	}
	if s := entryOf(second, "a").status; s.PoolID != "a" || s.State != StatePreload {
		t.Errorf("a = %+v", s)
	}

	register("b", StateStopped) // b again, as a reload re-registers it
	third := view.Load()
	if entryOf(third, "b") == entryOf(second, "b") || entryOf(third, "b").status.State != StateStopped {
		t.Errorf("b registered again kept its old entry: %+v", entryOf(third, "b").status)
	}
	send(&UnregisterPool{PoolID: "c", PID: pool})
	fourth := view.Load()
	if got := fourth.ids; len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "d" {
		t.Fatalf("ids after removing c = %v, want a b d", got)
	}
	for _, id := range []string{"a", "b", "d"} {
		if entryOf(third, id) != entryOf(fourth, id) {
			t.Errorf("pool %s: removing c rebuilt its entry", id)
		}
	}
	if fourth.Pool("c").Found {
		t.Error("c is still in the snapshot")
	}
}

// StateCounts counts without copying statuses: the bytes it allocates do
// not grow with the number of pools (the daemon calls it after every burst
// of transitions, for systemd's STATUS= line). A copy of 256 statuses would
// be 256 × sizeof(PoolStatus) bytes per call.
func TestSnapshotStateCounts(t *testing.T) {
	build := func(n int) *Snapshot {
		r := &Registry{pools: map[string]*entry{}, pub: publisher{view: &RegistryView{}}}
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("p%03d", i)
			st := StateReady
			if i%4 == 0 {
				st = StatePreload
			}
			r.pools[id] = &entry{status: PoolStatus{PoolID: id, State: st}, leases: map[string]*lease{}}
			r.added(id)
		}
		r.pub.publish(r)
		return r.pub.view.Load()
	}
	small, large := build(4), build(256)
	if c := large.StateCounts(); c[StatePreload] != 64 || c[StateReady] != 192 || len(c) != 2 {
		t.Fatalf("counts of 256 pools = %v, want 64 preload, 192 ready", c)
	}
	bytesPerCall := func(s *Snapshot) float64 {
		const calls = 200
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := 0; i < calls; i++ {
			_ = s.StateCounts()
		}
		runtime.ReadMemStats(&after)
		return float64(after.TotalAlloc-before.TotalAlloc) / calls
	}
	b4, b256 := bytesPerCall(small), bytesPerCall(large)
	if copyOf256 := 256 * float64(unsafe.Sizeof(PoolStatus{})); b256 > b4+copyOf256/8 {
		t.Fatalf("StateCounts allocates %.0f B a call with 256 pools, %.0f with 4 (a copy of every status would be %.0f): it should not grow with the pools",
			b256, b4, copyOf256)
	}
}
