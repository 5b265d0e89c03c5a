// Resolved configuration types; see doc.go for the file format and defaults.

package config

import "time"

// Config is a fully resolved, validated configuration.
type Config struct {
	Listen           string        // "127.0.0.1:9200" or "unix:/path"
	ShutdownDeadline time.Duration // SIGTERM: how long pools may drain
	Auth             Auth
	StateDir         string // pid records for the orphan sweep; "" disables records
	// CgroupParent is where each engine gets a cgroup v2 of its own: "" or
	// "auto" (the daemon's own cgroup when it may write it, e.g. systemd
	// Delegate=yes), "off" (no cgroups: the environment marker only), or an
	// absolute path below the cgroup2 mount.
	CgroupParent string
	Log          Log
	GPU          GPU
	Pools        []Pool // in file order; ids unique
}

// Auth configures the API bearer token. Secrets never come from the YAML itself:
// only a token file path does (POOL_MANAGERD_TOKEN overrides it at run time).
type Auth struct {
	TokenFile string
}

// Log selects the daemon's log handler.
type Log struct {
	Format string // "auto" (default: text on a terminal, else JSON), "json" or "text"
	Level  string // "debug", "info" (default), "warn", "error"
}

// GPU holds the NVIDIA guardrail's global settings.
type GPU struct {
	RequireNVIDIA    bool   // default true
	MinDriverVersion string // optional, e.g. "535.0"
}

// Probe is one HTTP health probe.
type Probe struct {
	Path             string
	Interval         time.Duration // liveness only
	Timeout          time.Duration
	FailureThreshold int // liveness only
	// BusyGrace (liveness only) bounds how long probes may keep timing out
	// while the engine shows it is working (output, CPU, in-flight requests)
	// before that counts as a failure; 0 makes every timeout a failure.
	BusyGrace time.Duration
}

// Canary is an optional inference request that must answer 2xx before a
// pool becomes ready (a "minimal decode": an engine whose /health says 200
// may still be unable to generate).
type Canary struct {
	Enabled bool
	Path    string        // POST here; default per engine (llamacpp /completion, vllm and tgi /v1/completions)
	Body    string        // JSON body; ${MODEL_REF} is replaced by the pool's model_ref (JSON-escaped)
	Timeout time.Duration // default 30s
	// IdleAfter (0: never) runs the canary again while the pool is ready
	// once the engine has been idle this long (no canary, and no requests in
	// flight in its metrics, for IdleAfter).
	IdleAfter time.Duration
}

// Restart is the restart policy of one pool.
type Restart struct {
	Initial     time.Duration
	Multiplier  float64
	Max         time.Duration
	Jitter      float64 // randomization factor, 0..1
	ResetAfter  time.Duration
	MaxFailures int
	Window      time.Duration
}

// Pool is one pool with every default and preset applied.
type Pool struct {
	ID             string
	Engine         string // llamacpp | vllm | tgi | triton | other
	EngineVersion  string
	ModelRef       string
	Command        []string          // argv with placeholders still in it
	Env            map[string]string // values with placeholders still in them
	Host           string            // loopback host the engine listens on; default 127.0.0.1
	Port           int               // 0: a free loopback port at each start
	Devices        []string          // GPU indices or UUIDs, as written
	MinFreeVRAMMiB uint64
	MinFreeRAMMiB  uint64 // host RAM (MemAvailable) needed before a spawn; 0 = no check
	Slots          int    // most leases at once; 0 = no limit
	User           string // run the engine as this user (daemon must be root)
	MetricsPath    string // optional: the engine's own Prometheus endpoint
	Canary         Canary // optional: off unless the pool has a canary block
	// ReloadAllowed, when set, lists the model roots (absolute paths) and
	// reference prefixes a reload over the API may name; see CheckModelRef.
	ReloadAllowed []string

	StartupTimeout time.Duration
	StallTimeout   time.Duration
	StopGrace      time.Duration
	DrainDeadline  time.Duration
	Readiness      Probe
	Liveness       Probe
	Restart        Restart

	Line int // line of the pool's entry in its file (for messages); not part of equality
}
