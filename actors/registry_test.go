package actors

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/pool-managerd/pool-managerd/gpu"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// readyStatus is a synthetic ready pool, for registry-only tests.
func readyStatus(id string, freeMiB ...uint64) PoolStatus {
	url := "http://127.0.0.1:1/" + id
	st := PoolStatus{PoolID: id, State: StateReady, Ready: true, Live: true, URL: &url}
	for i, f := range freeMiB {
		st.Devices = append(st.Devices, gpu.Device{Index: i, UUID: id + "-gpu", MemoryFreeBytes: f << 20})
	}
	return st
}

// register adds synthetic pools straight to the registry; their "actor" is a
// sink that swallows LeasesChanged.
func (h *harness) register(sts ...PoolStatus) {
	sink := h.sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
	for _, st := range sts {
		SendRegistry(h.sys.Root, h.reg, &RegisterPool{Status: st, PID: sink})
	}
}

func TestPlacementTieBreaksOnFreeVRAMThenID(t *testing.T) {
	h := newHarness(t, nil)
	h.register(readyStatus("a", 1000), readyStatus("b", 3000), readyStatus("c", 2000), readyStatus("d"))
	// Equal leases: most free VRAM wins.
	if r := ask(h, h.reg, &Place{}); r.Err != nil || r.Lease.PoolID != "b" {
		t.Fatalf("want b (most VRAM), got %+v", r)
	}
	// b now has a lease; c has the most VRAM among the pools with none.
	if r := ask(h, h.reg, &Place{}); r.Lease.PoolID != "c" {
		t.Fatalf("want c, got %+v", r.Lease)
	}
	// Unknown VRAM counts as equal: between a (known) and d (unknown), id decides.
	if r := ask(h, h.reg, &Place{PoolIDs: []string{"d", "a"}}); r.Lease.PoolID != "a" {
		t.Fatalf("want a, got %+v", r.Lease)
	}
}

func TestLeaseTTLExpires(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	h := newHarness(t, clk)
	h.register(readyStatus("a"))
	l := ask(h, h.reg, &AcquireLease{PoolID: "a", TTL: 5 * time.Second})
	keep := ask(h, h.reg, &AcquireLease{PoolID: "a"})
	if l.Err != nil || l.Lease.ExpiresAtMS == nil || *l.Lease.ExpiresAtMS != clk.Now().Add(5*time.Second).UnixMilli() {
		t.Fatalf("lease: %+v", l)
	}
	clk.Advance(4 * time.Second)
	if st := h.get("a"); st.ActiveLeases != 2 {
		t.Fatalf("expired early: %d", st.ActiveLeases)
	}
	clk.Advance(time.Second) // the expiry message is in the registry's mailbox when Advance returns
	if st := h.get("a"); st.ActiveLeases != 1 {
		t.Fatalf("TTL lease not expired at its TTL: %d leases", st.ActiveLeases)
	}
	if r := h.release("a", l.Lease.LeaseID); r.Err == nil || r.Err.Code != CodeLeaseNotFound {
		t.Fatalf("releasing an expired lease: %+v", r)
	}
	if r := h.release("a", keep.Lease.LeaseID); r.Err != nil || r.ActiveLeases != 0 {
		t.Fatalf("lease without TTL: %+v", r)
	}
}

func TestLeasesDroppedWhenPoolLeavesReady(t *testing.T) {
	h := newHarness(t, nil)
	h.register(readyStatus("a"))
	l := ask(h, h.reg, &AcquireLease{PoolID: "a"})
	st := readyStatus("a")
	st.State, st.Ready = StateBackoff, false
	SendRegistry(h.sys.Root, h.reg, &StatusUpdate{Status: st})
	if got := h.get("a"); got.ActiveLeases != 0 {
		t.Fatalf("leases kept after the engine died: %d", got.ActiveLeases)
	}
	if r := h.release("a", l.Lease.LeaseID); r.Err == nil || r.Err.Code != CodeLeaseNotFound {
		t.Fatalf("releasing a dropped lease: %+v", r)
	}
}
