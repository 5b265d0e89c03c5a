package actors

import "time"

// Observer receives the lifecycle facts that metrics count. Calls come from
// pool actors and their goroutines, so implementations must be concurrency
// safe and fast (a Prometheus counter increment, not I/O).
type Observer interface {
	Restart(poolID, reason string)                     // an engine was spawned again after a failure with this reason (restart_count rose)
	Failure(poolID, reason string)                     // any failure of a preload or a running engine
	Preload(poolID, outcome string, d time.Duration)   // outcome: ready | failed | cancelled
	Drain(poolID string, forced bool, d time.Duration) // a drain finished
	Reload(poolID, outcome string)                     // succeeded | rolled_back | failed | cancelled
	Probe(poolID, kind string, d time.Duration)        // kind: readiness | liveness
}

// NopObserver ignores everything.
type NopObserver struct{}

// NopObserver's methods do nothing.
func (NopObserver) Restart(string, string)                {}
func (NopObserver) Failure(string, string)                {}
func (NopObserver) Preload(string, string, time.Duration) {}
func (NopObserver) Drain(string, bool, time.Duration)     {}
func (NopObserver) Reload(string, string)                 {}
func (NopObserver) Probe(string, string, time.Duration)   {}
