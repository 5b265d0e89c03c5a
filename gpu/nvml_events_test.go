package gpu

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

func nextEvent(t *testing.T, g *NVMLGuard) Event {
	t.Helper()
	select {
	case ev, ok := <-g.Events():
		if !ok {
			t.Fatal("Events closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	return Event{}
}

func TestXIDEvents(t *testing.T) {
	srv, feed := newA100(t)
	var mu sync.Mutex
	var counted []uint64
	g := open(t, srv, Options{RequireNVIDIA: true, OnXID: func(uuid string, xid uint64) {
		if uuid != dev(srv, 3).UUID {
			t.Errorf("OnXID uuid %s", uuid)
		}
		mu.Lock()
		counted = append(counted, xid)
		mu.Unlock()
	}})
	ctx := context.Background()
	check3 := func() error {
		_, err := g.Check(ctx, Requirements{Devices: []string{"3"}})
		return err
	}
	if g.Events() == nil {
		t.Fatal("no event channel")
	}

	// Engine-level: the event says so and the device stays usable.
	feed.xid(dev(srv, 3), 13)
	ev := nextEvent(t, g)
	if ev.XID != 13 || ev.DeviceLevel || ev.Index != 3 || ev.UUID != dev(srv, 3).UUID || ev.At.IsZero() {
		t.Fatalf("event = %+v", ev)
	}
	if err := check3(); err != nil {
		t.Fatalf("after XID 13: %v", err)
	}

	// Unknown Xid (NVML's 999): engine-level too.
	feed.xid(dev(srv, 3), 999)
	if ev := nextEvent(t, g); ev.XID != 999 || ev.DeviceLevel {
		t.Fatalf("event = %+v", ev)
	}

	// Device-level: the device is refused until ClearUnhealthy; others are not.
	feed.xid(dev(srv, 3), 79)
	if ev := nextEvent(t, g); ev.XID != 79 || !ev.DeviceLevel {
		t.Fatalf("event = %+v", ev)
	}
	err := check3()
	if err == nil || !strings.Contains(err.Error(), "device 3 ("+dev(srv, 3).UUID+"): unhealthy since XID 79 (GPU has fallen off the bus)") {
		t.Fatalf("after XID 79: Check = %v", err)
	}
	if _, err := g.Check(ctx, Requirements{Devices: []string{"0"}}); err != nil {
		t.Fatalf("device 0 after XID 79 on 3: %v", err)
	}
	g.ClearUnhealthy(dev(srv, 3).UUID)
	if err := check3(); err != nil {
		t.Fatalf("after ClearUnhealthy: %v", err)
	}

	// Double-bit ECC: device-level, reported as XID 48, not counted as an Xid event.
	feed.ch <- feedItem{data: nvml.EventData{Device: dev(srv, 3), EventType: nvml.EventTypeDoubleBitEccError}}
	if ev := nextEvent(t, g); ev.XID != 48 || !ev.DeviceLevel {
		t.Fatalf("event = %+v", ev)
	}
	if err := check3(); err == nil || !strings.Contains(err.Error(), "XID 48") {
		t.Fatalf("after double-bit ECC: Check = %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	if want := []uint64{13, 999, 79}; len(counted) != 3 || counted[0] != want[0] || counted[1] != want[1] || counted[2] != want[2] {
		t.Errorf("OnXID saw %v, want %v", counted, want)
	}
}

// Wait answering ERROR_GPU_IS_LOST does not say which GPU: the guard asks each.
func TestGPULostDuringWait(t *testing.T) {
	srv, feed := newA100(t)
	g := open(t, srv, Options{RequireNVIDIA: true})
	dev(srv, 5).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST }
	feed.ch <- feedItem{ret: nvml.ERROR_GPU_IS_LOST}
	ev := nextEvent(t, g)
	if ev.UUID != dev(srv, 5).UUID || ev.Index != 5 || !ev.DeviceLevel || ev.XID != 0 || !strings.Contains(ev.Message, "ERROR_GPU_IS_LOST") {
		t.Fatalf("event = %+v", ev)
	}
}

func TestEventsDroppedWhenNobodyReads(t *testing.T) {
	srv, feed := newA100(t)
	g := open(t, srv, Options{RequireNVIDIA: true})
	for range eventBuffer + 6 {
		feed.xid(dev(srv, 0), 13)
	}
	feed.waitHandled(t, eventBuffer+6)
	if n := g.Dropped(); n != 6 {
		t.Fatalf("Dropped = %d, want 6", n)
	}
}

func TestEventsRegistration(t *testing.T) {
	srv, feed := newA100(t)
	// Device 0 has no ECC (no DBE events); device 1 supports none; device 2
	// refuses registration. Only supported types are asked for.
	dev(srv, 0).GetSupportedEventTypesFunc = func() (uint64, nvml.Return) { return nvml.EventTypeXidCriticalError, nvml.SUCCESS }
	dev(srv, 1).GetSupportedEventTypesFunc = func() (uint64, nvml.Return) { return 0, nvml.SUCCESS }
	dev(srv, 2).RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.ERROR_NOT_SUPPORTED }
	g := open(t, srv, Options{RequireNVIDIA: true})
	if g.Events() == nil {
		t.Fatal("no event channel")
	}
	if calls := dev(srv, 0).RegisterEventsCalls(); len(calls) != 1 || calls[0].V != nvml.EventTypeXidCriticalError {
		t.Errorf("device 0 registered %+v", calls)
	}
	if n := len(dev(srv, 1).RegisterEventsCalls()); n != 0 {
		t.Errorf("device 1 registered %d times", n)
	}
	if calls := dev(srv, 3).RegisterEventsCalls(); len(calls) != 1 || calls[0].V != healthEvents {
		t.Errorf("device 3 registered %+v", calls)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if _, open := <-g.Events(); open {
		t.Error("Events not closed by Close")
	}
	if n := len(feed.set.FreeCalls()); n != 1 {
		t.Errorf("EventSet freed %d times", n)
	}
}

func TestNoEventsWhenNoDeviceSupportsThem(t *testing.T) {
	srv, feed := newA100(t)
	for i := range srv.Devices {
		dev(srv, i).RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.ERROR_NOT_SUPPORTED }
	}
	g := open(t, srv, Options{RequireNVIDIA: true})
	if g.Events() != nil {
		t.Error("Events() should be nil")
	}
	if n := len(feed.set.FreeCalls()); n != 1 {
		t.Errorf("EventSet freed %d times", n)
	}
	if _, err := g.Check(context.Background(), Requirements{Devices: []string{"0"}}); err != nil {
		t.Fatal(err)
	}
}
