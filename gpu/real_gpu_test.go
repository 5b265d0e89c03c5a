package gpu

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"
)

// TestRealGPU runs the guard against the host's driver. It is opt-in because
// CI has no GPU: POOL_MANAGERD_REAL_GPU=1 go test -run RealGPU -v ./gpu
func TestRealGPU(t *testing.T) {
	if os.Getenv("POOL_MANAGERD_REAL_GPU") != "1" {
		t.Skip("set POOL_MANAGERD_REAL_GPU=1 to run against the host's NVIDIA driver")
	}
	g := Open(Options{RequireNVIDIA: true, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}).(*NVMLGuard)
	defer func() {
		if err := g.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	if g.initErr != nil {
		t.Fatalf("NVML: %v", g.initErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	driver, _ := g.lib.SystemGetDriverVersion()
	t.Logf("driver %s", driver)
	devs, err := g.Snapshot(ctx)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if len(devs) == 0 {
		t.Fatal("Snapshot found no devices")
	}
	for _, d := range devs {
		t.Logf("device %d %s %s: %d MiB total, %d MiB free", d.Index, d.UUID, d.Name, d.MemoryTotalBytes>>20, d.MemoryFreeBytes>>20)
	}
	checked, err := g.Check(ctx, Requirements{PoolID: "real-gpu-test", Devices: []string{"0"}, MinFreeVRAMMiB: 1})
	if err != nil {
		t.Fatalf("Check device 0: %v", err)
	}
	t.Logf("summary: driver %s, %d device(s), Check(0) accepted %s, events watched: %v, env %v",
		driver, len(devs), checked[0].UUID, g.Events() != nil, CUDAEnv(checked))
}
