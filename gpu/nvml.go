package gpu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// Options configures Open. Zero values mean the defaults noted.
type Options struct {
	// RequireNVIDIA makes every Check refuse while NVML is unusable. Without
	// it, pools that list no devices may start (CPU/dev pools), but a pool
	// that lists devices is still refused: no silent CPU fallback.
	RequireNVIDIA    bool
	MinDriverVersion string // optional, "535.0"; compared number by number
	Logger           *slog.Logger
	Lib              nvml.Interface // nil: the system's libnvidia-ml.so.1
	Clock            clock.Clock    // the VRAM wait, event pauses and stamps; nil: clock.Real
	// VRAMWait bounds how long Check waits for a device's free memory to come
	// back (a stopped engine's CUDA context takes a moment to be torn down).
	// 0: 5s; negative: no wait.
	VRAMWait     time.Duration
	PollInterval time.Duration // VRAM re-read interval during the wait; 0: 100ms
	// OnXID is called for every Xid event (the gpu_xid_events_total metric),
	// from the event goroutine: it must not block.
	OnXID func(uuid string, xid uint64)
}

const (
	defaultVRAMWait     = 5 * time.Second
	defaultPollInterval = 100 * time.Millisecond
	// eventWaitTimeout bounds one EventSet.Wait, hence how long Close waits
	// for the event goroutine before it may call Shutdown.
	eventWaitTimeout = 500 * time.Millisecond
	// eventErrorPause spaces retries after Wait fails for a reason other than
	// a timeout, so a broken event set cannot spin a CPU or flood the log.
	eventErrorPause = 5 * time.Second
	eventBuffer     = 64
)

var errClosed = errors.New("gpu: guard is closed")

// NVMLGuard is the Guard over NVML. Every NVML call is gated on the Init that
// Open made having succeeded: go-nvml calls into a library that was never
// loaded die with a symbol lookup error that recover cannot catch.
type NVMLGuard struct {
	lib           nvml.Interface
	log           *slog.Logger
	clock         clock.Clock
	requireNVIDIA bool
	minDriverRaw  string
	minDriver     []int
	minDriverErr  error
	vramWait      time.Duration
	poll          time.Duration
	onXID         func(uuid string, xid uint64)
	initErr       error // set once by Open; nil means Init succeeded

	// life makes Close wait for in-flight Check/Snapshot calls before it calls
	// Shutdown; stop makes a Check that waits for VRAM give up at once.
	life      sync.RWMutex
	closed    bool
	stop      chan struct{}
	closeOnce sync.Once
	closeErr  error

	mu        sync.Mutex
	unhealthy map[string]Event // uuid → the device-level event that marked it

	events     chan Event    // nil when no device reports health events
	eventsDone chan struct{} // closed when the event goroutine has returned
	dropped    atomic.Uint64
}

var _ Guard = (*NVMLGuard)(nil)

// Open initializes NVML once and, if that worked, starts the health-event
// goroutine. It never fails: when NVML cannot start, the returned guard
// (an *NVMLGuard) refuses in Check with the reason.
func Open(opts Options) Guard {
	g := &NVMLGuard{
		lib:           opts.Lib,
		log:           opts.Logger,
		clock:         opts.Clock,
		requireNVIDIA: opts.RequireNVIDIA,
		minDriverRaw:  opts.MinDriverVersion,
		vramWait:      opts.VRAMWait,
		poll:          opts.PollInterval,
		onXID:         opts.OnXID,
		stop:          make(chan struct{}),
		unhealthy:     map[string]Event{},
	}
	if g.lib == nil {
		g.lib = nvml.New()
	}
	if g.log == nil {
		g.log = slog.Default()
	}
	g.clock = clock.OrReal(g.clock)
	if g.vramWait == 0 {
		g.vramWait = defaultVRAMWait
	}
	if g.poll <= 0 {
		g.poll = defaultPollInterval
	}
	if g.minDriverRaw != "" {
		g.minDriver, g.minDriverErr = parseVersion(g.minDriverRaw)
	}

	if ret := g.lib.Init(); ret != nvml.SUCCESS {
		g.initErr = fmt.Errorf("NVML init: %s", describeReturn(ret, ""))
		if g.requireNVIDIA {
			g.log.Error("NVML unavailable; every pool will be refused", "err", g.initErr)
		} else {
			g.log.Warn("NVML unavailable; only pools listing no devices may start", "err", g.initErr)
		}
		return g
	}
	driver, _ := g.lib.SystemGetDriverVersion()
	count, _ := g.lib.DeviceGetCount()
	g.log.Info("NVML ready", "driver_version", driver, "devices", count)
	g.startEvents()
	return g
}

