// Package gpu is the NVIDIA-only guardrail behind a small domain interface.
// Only the NVML adapter in this package imports go-nvml; the rest of the daemon
// sees Guard.
package gpu

import (
	"context"
	"log/slog"
	"time"
)

// Device is one GPU as the guardrail saw it.
type Device struct {
	Index            int    `json:"index"`
	UUID             string `json:"uuid"`
	Name             string `json:"name"`
	MemoryTotalBytes uint64 `json:"memory_total_bytes"`
	MemoryFreeBytes  uint64 `json:"memory_free_bytes"`
}

// LogValue keeps log records short: the fields an operator matches on.
func (d Device) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("index", d.Index),
		slog.String("uuid", d.UUID),
		slog.Uint64("free_mib", d.MemoryFreeBytes>>20),
	)
}

// Requirements is what one pool needs before its engine may start.
type Requirements struct {
	PoolID         string
	Devices        []string // indices ("0") or UUIDs ("GPU-…"), as configured
	MinFreeVRAMMiB uint64
}

// Event is a health event on one device (an XID, a double-bit ECC error or a
// lost GPU).
type Event struct {
	UUID  string
	Index int
	// XID is the driver's Xid code; a double-bit ECC error reports 48 (the Xid
	// the driver logs for it) and a lost GPU, which has no Xid, reports 0.
	XID         uint64
	DeviceLevel bool // true: Check refuses the device until ClearUnhealthy (an operator restarting the pool)
	At          time.Time
	Message     string
}

// Guard answers "may this pool start, and on which devices?".
type Guard interface {
	// Check runs the pre-flight for one pool. On success it returns the
	// resolved devices (possibly none when the pool lists none). On refusal the
	// error's text names the NVML call or check that refused, e.g.
	// "gpu: NVML init: ERROR_LIBRARY_NOT_FOUND (no NVIDIA driver)".
	Check(ctx context.Context, req Requirements) ([]Device, error)
	// Snapshot lists every device NVML sees now (nil, nil without NVML).
	Snapshot(ctx context.Context) ([]Device, error)
	// Events delivers health events; nil when the guard has none. The channel
	// is closed by Close.
	Events() <-chan Event
	// ClearUnhealthy forgets a device-level health event on the device with
	// this UUID, so Check accepts it again. An operator's restart of a pool is
	// the signal that the device was looked at (reset, or judged fine).
	ClearUnhealthy(uuid string)
	// Close releases NVML (Shutdown once per successful Init).
	Close() error
}

// NoGuard is the guard for require_nvidia: false with no pool listing devices:
// it says yes and reports no devices.
type NoGuard struct{}

func (NoGuard) Check(context.Context, Requirements) ([]Device, error) { return nil, nil }
func (NoGuard) Snapshot(context.Context) ([]Device, error)            { return nil, nil }
func (NoGuard) Events() <-chan Event                                  { return nil }
func (NoGuard) ClearUnhealthy(string)                                 {}
func (NoGuard) Close() error                                          { return nil }
