package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/gpu"
)

// Error codes shared by actors and the API (docs/contract.md §4). actors knows no HTTP:
// the supervisor maps codes to status codes.
const (
	CodeInvalidParams    = "INVALID_PARAMS"
	CodePoolNotFound     = "POOL_NOT_FOUND"
	CodeLeaseNotFound    = "LEASE_NOT_FOUND"
	CodePoolUnready      = "POOL_UNREADY"
	CodePoolDraining     = "POOL_DRAINING"
	CodePoolBusy         = "POOL_BUSY"
	CodeReloadInProgress = "RELOAD_IN_PROGRESS"
	CodeReloadFailed     = "RELOAD_FAILED"
	CodePreflightFailed  = "PREFLIGHT_FAILED" // a reload's new model/config failed its checks; nothing was touched
	CodePoolUnavailable  = "POOL_UNAVAILABLE"
	CodeInternal         = "INTERNAL"
)

// Error is a domain error answered by an actor.
type Error struct {
	Code         string
	Message      string
	RetryAfterMS int64 // 0: none
}

// Error is "CODE: message".
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// ---- registry messages ----

// RegisterPool announces a pool actor to the registry.
type RegisterPool struct {
	Status PoolStatus
	PID    *actor.PID
}

// UnregisterPool removes a pool (after it stopped for good). PID must be the
// actor that registered it: a pool re-added under the same id meanwhile is
// a different actor and stays.
type UnregisterPool struct {
	PoolID string
	PID    *actor.PID
}

// StatusUpdate carries a pool's new status and the transitions that led to
// it. PID identifies the sending actor: updates from an actor that is no
// longer the registered one (a removed pool still stopping) are ignored.
type StatusUpdate struct {
	Status      PoolStatus
	Transitions []Transition
	PID         *actor.PID
}

// GetPools asks for every pool, sorted by id. Reply: PoolsReply.
type GetPools struct{}

// PoolsReply answers GetPools.
type PoolsReply struct{ Pools []PoolStatus }

// GetPool asks for one pool. Reply: PoolReply.
type GetPool struct{ PoolID string }

// PoolReply answers GetPool; Found is false for an unknown id.
type PoolReply struct {
	Status PoolStatus
	PID    *actor.PID
	Found  bool
}

// AcquireLease allocates a lease on one pool. Reply: LeaseReply.
type AcquireLease struct {
	PoolID string
	TTL    time.Duration // 0: no expiry
}

// Place picks a pool and allocates a lease on it atomically. Reply: LeaseReply.
type Place struct {
	PoolIDs  []string // empty: any pool
	ModelRef string   // empty: any model
	TTL      time.Duration
}

// Lease is one allocated lease.
type Lease struct {
	LeaseID      string `json:"lease_id"`
	PoolID       string `json:"pool_id"`
	URL          string `json:"url"`
	ActiveLeases int    `json:"active_leases"`
	ExpiresAtMS  *int64 `json:"expires_at_ms"`
}

// LeaseReply answers AcquireLease and Place.
type LeaseReply struct {
	Lease Lease
	Err   *Error
}

// ReleaseLease releases one lease. Reply: ReleaseReply.
type ReleaseLease struct{ PoolID, LeaseID string }

// ReleaseReply answers ReleaseLease.
type ReleaseReply struct {
	ActiveLeases int
	Err          *Error
}

// Subscribe registers a channel that receives every transition. The
// registry never blocks on it: a subscriber that falls a full buffer behind
// has its channel closed and must resubscribe.
type Subscribe struct{ Ch chan Transition }

// Unsubscribe removes a channel registered with Subscribe.
type Unsubscribe struct{ Ch chan Transition }

// Ping is answered with Pong: the watchdog's proof that the registry answers.
type Ping struct{}

// Pong answers Ping.
type Pong struct{}

type leaseExpired struct{ PoolID, LeaseID string }

