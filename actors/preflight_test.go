package actors

import (
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/asynkron/protoactor-go/actor"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/gpu"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// preflightLlama finds the real llama-server and its tiny models
// (testutil.FindLlama), or skips the test naming what is missing.
func preflightLlama(t *testing.T) (bin, models string) {
	t.Helper()
	l := testutil.FindLlama(t)
	return l.Server, l.Models
}

func llamaPool(id, bin, model string) config.Pool {
	cfg := simPool(id)
	cfg.Command = []string{bin, "-m", "${MODEL_REF}", "--host", "${HOST}", "--port", "${PORT}", "-c", "256", "--parallel", "1", "--threads-http", "4"}
	cfg.Env = nil
	cfg.ModelRef = model
	cfg.StartupTimeout = time.Minute
	return cfg
}

// A reload of a running llama-server pool to a missing or corrupt model is
// refused at once with PREFLIGHT_FAILED; the engine keeps its pid and serves.
func TestPreflightRealLlamaReloadRefused(t *testing.T) {
	bin, models := preflightLlama(t)
	h := newHarness(t, nil)
	pid := h.spawn(llamaPool("tiny", bin, filepath.Join(models, "tiny-a.gguf")))
	old := h.waitState("tiny", StateReady)
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.gguf")
	if err := os.WriteFile(corrupt, []byte("this is not a model, only some text"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ model, want string }{
		{filepath.Join(dir, "missing.gguf"), "missing.gguf: no such file or directory"},
		{corrupt, `invalid magic "this", expected "GGUF"`},
	} {
		start := time.Now()
		r := ask(h, pid, &Reload{ModelRef: tc.model, Deadline: -1, Result: make(chan ReloadResult, 1)})
		took := time.Since(start)
		if r.Err == nil || r.Err.Code != CodePreflightFailed || !strings.Contains(r.Err.Message, tc.want) {
			t.Fatalf("reload to %s: %+v, want PREFLIGHT_FAILED naming %q", tc.model, r.Err, tc.want)
		}
		t.Logf("reload to %s refused in %s: %s", filepath.Base(tc.model), took, r.Err.Message)
		if took > 5*time.Second { // milliseconds in practice; a huge margin for a loaded machine
			t.Fatalf("refusal took %s", took)
		}
		st := h.get("tiny")
		if st.State != StateReady || st.PID == nil || *st.PID != *old.PID || st.Reloading {
			t.Fatalf("after refused reload: state %s pid %v (was %d) reloading %v", st.State, st.PID, *old.PID, st.Reloading)
		}
	}
	resp, err := http.Get(*old.URL + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("engine stopped answering: %v %v", resp, err)
	}
	resp.Body.Close()
	if logs := h.logs.String(); strings.Contains(logs, "drain.started") || strings.Contains(logs, "engine.stopped") {
		t.Fatalf("a refused reload touched the engine; logs:\n%s", logs)
	}
}

// A corrupt model makes llama-server exit; last_error carries its cause
// (invalid magic), classed model_load_error, not its last line.
func TestExitCauseRealLlamaCorruptModel(t *testing.T) {
	bin, _ := preflightLlama(t)
	corrupt := filepath.Join(t.TempDir(), "corrupt.gguf")
	if err := os.WriteFile(corrupt, []byte("this is not a model, only some text"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, nil)
	cfg := llamaPool("bad", bin, corrupt)
	cfg.Restart.MaxFailures = 0 // the first failure opens the breaker
	h.spawn(cfg)
	st := h.waitState("bad", StateFailed)
	if st.LastError == nil {
		t.Fatal("no last_error")
	}
	le := *st.LastError
	t.Logf("last_error: %s", le)
	if !strings.HasPrefix(le, "model_load_error: engine exited unexpectedly (") || !strings.Contains(le, "; cause: ") || !strings.Contains(le, "invalid magic") {
		t.Fatalf("last_error = %q, want model_load_error with the invalid magic line", le)
	}
	if !strings.Contains(h.logs.String(), `"msg":"pool.failure","pool_id":"bad","reason":"model_load_error"`) {
		t.Fatalf("pool.failure should say model_load_error; logs:\n%s", h.logs.String())
	}
}

// min_free_ram_mib above what the host has: the engine is never spawned and
// last_error gives both numbers; a reload asking for it is refused at once.
func TestPreflightHostRAM(t *testing.T) {
	h := newHarness(t, nil)
	greedy := simPool("greedy")
	greedy.MinFreeRAMMiB = 1 << 40
	greedy.Restart.MaxFailures = 0
	h.spawn(greedy)
	st := h.waitState("greedy", StateFailed)
	if st.Starts != 0 || st.PID != nil || st.LastError == nil ||
		!strings.Contains(*st.LastError, "MiB available (MemAvailable), pool needs 1099511627776 MiB (min_free_ram_mib)") {
		t.Fatalf("greedy pool: starts %d, pid %v, last_error %v", st.Starts, st.PID, st.LastError)
	}
	if !strings.Contains(h.logs.String(), `"reason":"insufficient_ram"`) {
		t.Fatalf("pool.failure should say insufficient_ram; logs:\n%s", h.logs.String())
	}

	cfg := simPool("p1")
	pid := h.spawn(cfg)
	old := h.waitState("p1", StateReady)
	next := cfg
	next.MinFreeRAMMiB = 1 << 40
	r := ask(h, pid, &Reload{Config: &next, Deadline: -1})
	if r.Err == nil || r.Err.Code != CodePreflightFailed || !strings.Contains(r.Err.Message, "pool needs 1099511627776 MiB") {
		t.Fatalf("reload needing 1 EiB: %+v", r.Err)
	}
	if st := h.get("p1"); *st.PID != *old.PID || st.State != StateReady {
		t.Fatalf("after the refusal: %+v", st)
	}
	next.MinFreeRAMMiB = 1 // the running engine's memory counts as available too
	res := make(chan ReloadResult, 1)
	if r := ask(h, pid, &Reload{Config: &next, Deadline: -1, Result: res}); r.Err != nil {
		t.Fatalf("reload needing 1 MiB: %+v", r.Err)
	}
	if out := <-res; out.Result != "succeeded" {
		t.Fatalf("reload needing 1 MiB: %+v", out)
	}
}

// mockGPUs is go-nvml's DGX A100 mock with every GPU idle; free[i] is GPU
// i's free memory in bytes, which the test may change while the guard reads.
func mockGPUs(t *testing.T) (*server.Server, gpu.Guard, []*atomic.Uint64) {
	t.Helper()
	srv := dgxa100.New()
	var free []*atomic.Uint64
	for _, d := range srv.Devices {
		dev := d.(*server.Device)
		f, total := new(atomic.Uint64), dev.MemoryInfo.Total
		f.Store(total)
		free = append(free, f)
		dev.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: total, Free: f.Load(), Used: total - f.Load()}, nvml.SUCCESS
		}
		dev.GetComputeModeFunc = func() (nvml.ComputeMode, nvml.Return) { return nvml.COMPUTEMODE_DEFAULT, nvml.SUCCESS }
		dev.GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_DISABLED, nvml.SUCCESS }
		dev.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 0, false, false, nvml.SUCCESS }
	}
	srv.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return nil, nvml.ERROR_NOT_SUPPORTED }
	g := gpu.Open(gpu.Options{RequireNVIDIA: true, Lib: srv, VRAMWait: -1, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { _ = g.Close() })
	return srv, g, free
}

