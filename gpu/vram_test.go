package gpu

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

func TestVRAMRefusedAfterBoundedWait(t *testing.T) {
	srv, _ := newA100(t)
	d0 := dev(srv, 0)
	d0.MemoryInfo.Free = 1200 * mib
	clk := newSteppingClock()
	start := clk.Now()
	g := open(t, srv, Options{RequireNVIDIA: true, Clock: clk})

	_, err := g.Check(context.Background(), Requirements{Devices: []string{"0"}, MinFreeVRAMMiB: 6000})
	want := "gpu: device 0 (" + d0.UUID + "): 1200 MiB free, pool needs 6000 MiB (waited 5s for VRAM to be released)"
	if err == nil || err.Error() != want {
		t.Fatalf("Check = %v\nwant    %s", err, want)
	}
	if waited := clk.Now().Sub(start); waited != 5*time.Second {
		t.Errorf("waited %s, want the default 5s", waited)
	}
	// One read by the first look, then one per 100 ms poll.
	if n := len(d0.GetMemoryInfoCalls()); n != 1+50 {
		t.Errorf("GetMemoryInfo called %d times, want 51", n)
	}
}

func TestVRAMNoWaitWhenNegative(t *testing.T) {
	srv, _ := newA100(t)
	dev(srv, 0).MemoryInfo.Free = 1200 * mib
	g := open(t, srv, Options{RequireNVIDIA: true, VRAMWait: -1})
	_, err := g.Check(context.Background(), Requirements{Devices: []string{"0"}, MinFreeVRAMMiB: 6000})
	if err == nil || !strings.HasSuffix(err.Error(), "1200 MiB free, pool needs 6000 MiB") {
		t.Fatalf("Check = %v", err)
	}
}

// The engine that used the GPU before is still tearing down its context:
// memory comes back on the fourth read, within the wait.
func TestVRAMComesBackDuringWait(t *testing.T) {
	srv, _ := newA100(t)
	d1 := dev(srv, 1)
	total := d1.MemoryInfo.Total
	var reads atomic.Int32
	d1.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		if reads.Add(1) < 4 {
			return nvml.Memory{Total: total, Free: 500 * mib}, nvml.SUCCESS
		}
		return nvml.Memory{Total: total, Free: 30000 * mib}, nvml.SUCCESS
	}
	clk := newSteppingClock()
	start := clk.Now()
	g := open(t, srv, Options{RequireNVIDIA: true, Clock: clk, PollInterval: 250 * time.Millisecond})

	devs, err := g.Check(context.Background(), Requirements{Devices: []string{"0", "1"}, MinFreeVRAMMiB: 6000})
	if err != nil {
		t.Fatal(err)
	}
	if devs[1].MemoryFreeBytes != 30000*mib {
		t.Errorf("device 1 free = %d MiB, want the fresh 30000", devs[1].MemoryFreeBytes/mib)
	}
	if waited := clk.Now().Sub(start); waited != 750*time.Millisecond {
		t.Errorf("waited %s, want 3 polls of 250ms", waited)
	}
}

func TestVRAMWaitHonorsContextAndClose(t *testing.T) {
	for _, how := range []string{"cancel", "close"} {
		t.Run(how, func(t *testing.T) {
			srv, _ := newA100(t)
			dev(srv, 0).MemoryInfo.Free = 0
			clk := newStuckClock()
			g := open(t, srv, Options{RequireNVIDIA: true, Clock: clk})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error)
			go func() {
				_, err := g.Check(ctx, Requirements{Devices: []string{"0"}, MinFreeVRAMMiB: 1})
				done <- err
			}()
			<-clk.waiting // Check is in its VRAM wait
			if how == "cancel" {
				cancel()
			} else {
				go g.Close()
			}
			err := <-done
			switch {
			case how == "cancel" && !errors.Is(err, context.Canceled):
				t.Fatalf("Check = %v, want context.Canceled", err)
			case how == "close" && !errors.Is(err, errClosed):
				t.Fatalf("Check = %v, want %v", err, errClosed)
			}
		})
	}
}

// Pending ECC repairs are worth a warning, not a refusal.
func TestPendingRepairsWarnOnly(t *testing.T) {
	srv, _ := newA100(t)
	dev(srv, 0).GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_ENABLED, nvml.SUCCESS }
	dev(srv, 0).GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 1, true, false, nvml.SUCCESS }
	var logs logBuffer
	g := open(t, srv, Options{RequireNVIDIA: true, Logger: newTextLogger(&logs)})
	if _, err := g.Check(context.Background(), Requirements{Devices: []string{"0"}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"retired pages pending", "row remapping pending"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

func TestSnapshot(t *testing.T) {
	srv, _ := newA100(t)
	g := open(t, srv, Options{RequireNVIDIA: true})
	devs, err := g.Snapshot(context.Background())
	if err != nil || len(devs) != 8 || devs[7].Index != 7 || devs[7].UUID != dev(srv, 7).UUID {
		t.Fatalf("Snapshot = %+v, %v", devs, err)
	}
	// A lost GPU is named in the error; the others are still listed.
	dev(srv, 5).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST }
	devs, err = g.Snapshot(context.Background())
	if len(devs) != 7 || err == nil || !strings.Contains(err.Error(), "device 5 ("+dev(srv, 5).UUID+"): GetMemoryInfo: ERROR_GPU_IS_LOST") {
		t.Fatalf("Snapshot = %d devices, %v", len(devs), err)
	}
}