// The registry's messages (RegistryMessage).
func (*RegisterPool) registryMessage()    {}
func (*UnregisterPool) registryMessage()  {}
func (*StatusUpdate) registryMessage()    {}
func (*GetPools) registryMessage()        {}
func (*GetPool) registryMessage()         {}
func (*AcquireLease) registryMessage()    {}
func (*Place) registryMessage()           {}
func (*ReleaseLease) registryMessage()    {}
func (*Subscribe) registryMessage()       {}
func (*SubscribeEvents) registryMessage() {}
func (*Unsubscribe) registryMessage()     {}
func (*Ping) registryMessage()            {}
func (*Broadcast) registryMessage()       {}
func (*leaseExpired) registryMessage()    {}

// The registry's questions and their replies (Question).
func (*GetPools) answeredBy(*PoolsReply)            {}
func (*GetPool) answeredBy(*PoolReply)              {}
func (*AcquireLease) answeredBy(*LeaseReply)        {}
func (*Place) answeredBy(*LeaseReply)               {}
func (*ReleaseLease) answeredBy(*ReleaseReply)      {}
func (*SubscribeEvents) answeredBy(*SubscribeReply) {}
func (*Ping) answeredBy(*Pong)                      {}

// ---- pool messages (closed set: each implements PoolMessage) ----

// Drain asks the pool to stop taking leases and stop its engine once leases
// reach 0 or at the deadline. Reply: CommandReply.
type Drain struct {
	Deadline      time.Duration
	Reason        string // "api", "shutdown", "config_removed"
	CorrelationID string // the API request's X-Correlation-Id, logged with what it causes
}

// Reload replaces the pool's model/version (or its whole config when Config is
// set) with rollback on failure. Reply: CommandReply. When Result is not nil
// the final ReloadResult is sent on it (it must be buffered).
type Reload struct {
	ModelRef      string
	EngineVersion string       // "": keep the current one
	Config        *config.Pool // SIGHUP: the pool's whole new config
	Deadline      time.Duration
	Result        chan ReloadResult
	CorrelationID string
}

// ReloadResult is the outcome of one reload.
type ReloadResult struct {
	Result        ReloadOutcome
	RolledBack    bool
	EngineVersion string
	Duration      time.Duration
	Error         string
}

// Start moves a stopped, failed or backing-off pool straight to preload and
// closes its breaker. Reply: CommandReply.
type Start struct{ CorrelationID string }

// CommandReply answers Drain, Reload and Start.
type CommandReply struct {
	State   State
	Changed bool // Start: false when already preloading or ready
	Err     *Error
}

// GetStatus asks a pool actor for its own status (the registry may list
// another actor under the same id). Reply: PoolReply.
type GetStatus struct{}

// LeasesChanged tells a draining pool how many leases it still has.
type LeasesChanged struct{ Active int }

// GPUEvent forwards a health event of a device the pool may use.
type GPUEvent struct{ Event gpu.Event }

// GetLogs asks for the engine's last output lines. Reply: LogsReply.
type GetLogs struct{ Tail int }

// LogsReply answers GetLogs.
type LogsReply struct{ Lines []engine.Line }

// Broadcast asks the registry to forward Msg, a pool message (GPUEvent,
// DevicesUpdate), to every pool actor.
type Broadcast struct{ Msg PoolMessage }

// DevicesUpdate carries a fresh NVML snapshot; each pool refreshes the free
// memory of the devices it uses (placement's tie-break, the GPU metric).
type DevicesUpdate struct{ Devices []gpu.Device }

// The commands, queries and notices a pool actor handles (PoolMessage; its
// internal messages are marked where they are declared).
func (*Drain) poolMessage()         {}
func (*Reload) poolMessage()        {}
func (*Start) poolMessage()         {}
func (*GetStatus) poolMessage()     {}
func (*GetLogs) poolMessage()       {}
func (*LeasesChanged) poolMessage() {}
func (*GPUEvent) poolMessage()      {}
func (*DevicesUpdate) poolMessage() {}

// The pool's questions and their replies (Question).
func (*Drain) answeredBy(*CommandReply)  {}
func (*Reload) answeredBy(*CommandReply) {}
func (*Start) answeredBy(*CommandReply)  {}
func (*GetStatus) answeredBy(*PoolReply) {}
func (*GetLogs) answeredBy(*LogsReply)   {}
