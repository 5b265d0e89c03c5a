package actors

import (
	"io"
	"log/slog"
	"testing"
	"time"

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
