package gpu

import (
	"bytes"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// steppingClock is a clock.Fake that jumps to each timer's due time as the
// timer is made, so a 5 s VRAM wait runs in microseconds and the test can
// still tell how much time "passed".
type steppingClock struct{ *clock.Fake }

func newSteppingClock() steppingClock {
	return steppingClock{clock.NewFake(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))}
}

// NewTimer makes the timer and advances the clock to it: its channel holds
// the value when NewTimer returns.
func (c steppingClock) NewTimer(d time.Duration) (clock.Timer, <-chan time.Time) {
	t, ch := c.Fake.NewTimer(d)
	c.Advance(d)
	return t, ch
}

// stuckClock is a clock.Fake nobody advances, which reports that someone is
// waiting on it: waiting is closed at the first NewTimer (a close, not a
// send, so the report is not lost when the test is not receiving yet).
type stuckClock struct {
	*clock.Fake
	waiting chan struct{}
	once    sync.Once
}

func newStuckClock() *stuckClock {
	return &stuckClock{Fake: clock.NewFake(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)), waiting: make(chan struct{})}
}

// NewTimer makes a timer that never fires and reports the waiter.
func (c *stuckClock) NewTimer(d time.Duration) (clock.Timer, <-chan time.Time) {
	c.once.Do(func() { close(c.waiting) })
	return c.Fake.NewTimer(d)
}

// eventFeed is a go-nvml mock.EventSet fed from the test.
type eventFeed struct {
	set    *mock.EventSet
	ch     chan feedItem
	idle   chan int64 // receives the count of events served, when none are queued
	served atomic.Int64
}

type feedItem struct {
	data nvml.EventData
	ret  nvml.Return
}

func newEventFeed() *eventFeed {
	f := &eventFeed{ch: make(chan feedItem, 128), idle: make(chan int64)}
	take := func(it feedItem) (nvml.EventData, nvml.Return) {
		f.served.Add(1)
		return it.data, it.ret
	}
	f.set = &mock.EventSet{
		WaitFunc: func(uint32) (nvml.EventData, nvml.Return) {
			select {
			case it := <-f.ch:
				return take(it)
			default:
			}
			// Nothing queued and Wait called again: every event served so far
			// has been handled by the guard.
			select {
			case f.idle <- f.served.Load():
			default:
			}
			select {
			case it := <-f.ch:
				return take(it)
			case <-time.After(5 * time.Millisecond): // stands in for NVML's timeout
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
		},
		FreeFunc: func() nvml.Return { return nvml.SUCCESS },
	}
	return f
}

func (f *eventFeed) xid(dev nvml.Device, xid uint64) {
	f.ch <- feedItem{data: nvml.EventData{Device: dev, EventType: nvml.EventTypeXidCriticalError, EventData: xid}}
}

// waitHandled blocks until the guard has handled n events.
func (f *eventFeed) waitHandled(t *testing.T, n int64) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-f.idle:
			if got >= n {
				return
			}
		case <-timeout:
			t.Fatalf("guard did not handle %d events", n)
		}
	}
}

// newA100 is go-nvml's simulated DGX A100 with the device functions the guard
// uses and the simulator leaves unset filled in as a healthy GPU would answer,
// all memory free, and events fed by the returned feed.
func newA100(t *testing.T) (*server.Server, *eventFeed) {
	t.Helper()
	srv := dgxa100.New()
	for _, d := range srv.Devices {
		dev := d.(*server.Device)
		dev.MemoryInfo.Free = dev.MemoryInfo.Total
		dev.GetComputeModeFunc = func() (nvml.ComputeMode, nvml.Return) { return nvml.COMPUTEMODE_DEFAULT, nvml.SUCCESS }
		dev.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) { return nvml.EventTypeAll, nvml.SUCCESS }
		dev.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.SUCCESS }
		dev.GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_DISABLED, nvml.SUCCESS }
		dev.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 0, false, false, nvml.SUCCESS }
	}
	feed := newEventFeed()
	srv.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return feed.set, nvml.SUCCESS }
	return srv, feed
}

func dev(srv *server.Server, i int) *server.Device { return srv.Devices[i].(*server.Device) }

// open opens a guard over lib with a fake clock and a quiet logger, closed at
// the end of the test.
func open(t *testing.T, lib nvml.Interface, opts Options) *NVMLGuard {
	t.Helper()
	opts.Lib = lib
	if opts.Clock == nil {
		opts.Clock = newSteppingClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	g := Open(opts).(*NVMLGuard)
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// logBuffer is a log sink safe to share with the event goroutine.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const mib = 1 << 20

func newTextLogger(w *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
