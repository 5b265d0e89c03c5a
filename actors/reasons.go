// This file names the actors' vocabulary: why an attempt or an engine
// failed, how a reload ended, and which phase a reload is in. The values are
// what logs, metrics labels, status JSON and API answers carry; they do not
// change.

package actors

import "github.com/pool-managerd/pool-managerd/engine"

// FailureReason says why a preload or a running engine failed: the reason
// of a pool.failure log record, of the backoff transition, and the label of
// failures_total and (once the restart spawns) restarts_total.
type FailureReason string

// Failures the pool actor detects by itself.
const (
	ReasonModelMissing    FailureReason = "model_missing"    // model_ref is an absolute path that does not exist
	ReasonInsufficientRAM FailureReason = "insufficient_ram" // less host RAM free than min_free_ram_mib
	ReasonGuardrail       FailureReason = "guardrail"        // the GPU guardrail refused (devices, free VRAM)
	ReasonSpawnError      FailureReason = "spawn_error"      // the engine could not be started
	ReasonStartupTimeout  FailureReason = "startup_timeout"  // not ready within startup_timeout
	ReasonStallTimeout    FailureReason = "stall_timeout"    // no output and no readiness change for stall_timeout while preloading
	ReasonLiveness        FailureReason = "liveness"         // liveness probes failed (or went unanswered past busy_grace)
	ReasonGPUXid          FailureReason = "gpu_xid"          // a GPU the engine uses reported an XID error
	ReasonCanary          FailureReason = "canary"           // the inference canary failed (before ready, or idle re-runs at liveness.failure_threshold)
)

// Unexpected exits: an engine that ended by itself fails with the class
// engine.Classify gives its exit.
const (
	ReasonExitCode       = FailureReason(engine.ReasonExitCode)
	ReasonSignal         = FailureReason(engine.ReasonSignal)
	ReasonHostOOM        = FailureReason(engine.ReasonHostOOM)
	ReasonCUDAOOM        = FailureReason(engine.ReasonCUDAOOM)
	ReasonModelLoadError = FailureReason(engine.ReasonModelLoadError)
	ReasonDriverError    = FailureReason(engine.ReasonDriverError)
)

// ReloadOutcome is how a reload ended: ReloadResult.Result, the reload's
// status (last_reload.result), the reload.finished log record and the
// reloads_total label.
type ReloadOutcome string

const (
	ReloadSucceeded  ReloadOutcome = "succeeded"   // the new model is ready
	ReloadRolledBack ReloadOutcome = "rolled_back" // the new model failed; the previous one is ready again
	ReloadFailed     ReloadOutcome = "failed"      // the new model failed and so did the previous one
	ReloadCancelled  ReloadOutcome = "cancelled"   // a drain (API, shutdown, config removal) ended it first
)

// reloadPhase is where a reload is: draining the old engine, starting the
// new model, or starting the old one again after the new one failed.
type reloadPhase string

const (
	phaseDrain    reloadPhase = "drain"
	phaseNew      reloadPhase = "new"
	phaseRollback reloadPhase = "rollback"
)
