// Built-in defaults and engine presets (the table in doc.go mirrors these).

package config

import "time"

const (
	DefaultListen           = "127.0.0.1:9200"
	DefaultShutdownDeadline = 30 * time.Second
)

// Engines are the accepted values of a pool's engine key.
var Engines = []string{"llamacpp", "vllm", "tgi", "triton", "other"}

// Placeholders are the ${NAME}s allowed in command and env values. SELF is the
// absolute path of the pool-managerd binary (the demo runs its simulator).
var Placeholders = []string{"PORT", "HOST", "MODEL_REF", "POOL_ID", "SELF"}

// preset holds the probe paths an engine implies; "" leaves the level below.
type preset struct{ readiness, liveness string }

var presets = map[string]preset{
	"llamacpp": {"/health", "/health"},
	"vllm":     {"/health", "/health"},
	"tgi":      {"/health", "/health"}, // TGI answers 200 only once the model is loaded
	"triton":   {"/v2/health/ready", "/v2/health/live"},
	"other":    {},
}

func (pr preset) apply(p *Pool) {
	if pr.readiness != "" {
		p.Readiness.Path = pr.readiness
	}
	if pr.liveness != "" {
		p.Liveness.Path = pr.liveness
	}
}

func defaultConfig() *Config {
	return &Config{
		Listen:           DefaultListen,
		ShutdownDeadline: DefaultShutdownDeadline,
		Log:              Log{Format: "auto", Level: "info"},
		GPU:              GPU{RequireNVIDIA: true},
		Pools:            []Pool{},
	}
}

// builtinPool is the bottom of the precedence chain: what a pool gets when
// neither it, its engine preset nor the defaults block says otherwise.
func builtinPool() Pool {
	return Pool{
		Host:           "127.0.0.1",
		StartupTimeout: 10 * time.Minute, // big models load slowly from cold disks
		StallTimeout:   2 * time.Minute,
		StopGrace:      10 * time.Second,
		DrainDeadline:  30 * time.Second,
		Readiness:      Probe{Path: "/health", Timeout: time.Second},
		Liveness:       Probe{Path: "/health", Interval: 5 * time.Second, Timeout: 2 * time.Second, FailureThreshold: 3, BusyGrace: 5 * time.Minute},
		Restart: Restart{
			Initial: time.Second, Multiplier: 2, Max: time.Minute, Jitter: 0.1,
			ResetAfter: 10 * time.Minute, MaxFailures: 5, Window: 10 * time.Minute,
		},
	}
}
