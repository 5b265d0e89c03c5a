package gpu

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Check runs the pre-flight for one pool: NVML up, driver new enough, every
// listed device present, healthy, usable and with enough free memory. The
// error names the NVML call or the check that refused. The driver check
// applies even to a pool that lists no devices, since min_driver_version is a
// host-wide setting; such a pool gets nil devices.
func (g *NVMLGuard) Check(ctx context.Context, req Requirements) ([]Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("gpu: %w", err)
	}
	g.life.RLock()
	defer g.life.RUnlock()
	if g.closed {
		return nil, errClosed
	}
	if g.initErr != nil {
		switch {
		case g.requireNVIDIA:
			return nil, fmt.Errorf("gpu: %w", g.initErr)
		case len(req.Devices) == 0:
			return nil, nil
		default:
			return nil, fmt.Errorf("gpu: pool lists devices %v but NVML is unavailable: %w", req.Devices, g.initErr)
		}
	}
	if err := g.checkDriver(); err != nil {
		return nil, err
	}
	if len(req.Devices) == 0 {
		return nil, nil
	}
	handles := make([]nvml.Device, len(req.Devices))
	devs := make([]Device, len(req.Devices))
	seen := map[string]string{}
	for i, id := range req.Devices {
		h, d, err := g.checkDevice(id)
		if err != nil {
			return nil, err
		}
		if other, dup := seen[d.UUID]; dup {
			// Listing one GPU twice would double-count its VRAM.
			return nil, fmt.Errorf("gpu: devices %s and %s are the same GPU %s", other, id, d.UUID)
		}
		seen[d.UUID] = id
		handles[i], devs[i] = h, d
	}
	return g.waitForVRAM(ctx, req, handles, devs)
}

// checkDriver compares the running driver with min_driver_version.
func (g *NVMLGuard) checkDriver() error {
	if g.minDriverRaw == "" {
		return nil
	}
	if g.minDriverErr != nil {
		return fmt.Errorf("gpu: min_driver_version: %w", g.minDriverErr)
	}
	v, ret := g.lib.SystemGetDriverVersion()
	if ret != nvml.SUCCESS {
		return fmt.Errorf("gpu: SystemGetDriverVersion: %s", describeReturn(ret, ""))
	}
	have, err := parseVersion(v)
	if err != nil {
		return fmt.Errorf("gpu: driver version: %w", err)
	}
	if versionLess(have, g.minDriver) {
		return fmt.Errorf("gpu: driver %s is older than min_driver_version %s", v, g.minDriverRaw)
	}
	return nil
}

// checkDevice resolves one configured device and runs the checks that do not
// wait: health mark, compute mode, pending ECC repairs (a warning only).
func (g *NVMLGuard) checkDevice(id string) (nvml.Device, Device, error) {
	h, err := g.handle(id)
	if err != nil {
		return nil, Device{}, err
	}
	d, err := describe(h, id)
	if err != nil {
		return nil, Device{}, err
	}
	label := deviceLabel(id, d.UUID)
	if ev, bad := g.unhealthyMark(d.UUID); bad {
		return nil, Device{}, fmt.Errorf("gpu: device %s: unhealthy since %s at %s; restarting the pool clears the mark",
			label, ev.Message, ev.At.UTC().Format("2006-01-02T15:04:05Z"))
	}
	mode, ret := h.GetComputeMode()
	switch {
	case ret == nvml.ERROR_NOT_SUPPORTED: // MIG instances and some boards: nothing to check
	case ret != nvml.SUCCESS:
		return nil, Device{}, callErr(label, "GetComputeMode", describeReturn(ret, ""))
	case mode == nvml.COMPUTEMODE_PROHIBITED:
		return nil, Device{}, fmt.Errorf("gpu: device %s: GetComputeMode: COMPUTEMODE_PROHIBITED (no CUDA context allowed; nvidia-smi -c DEFAULT)", label)
	}
	g.warnPendingRepairs(h, d)
	return h, d, nil
}