func (h *harness) spawnWithGuard(cfg config.Pool, g gpu.Guard) *actor.PID {
	h.t.Helper()
	pid := h.sys.Root.Spawn(NewPoolProps(cfg, PoolDeps{Registry: h.reg, Clock: h.clock, Logger: h.logger(), Guard: g}))
	h.pools[cfg.ID] = pid
	return pid
}

// The VRAM preflight: free memory on a GPU the running engine does not use,
// total memory on one it does (its memory comes back when it stops).
func TestPreflightVRAM(t *testing.T) {
	srv, g, free := mockGPUs(t)
	d0, d1 := srv.Devices[0].(*server.Device), srv.Devices[1].(*server.Device)
	totalMiB := d0.MemoryInfo.Total >> 20
	h := newHarness(t, nil)
	cfg := simPool("p1")
	cfg.Devices, cfg.MinFreeVRAMMiB = []string{"0"}, 1000
	pid := h.spawnWithGuard(cfg, g)
	old := h.waitState("p1", StateReady)
	free[0].Store(0) // the engine holds all of GPU 0
	free[1].Store(500 << 20)

	refused := func(next config.Pool, want string) {
		t.Helper()
		r := ask(h, pid, &Reload{Config: &next, Deadline: -1})
		if r.Err == nil || r.Err.Code != CodePreflightFailed || !strings.Contains(r.Err.Message, want) {
			t.Fatalf("reload to devices %v needing %d MiB: %+v, want %q", next.Devices, next.MinFreeVRAMMiB, r.Err, want)
		}
		if st := h.get("p1"); *st.PID != *old.PID || st.State != StateReady {
			t.Fatalf("after the refusal: %+v", st)
		}
	}
	other := cfg
	other.Devices = []string{"1"}
	refused(other, "gpu: device 1 ("+d1.UUID+"): 500 MiB free, pool needs 1000 MiB (min_free_vram_mib)")
	huge := cfg
	huge.MinFreeVRAMMiB = totalMiB + 1
	refused(huge, "MiB in total (the running engine's memory comes back when it stops), pool needs")
	absent := cfg
	absent.Devices = []string{"GPU-no-such-uuid"}
	refused(absent, "gpu: device GPU-no-such-uuid: no such device; 8 present")

	// Same GPU, within its total: accepted although its free memory is 0 now.
	// A lease holds the drain, so the new engine's guardrail runs only after
	// the memory is back.
	same := cfg
	same.EngineVersion = "v2"
	l := h.lease("p1")
	res := make(chan ReloadResult, 1)
	if r := ask(h, pid, &Reload{Config: &same, Deadline: time.Minute, Result: res}); r.Err != nil {
		t.Fatalf("reload on the engine's own GPU: %+v", r.Err)
	}
	free[0].Store(d0.MemoryInfo.Total) // the stopped engine gives its memory back
	h.release("p1", l.Lease.LeaseID)
	if out := <-res; out.Result != "succeeded" {
		t.Fatalf("reload on the engine's own GPU: %+v", out)
	}
}
