package actors

import (
	"encoding/json"
	"log/slog"

	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/gpu"
)

// State is a pool's lifecycle state. String-typed so logs and JSON read
// without a lookup.
type State string

const (
	StateStopped  State = "stopped"
	StatePreload  State = "preload"
	StateReady    State = "ready"
	StateDraining State = "draining"
	StateBackoff  State = "backoff"
	StateFailed   State = "failed"
)

// States lists every state (metrics export one series per state).
var States = []State{StateStopped, StatePreload, StateReady, StateDraining, StateBackoff, StateFailed}

// DrainInfo describes the last finished drain.
type DrainInfo struct {
	Forced      bool  `json:"forced"`
	DurationMS  int64 `json:"duration_ms"`
	FinalLeases int   `json:"final_leases"`
}

// ReloadInfo describes the last finished reload.
type ReloadInfo struct {
	Result     string `json:"result"` // succeeded | rolled_back | failed
	RolledBack bool   `json:"rolled_back"`
	DurationMS int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
}

// PoolStatus is the read model of one pool (docs/contract.md §4). The pool actor is
// its only writer; the registry stores copies and adds the lease count.
// Pointer fields are JSON null when unknown, never omitted.
type PoolStatus struct {
	PoolID              string        `json:"pool_id"`
	State               State         `json:"state"`
	Live                bool          `json:"live"`
	Ready               bool          `json:"ready"`
	Draining            bool          `json:"draining"`
	Engine              string        `json:"engine"`
	EngineVersion       string        `json:"engine_version"`
	ModelRef            string        `json:"model_ref"`
	PID                 *int          `json:"pid"`
	URL                 *string       `json:"url"`
	ActiveLeases        int           `json:"active_leases"`
	Slots               int           `json:"slots"`
	RestartCount        int           `json:"restart_count"` // engine spawns that restart after a failure (backoff elapsed)
	Starts              int           `json:"starts"`        // every engine spawn: first start, restarts, operator starts, reloads, rollbacks
	ConsecutiveFailures int           `json:"consecutive_failures"`
	LastError           *string       `json:"last_error"`
	LastErrorAtMS       *int64        `json:"last_error_at_ms"`
	LastHeartbeatMS     *int64        `json:"last_heartbeat_ms"`
	StateSinceMS        int64         `json:"state_since_ms"`
	StartedAtMS         *int64        `json:"started_at_ms"` // when the current engine was spawned
	ReadySinceMS        *int64        `json:"ready_since_ms"`
	NextRestartAtMS     *int64        `json:"next_restart_at_ms"`
	Devices             []gpu.Device  `json:"devices"`
	LastDrain           *DrainInfo    `json:"last_drain"`
	LastReload          *ReloadInfo   `json:"last_reload"`
	Reloading           bool          `json:"reloading"`
	EngineMetrics       *EngineMetric `json:"engine_metrics"`
	// Containment is what keeps the engine's processes from outliving it:
	// "cgroup" (a cgroup v2 of its own, emptied with cgroup.kill) or
	// "marker" (every process carrying its environment marker is killed).
	// Before the first start it is what the next start will use.
	Containment string `json:"containment"`
	// Where engine_version and slots came from: "config" (the pool's
	// config or a reload), "engine" (asked of the engine once it was ready:
	// llama-server /props, vLLM /version, TGI /info), null when unknown.
	EngineVersionSource *string `json:"engine_version_source"`
	SlotsSource         *string `json:"slots_source"`
	// ModelDigest is "sha256:<hex>" of the model file when model_ref is an
	// absolute path to a regular file, hashed in the background (null until
	// it is known, and for model names).
	ModelDigest *string `json:"model_digest"`
}

// Sources of engine facts in the status.
const (
	SourceConfig = "config"
	SourceEngine = "engine"
)

// EngineMetric is what the daemon scraped from the engine's own metrics.
type EngineMetric struct {
	RequestsProcessing float64 `json:"requests_processing"`
	RequestsDeferred   float64 `json:"requests_deferred"`
	// Series are the engine's allow-listed series the daemon re-exports on
	// its /metrics (engine.QueueSeries.Export); not in the API. Shared by
	// every copy of the status: never modified.
	Series []engine.Sample `json:"-"`
}

// MarshalJSON writes engine_version as null when the config gives none
// (docs/contract.md §4: unknown fields are null, never omitted or empty).
func (s PoolStatus) MarshalJSON() ([]byte, error) {
	type plain PoolStatus // no methods: no recursion
	out := struct {
		plain
		EngineVersion *string `json:"engine_version"`
	}{plain: plain(s)}
	if s.EngineVersion != "" {
		out.EngineVersion = &s.EngineVersion
	}
	return json.Marshal(out)
}

// LogValue keeps log lines short: a pool is its id and state.
func (s PoolStatus) LogValue() slog.Value {
	return slog.GroupValue(slog.String("pool_id", s.PoolID), slog.String("state", string(s.State)))
}

// Transition is one state change, as published on the event stream.
type Transition struct {
	PoolID string `json:"pool_id"`
	From   State  `json:"from"`
	To     State  `json:"to"`
	Reason string `json:"reason"`
	AtMS   int64  `json:"at_ms"`
	// Seq numbers the transitions the registry publishes, from 1 in each
	// daemon run (the SSE id; 0 before the registry numbered it).
	Seq uint64 `json:"-"`
}

// ptr returns a pointer to a copy of v (for the status's nullable fields).
func ptr[T any](v T) *T { return &v }
