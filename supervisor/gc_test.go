package supervisor

import (
	"os"
	"runtime/debug"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// Without GOGC the daemon collects at DefaultGCPercent; with it, GOGC rules.
func TestApplyGCDefault(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	t.Cleanup(func() { gcDefaultApplied.Store(false) }) // later daemons of this test binary get no boot GC

	t.Setenv("GOGC", "")
	if got := ApplyGCDefault(); got != -2 {
		t.Fatalf("GOGC set (empty): ApplyGCDefault = %d, want -2 (left alone)", got)
	}
	if p := debug.SetGCPercent(100); p != 100 {
		t.Fatalf("GOGC set: percent changed to %d", p)
	}

	t.Setenv("GOGC", "200") // registers the restore of the original value
	unsetenv(t, "GOGC")
	if got := ApplyGCDefault(); got != DefaultGCPercent {
		t.Fatalf("no GOGC: ApplyGCDefault = %d, want %d", got, DefaultGCPercent)
	}
	if p := debug.SetGCPercent(100); p != DefaultGCPercent {
		t.Fatalf("no GOGC: percent %d, want %d", p, DefaultGCPercent)
	}
}

func unsetenv(t *testing.T, k string) {
	t.Helper()
	if err := os.Unsetenv(k); err != nil {
		t.Fatal(err)
	}
}

// While pools start, the daemon's own GC default is relaxed to
// BootGCPercent; it is back at DefaultGCPercent once every pool has started
// (none stopped or preloading),
// or after the bound at the latest. With GOGC set nothing is touched.
func TestBootGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	t.Cleanup(func() { gcDefaultApplied.Store(false) })
	t.Setenv("GOGC", "200")
	unsetenv(t, "GOGC")
	ApplyGCDefault()
	percent := func() int { p := debug.SetGCPercent(-1); debug.SetGCPercent(p); return p }
	preload := map[actors.State]int{actors.StateReady: 1, actors.StatePreload: 1}
	ready := map[actors.State]int{actors.StateReady: 1, actors.StateFailed: 1}

	clk := clock.NewFake(time.Unix(0, 0))
	b := newBootGC(clk, time.Minute)
	if p := percent(); p != BootGCPercent {
		t.Fatalf("starting: percent %d, want %d", p, BootGCPercent)
	}
	b.observe(preload)
	if p := percent(); p != BootGCPercent {
		t.Fatalf("a pool preloading: percent %d, want %d", p, BootGCPercent)
	}
	b.observe(map[actors.State]int{actors.StateReady: 1, actors.StateStopped: 1})
	if p := percent(); p != BootGCPercent {
		t.Fatalf("a pool registered, not yet preloading: percent %d, want %d", p, BootGCPercent)
	}
	b.observe(ready)
	if p := percent(); p != DefaultGCPercent {
		t.Fatalf("no pool preloading: percent %d, want %d", p, DefaultGCPercent)
	}
	debug.SetGCPercent(77) // someone else's choice afterwards: never overridden again
	b.observe(preload)
	b.observe(ready)
	clk.Advance(time.Hour)
	if p := percent(); p != 77 {
		t.Fatalf("after the end: percent %d, want it left at 77", p)
	}

	debug.SetGCPercent(DefaultGCPercent)
	b = newBootGC(clk, time.Minute)
	b.observe(preload)
	clk.Advance(time.Minute)
	if p := percent(); p != DefaultGCPercent {
		t.Fatalf("past the bound with a pool still preloading: percent %d, want %d", p, DefaultGCPercent)
	}
	b.stop()

	// A daemon shut down while its pools still start puts the default back.
	b = newBootGC(clk, time.Minute)
	b.observe(preload)
	b.stop()
	if p := percent(); p != DefaultGCPercent {
		t.Fatalf("stopped during the start: percent %d, want %d", p, DefaultGCPercent)
	}

	t.Setenv("GOGC", "100")
	ApplyGCDefault()
	debug.SetGCPercent(100)
	b = newBootGC(clk, time.Minute)
	b.observe(preload)
	if p := percent(); p != 100 {
		t.Fatalf("GOGC set: percent %d, want it left at 100", p)
	}
	b.observe(ready)
	b.stop()
}
