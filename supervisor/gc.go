package supervisor

import (
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// DefaultGCPercent is the daemon's garbage-collector target (GOGC) when its
// environment sets none. An idle daemon's garbage is its probes' (a few KiB
// each); at Go's default of 100 the heap grows to twice what is live
// between collections and stays resident, which at 256 pools is some 5 MiB
// of RSS. 50 collects twice as often, a few ms of CPU per minute.
const DefaultGCPercent = 50

// BootGCPercent is the collector's target while the daemon's pools start
// (see newBootGC), in place of DefaultGCPercent. A start grows the heap from
// nothing to what every pool keeps; at 50 that is a collection every 50 %
// of growth, each scanning the stacks of thousands of goroutines: with 256
// pools starting on two cores the collector was a quarter to a third of the
// daemon's CPU, taken from the engines starting beside it.
const BootGCPercent = 200

// bootGCMax bounds the relaxed target: a pool that preloads for minutes
// (a large model) does not keep it.
const bootGCMax = time.Minute

// gcDefaultApplied: ApplyGCDefault set DefaultGCPercent (no GOGC).
var gcDefaultApplied atomic.Bool

// ApplyGCDefault sets the collector's target to DefaultGCPercent unless the
// environment has GOGC (which then rules, as for any Go program, and can
// turn collection off with GOGC=off), and returns the target it set, or -2
// when it left GOGC's alone. GOMEMLIMIT is never touched. The daemon's main
// calls it once at start. Only when it set the default does the daemon
// relax it while its pools start (BootGCPercent).
func ApplyGCDefault() int {
	if _, set := os.LookupEnv("GOGC"); set {
		gcDefaultApplied.Store(false)
		return -2
	}
	debug.SetGCPercent(DefaultGCPercent)
	gcDefaultApplied.Store(true)
	return DefaultGCPercent
}

// bootGC is the relaxed collector target of a daemon's start: BootGCPercent
// from newBootGC until every pool has started (observe) or max has passed,
// then DefaultGCPercent again, once, and the memory the start left free is
// returned to the OS so the idle RSS is what DefaultGCPercent gives. A nil
// bootGC (GOGC set, or ApplyGCDefault never called) does nothing.
type bootGC struct {
	mu    sync.Mutex
	done  atomic.Bool // the start has ended (or the daemon stopped); set under mu
	timer clock.Timer
}

// newBootGC relaxes the target when the daemon's default is in force; nil
// otherwise.
func newBootGC(clk clock.Clock, max time.Duration) *bootGC {
	if !gcDefaultApplied.Load() {
		return nil
	}
	b := &bootGC{}
	b.mu.Lock()
	defer b.mu.Unlock()
	debug.SetGCPercent(BootGCPercent)
	b.timer = clk.AfterFunc(max, b.end)
	return b
}

// observe ends the relaxed target once every pool has started: none is
// stopped (registered, its first preload not yet begun) or in preload.
// Once it has ended, a status change costs no look at the pools.
func (b *bootGC) observe(counts map[actors.State]int) {
	if b == nil || b.done.Load() {
		return
	}
	if counts[actors.StatePreload] > 0 || counts[actors.StateStopped] > 0 {
		return
	}
	b.end()
}

// end restores DefaultGCPercent (only the first time) and returns free
// memory to the OS.
func (b *bootGC) end() {
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.done.Load() {
		b.mu.Unlock()
		return
	}
	b.done.Store(true)
	b.timer.Stop()
	debug.SetGCPercent(DefaultGCPercent)
	b.mu.Unlock()
	debug.FreeOSMemory()
}

// stop drops the bound's timer (the daemon's shutdown) and, when the start
// had not ended yet, puts DefaultGCPercent back (a process that runs
// another daemon next, such as a test binary, does not keep the relaxed
// target).
func (b *bootGC) stop() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done.Load() {
		debug.SetGCPercent(DefaultGCPercent)
	}
	b.done.Store(true)
	b.timer.Stop()
}