// warnPendingRepairs logs ECC repairs that wait for a GPU reset. They are not
// a refusal: the GPU still works, but an operator should schedule the reset.
func (g *NVMLGuard) warnPendingRepairs(h nvml.Device, d Device) {
	if st, ret := h.GetRetiredPagesPendingStatus(); ret == nvml.SUCCESS && st == nvml.FEATURE_ENABLED {
		g.log.Warn("GPU has retired pages pending; reset the GPU to retire them", "device", d)
	}
	if _, _, pending, failed, ret := h.GetRemappedRows(); ret == nvml.SUCCESS && (pending || failed) {
		g.log.Warn("GPU has row remapping pending or failed; reset the GPU", "device", d,
			"remap_pending", pending, "remap_failed", failed)
	}
}

// handle resolves an index ("0") or a UUID ("GPU-…", "MIG-…").
func (g *NVMLGuard) handle(id string) (nvml.Device, error) {
	if strings.HasPrefix(id, "GPU-") || strings.HasPrefix(id, "MIG-") {
		h, ret := g.lib.DeviceGetHandleByUUID(id)
		if ret != nvml.SUCCESS {
			return nil, g.lookupErr(id, "DeviceGetHandleByUUID", ret)
		}
		return h, nil
	}
	idx, err := strconv.Atoi(id)
	if err != nil || idx < 0 {
		return nil, fmt.Errorf("gpu: device %q: neither an index nor a GPU-/MIG- UUID", id)
	}
	h, ret := g.lib.DeviceGetHandleByIndex(idx)
	if ret != nvml.SUCCESS {
		return nil, g.lookupErr(id, "DeviceGetHandleByIndex", ret)
	}
	return h, nil
}

// lookupErr says how many devices exist when a lookup found none, since a
// wrong index or a UUID from another host is the usual cause.
func (g *NVMLGuard) lookupErr(id, call string, ret nvml.Return) error {
	extra := ""
	if ret == nvml.ERROR_INVALID_ARGUMENT || ret == nvml.ERROR_NOT_FOUND {
		extra = "no such device"
		if n, r := g.lib.DeviceGetCount(); r == nvml.SUCCESS {
			extra = fmt.Sprintf("no such device; %d present", n)
		}
	}
	return callErr(id, call, describeReturn(ret, extra))
}

// waitForVRAM accepts once every device has MinFreeVRAMMiB free, re-reading
// memory every poll interval for up to the VRAM wait: the engine that last
// used the GPU may still be releasing its memory.
func (g *NVMLGuard) waitForVRAM(ctx context.Context, req Requirements, handles []nvml.Device, devs []Device) ([]Device, error) {
	need := req.MinFreeVRAMMiB << 20
	deadline := g.clock.Now().Add(g.vramWait)
	for waited := false; ; waited = true {
		short := -1
		for i, d := range devs {
			if d.MemoryFreeBytes < need {
				short = i
				break
			}
		}
		if short < 0 {
			return devs, nil
		}
		d := devs[short]
		lack := fmt.Sprintf("gpu: device %s: %d MiB free, pool needs %d MiB",
			deviceLabel(req.Devices[short], d.UUID), d.MemoryFreeBytes>>20, req.MinFreeVRAMMiB)
		if !g.clock.Now().Before(deadline) {
			if g.vramWait < 0 {
				return nil, fmt.Errorf("%s", lack)
			}
			return nil, fmt.Errorf("%s (waited %s for VRAM to be released)", lack, g.vramWait)
		}
		if !waited {
			g.log.Info("waiting for VRAM to be released", "pool_id", req.PoolID, "device", d,
				"need_mib", req.MinFreeVRAMMiB, "wait", g.vramWait)
		}
		t, polled := g.clock.NewTimer(g.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%s; stopped waiting: %w", lack, ctx.Err())
		case <-g.stop:
			t.Stop()
			return nil, errClosed
		case <-polled:
		}
		for i, h := range handles {
			mem, ret := h.GetMemoryInfo()
			if ret != nvml.SUCCESS {
				return nil, callErr(deviceLabel(req.Devices[i], devs[i].UUID), "GetMemoryInfo", describeReturn(ret, ""))
			}
			devs[i].MemoryFreeBytes, devs[i].MemoryTotalBytes = mem.Free, mem.Total
		}
	}
}