// Events delivers health events; nil when no device reports them.
func (g *NVMLGuard) Events() <-chan Event {
	if g.events == nil {
		return nil
	}
	return g.events
}

// Dropped counts events lost because nobody read Events fast enough.
func (g *NVMLGuard) Dropped() uint64 { return g.dropped.Load() }

// ClearUnhealthy forgets a device-level event on this UUID.
func (g *NVMLGuard) ClearUnhealthy(uuid string) {
	g.mu.Lock()
	ev, ok := g.unhealthy[uuid]
	delete(g.unhealthy, uuid)
	g.mu.Unlock()
	if ok {
		g.log.Info("GPU health mark cleared", "uuid", uuid, "xid", ev.XID, "marked_at", ev.At)
	}
}

func (g *NVMLGuard) markUnhealthy(ev Event) {
	g.mu.Lock()
	g.unhealthy[ev.UUID] = ev
	g.mu.Unlock()
}

func (g *NVMLGuard) unhealthyMark(uuid string) (Event, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ev, ok := g.unhealthy[uuid]
	return ev, ok
}

// Snapshot lists every device. Devices that fail to answer are left out and
// named in the error, so a status page still shows the healthy ones.
func (g *NVMLGuard) Snapshot(ctx context.Context) ([]Device, error) {
	g.life.RLock()
	defer g.life.RUnlock()
	if g.closed {
		return nil, errClosed
	}
	if g.initErr != nil {
		return nil, nil
	}
	n, ret := g.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("gpu: DeviceGetCount: %s", describeReturn(ret, ""))
	}
	var devs []Device
	var errs []error
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return devs, fmt.Errorf("gpu: snapshot: %w", err)
		}
		label := fmt.Sprint(i)
		h, ret := g.lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			errs = append(errs, callErr(label, "DeviceGetHandleByIndex", describeReturn(ret, "")))
			continue
		}
		d, err := describe(h, label)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		devs = append(devs, d)
	}
	return devs, errors.Join(errs...)
}

// Close stops the event goroutine and shuts NVML down, once, and only if Init
// succeeded. Check and Snapshot refuse afterwards.
func (g *NVMLGuard) Close() error {
	g.closeOnce.Do(func() {
		close(g.stop)
		g.life.Lock()
		g.closed = true
		g.life.Unlock()
		if g.eventsDone != nil {
			<-g.eventsDone
		}
		if g.initErr != nil {
			return
		}
		if ret := g.lib.Shutdown(); ret != nvml.SUCCESS {
			g.closeErr = fmt.Errorf("gpu: NVML shutdown: %s", describeReturn(ret, ""))
		}
	})
	return g.closeErr
}

// describe reads what Device reports. label names the device as configured.
func describe(h nvml.Device, label string) (Device, error) {
	uuid, ret := h.GetUUID()
	if ret != nvml.SUCCESS {
		return Device{}, callErr(label, "GetUUID", describeReturn(ret, ""))
	}
	label = deviceLabel(label, uuid)
	name, ret := h.GetName()
	if ret != nvml.SUCCESS {
		return Device{}, callErr(label, "GetName", describeReturn(ret, ""))
	}
	idx, ret := h.GetIndex()
	if ret != nvml.SUCCESS {
		// A MIG instance has no index of its own; report its parent GPU's.
		if parent, r := h.GetDeviceHandleFromMigDeviceHandle(); r == nvml.SUCCESS {
			idx, ret = parent.GetIndex()
		}
	}
	if ret != nvml.SUCCESS {
		return Device{}, callErr(label, "GetIndex", describeReturn(ret, ""))
	}
	mem, ret := h.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return Device{}, callErr(label, "GetMemoryInfo", describeReturn(ret, ""))
	}
	return Device{Index: idx, UUID: uuid, Name: name, MemoryTotalBytes: mem.Total, MemoryFreeBytes: mem.Free}, nil
}

// deviceLabel is "0 (GPU-…)" for a device configured by index and just the
// UUID for one configured by UUID.
func deviceLabel(configured, uuid string) string {
	if configured == uuid {
		return configured
	}
	return configured + " (" + uuid + ")"
}

func callErr(label, call, what string) error {
	return fmt.Errorf("gpu: device %s: %s: %s", label, call, what)
}
