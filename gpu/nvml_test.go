package gpu

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// On a machine without libnvidia-ml.so.1 go-nvml's dlopen fails and Init
// answers ERROR_LIBRARY_NOT_FOUND; nothing else may be called, or the process
// dies. This runs the real library, not a double.
func TestOpenRealLibraryWithoutDriver(t *testing.T) {
	g := Open(Options{RequireNVIDIA: true, Clock: newSteppingClock(), Logger: slog.New(slog.DiscardHandler)}).(*NVMLGuard)
	defer g.Close()
	if g.initErr == nil {
		t.Skip("an NVIDIA driver is present; see real_gpu_test.go")
	}
	_, err := g.Check(context.Background(), Requirements{PoolID: "p", Devices: []string{"0"}})
	want := map[string]bool{
		"gpu: NVML init: ERROR_LIBRARY_NOT_FOUND (no NVIDIA driver)":                true,
		"gpu: NVML init: ERROR_DRIVER_NOT_LOADED (NVIDIA kernel driver not loaded)": true, // library installed, module not loaded
	}
	if err == nil || !want[err.Error()] {
		t.Fatalf("Check = %v, want a refusal naming the missing driver", err)
	}
	if devs, err := g.Snapshot(context.Background()); devs != nil || err != nil {
		t.Fatalf("Snapshot = %v, %v; want nil, nil", devs, err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestInitFailure(t *testing.T) {
	for _, tc := range []struct {
		ret   nvml.Return
		cause string
	}{
		{nvml.ERROR_LIBRARY_NOT_FOUND, "NVML init: ERROR_LIBRARY_NOT_FOUND (no NVIDIA driver)"},
		{nvml.ERROR_DRIVER_NOT_LOADED, "NVML init: ERROR_DRIVER_NOT_LOADED (NVIDIA kernel driver not loaded)"},
		{nvml.ERROR_NO_PERMISSION, "NVML init: ERROR_NO_PERMISSION (no permission to the NVIDIA device files)"},
	} {
		t.Run(returnName(tc.ret), func(t *testing.T) {
			ctx := context.Background()
			// Every func but Init is nil: any other call would panic.
			lib := &mock.Interface{InitFunc: func() nvml.Return { return tc.ret }}

			required := open(t, lib, Options{RequireNVIDIA: true})
			for _, devices := range [][]string{nil, {"0"}} {
				if _, err := required.Check(ctx, Requirements{Devices: devices}); err == nil || err.Error() != "gpu: "+tc.cause {
					t.Errorf("require_nvidia, devices %v: Check = %v, want %q", devices, err, "gpu: "+tc.cause)
				}
			}
			if required.Events() != nil {
				t.Error("Events() should be nil without NVML")
			}

			optional := open(t, lib, Options{})
			if devs, err := optional.Check(ctx, Requirements{}); devs != nil || err != nil {
				t.Errorf("no devices listed: Check = %v, %v; want nil, nil", devs, err)
			}
			want := "gpu: pool lists devices [0] but NVML is unavailable: " + tc.cause
			if _, err := optional.Check(ctx, Requirements{Devices: []string{"0"}}); err == nil || err.Error() != want {
				t.Errorf("devices listed: Check = %v, want %q", err, want)
			}
			if devs, err := optional.Snapshot(ctx); devs != nil || err != nil {
				t.Errorf("Snapshot = %v, %v; want nil, nil", devs, err)
			}

			for _, g := range []*NVMLGuard{required, optional} {
				if err := g.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
			if n := len(lib.InitCalls()); n != 2 {
				t.Errorf("Init called %d times, want once per Open", n)
			}
			if n := len(lib.ShutdownCalls()); n != 0 {
				t.Errorf("Shutdown called %d times after a failed Init", n)
			}
		})
	}
}

// Records the order of library calls: Init must come first, Shutdown last
// and once, however often Close is called.
func TestInitFirstShutdownOnce(t *testing.T) {
	srv, _ := newA100(t)
	var mu sync.Mutex
	var calls []string
	rec := func(name string) {
		mu.Lock()
		calls = append(calls, name)
		mu.Unlock()
	}
	init, shutdown, driver, count := srv.InitFunc, srv.ShutdownFunc, srv.SystemGetDriverVersionFunc, srv.DeviceGetCountFunc
	byIndex, byUUID, eventSet := srv.DeviceGetHandleByIndexFunc, srv.DeviceGetHandleByUUIDFunc, srv.EventSetCreateFunc
	srv.InitFunc = func() nvml.Return { rec("Init"); return init() }
	srv.ShutdownFunc = func() nvml.Return { rec("Shutdown"); return shutdown() }
	srv.SystemGetDriverVersionFunc = func() (string, nvml.Return) { rec("SystemGetDriverVersion"); return driver() }
	srv.DeviceGetCountFunc = func() (int, nvml.Return) { rec("DeviceGetCount"); return count() }
	srv.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) { rec("DeviceGetHandleByIndex"); return byIndex(i) }
	srv.DeviceGetHandleByUUIDFunc = func(u string) (nvml.Device, nvml.Return) { rec("DeviceGetHandleByUUID"); return byUUID(u) }
	srv.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { rec("EventSetCreate"); return eventSet() }

	g := open(t, srv, Options{RequireNVIDIA: true, MinDriverVersion: "535"})
	if _, err := g.Check(context.Background(), Requirements{Devices: []string{"1", dev(srv, 2).UUID}}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := g.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.Check(context.Background(), Requirements{Devices: []string{"0"}}); !errors.Is(err, errClosed) {
		t.Errorf("Check after Close = %v, want %v", err, errClosed)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls[0] != "Init" || calls[len(calls)-1] != "Shutdown" {
		t.Errorf("calls = %v; want Init first and Shutdown last", calls)
	}
	if n := len(srv.ShutdownCalls()); n != 1 {
		t.Errorf("Shutdown called %d times, want 1", n)
	}
}

func TestCheckAccepts(t *testing.T) {
	srv, _ := newA100(t)
	g := open(t, srv, Options{RequireNVIDIA: true, MinDriverVersion: "535.0"})
	uuid3 := dev(srv, 3).UUID
	devs, err := g.Check(context.Background(), Requirements{PoolID: "p", Devices: []string{"0", uuid3}, MinFreeVRAMMiB: 6000})
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || devs[0].Index != 0 || devs[0].UUID != dev(srv, 0).UUID || devs[1].Index != 3 || devs[1].UUID != uuid3 {
		t.Fatalf("devices = %+v", devs)
	}
	if devs[0].Name != "Mock NVIDIA A100-SXM4-40GB" || devs[0].MemoryTotalBytes != 40*1024*mib || devs[0].MemoryFreeBytes != devs[0].MemoryTotalBytes {
		t.Errorf("device 0 = %+v", devs[0])
	}
	env := CUDAEnv(devs)
	if env["CUDA_VISIBLE_DEVICES"] != dev(srv, 0).UUID+","+uuid3 || env["CUDA_DEVICE_ORDER"] != "PCI_BUS_ID" {
		t.Errorf("CUDAEnv = %v", env)
	}
	if devs, err := g.Check(context.Background(), Requirements{}); devs != nil || err != nil {
		t.Errorf("no devices: Check = %v, %v", devs, err)
	}
}

func TestCheckRefuses(t *testing.T) {
	const missingUUID = "GPU-00000000-0000-0000-0000-000000000000"
	for _, tc := range []struct {
		name    string
		setup   func(*caseEnv)
		devices []string
		want    string // the whole message; "~" prefix: a substring
	}{
		{"driver too old", func(o *caseEnv) { o.srv.DriverVersion = "470.57"; o.opts.MinDriverVersion = "535.0" },
			[]string{"0"}, "gpu: driver 470.57 is older than min_driver_version 535.0"},
		{"bad min_driver_version", func(o *caseEnv) { o.opts.MinDriverVersion = "latest" },
			[]string{"0"}, `gpu: min_driver_version: "latest" is not a dotted version number`},
		{"index missing", nil,
			[]string{"9"}, "gpu: device 9: DeviceGetHandleByIndex: ERROR_INVALID_ARGUMENT (no such device; 8 present)"},
		{"uuid missing", nil,
			[]string{missingUUID}, "gpu: device " + missingUUID + ": DeviceGetHandleByUUID: ERROR_INVALID_ARGUMENT (no such device; 8 present)"},
		{"not a device", nil,
			[]string{"gpu0"}, `gpu: device "gpu0": neither an index nor a GPU-/MIG- UUID`},
		{"gpu lost", func(o *caseEnv) {
			dev(o.srv, 2).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST }
		}, []string{"2"}, "~: GetMemoryInfo: ERROR_GPU_IS_LOST (GPU fell off the bus or is inaccessible; reset or reboot)"},
		{"compute mode prohibited", func(o *caseEnv) {
			dev(o.srv, 1).GetComputeModeFunc = func() (nvml.ComputeMode, nvml.Return) { return nvml.COMPUTEMODE_PROHIBITED, nvml.SUCCESS }
		}, []string{"0", "1"}, "~: GetComputeMode: COMPUTEMODE_PROHIBITED"},
		{"same GPU twice", nil, []string{"4", "$uuid4"}, "~ are the same GPU"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := newA100(t)
			o := &caseEnv{srv: srv, opts: Options{RequireNVIDIA: true}}
			if tc.setup != nil {
				tc.setup(o)
			}
			for i, d := range tc.devices {
				if d == "$uuid4" {
					tc.devices[i] = dev(srv, 4).UUID
				}
			}
			g := open(t, srv, o.opts)
			_, err := g.Check(context.Background(), Requirements{Devices: tc.devices})
			if err == nil {
				t.Fatal("Check accepted")
			}
			if sub, ok := strings.CutPrefix(tc.want, "~"); ok {
				if !strings.Contains(err.Error(), sub) {
					t.Fatalf("Check = %q, want it to contain %q", err, sub)
				}
			} else if err.Error() != tc.want {
				t.Fatalf("Check = %q\nwant    %q", err, tc.want)
			}
		})
	}
}

// caseEnv lets a table case adjust both the simulated server and Options.
type caseEnv struct {
	srv  *server.Server
	opts Options
}
