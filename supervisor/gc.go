package supervisor

import (
	"os"
	"runtime/debug"
)

// DefaultGCPercent is the daemon's garbage-collector target (GOGC) when its
// environment sets none. An idle daemon's garbage is its probes' (a few KiB
// each); at Go's default of 100 the heap grows to twice what is live
// between collections and stays resident, which at 256 pools is some 5 MiB
// of RSS. 50 collects twice as often, a few ms of CPU per minute.
const DefaultGCPercent = 50

// ApplyGCDefault sets the collector's target to DefaultGCPercent unless the
// environment has GOGC (which then rules, as for any Go program, and can
// turn collection off with GOGC=off), and returns the target it set, or -2
// when it left GOGC's alone. GOMEMLIMIT is never touched. The daemon's main
// calls it once at start.
func ApplyGCDefault() int {
	if _, set := os.LookupEnv("GOGC"); set {
		return -2
	}
	debug.SetGCPercent(DefaultGCPercent)
	return DefaultGCPercent
}
