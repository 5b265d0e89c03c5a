// Package config reads and validates pool-managerd's YAML configuration
// (docs/contract.md §2). Decoding is strict: an unknown key is an error naming the key
// and its line, and every problem in a file is reported at once as an
// [*Errors], one "file:line: key: message" per line.
//
// The types are the resolved form: defaults and engine presets have been
// applied, so the rest of the daemon never looks at "defaults" again.
//
// # Precedence
//
// Every pool key is taken from, in order: the pool's own key, its engine's
// preset, the file's "defaults" block, the built-in defaults below. A key given,
// even as 0, is that value. A partial readiness, liveness or restart block
// merges field by field with the level below it.
//
// Engine presets set probe paths (and the request a canary: {} block sends):
// llamacpp, vllm and tgi probe /health; triton probes /v2/health/ready
// (readiness) and /v2/health/live (liveness); other has no preset. Because a preset outranks "defaults", a probe path in
// "defaults" only reaches pools whose engine is "other".
//
// # Built-in defaults
//
//	listen: 127.0.0.1:9200           # or unix:/abs/path
//	shutdown_deadline: 30s
//	state_dir: ""                    # no path is invented here; see Config.StateDir
//	cgroup_parent: auto              # auto | off | /sys/fs/cgroup/<path>; see Config.CgroupParent
//	auth: {token_file: ""}           # POOL_MANAGERD_TOKEN may supply the token instead
//	log: {format: auto, level: info}  # auto: text on a terminal, else JSON
//	gpu: {require_nvidia: true, min_driver_version: ""}
//	defaults:
//	  startup_timeout: 10m           # > 0
//	  stall_timeout: 2m              # >= 0; 0 turns the stall check off
//	  stop_grace: 10s                # > 0
//	  drain_deadline: 30s            # >= 0
//	  readiness: {path: /health, timeout: 1s}
//	  liveness:  {path: /health, interval: 5s, timeout: 2s, failure_threshold: 3,
//	              busy_grace: 5m}    # >= 0; 0: a timeout always counts as a failure
//	  restart:   {initial: 1s, multiplier: 2, max: 60s, jitter: 0.1,
//	              reset_after: 10m, max_failures: 5, window: 10m}
//	pools: []                        # a daemon with no pools is valid
//	# per pool: host 127.0.0.1, port 0 (a free port at each start), slots 0 (no limit)
//
// # Pool keys
//
// Each entry of pools takes these keys (the README's Configuration section
// says more of each):
//
//	id                 required; see below
//	engine             required: llamacpp, vllm, tgi, triton or other
//	model_ref          required: an absolute path (must exist at each start) or a name
//	command            required: argv list, placeholders allowed; no shell is added
//	env                map of extra environment variables, placeholders allowed
//	host, port         where the engine listens (127.0.0.1, 0: a free port each start)
//	devices            GPU indices or UUIDs: CUDA_VISIBLE_DEVICES for the engine
//	min_free_vram_mib  free VRAM per device the guardrail requires (0: no check)
//	min_free_ram_mib   MemAvailable the engine needs before each spawn (0: no check)
//	slots              leases the pool hands out at once (0: no limit, or the engine's)
//	user               run the engine as this user (the daemon must be root)
//	engine_version     shown in the status; asked of the engine when absent
//	metrics_path       the engine's Prometheus page, read for its queue and series
//	reload_allowed     what a reload over the API may name
//	canary             {enabled, path, body, timeout, idle_after}: an inference
//	                   request that must succeed before ready
//	startup_timeout, stall_timeout, stop_grace, drain_deadline, readiness,
//	liveness, restart  as in defaults, per pool
//
// # Checks beyond types
//
// Ids match ^[a-z0-9][a-z0-9._-]{0,62}$ and are unique; fixed host:port pairs
// are unique. Durations use Go syntax ("250ms", "2m"); a bare number is an
// error because its unit would be a guess. Placeholders in command and env
// values must be one of ${PORT}, ${HOST}, ${MODEL_REF}, ${POOL_ID}, ${SELF}
// (the daemon's own binary, used by the demo's simulator). With port 0 the
// engine can only learn its port from ${PORT}, so command or env must use it.
// CUDA_VISIBLE_DEVICES may not be set in env when devices is given: the
// daemon derives it from devices.
//
// A model_ref may not contain a shell metacharacter ($ ` ; | & < > ( ) { }
// * ? ! ~ ' " \) or a control character. A pool's optional reload_allowed
// lists what a reload over the API may name: absolute paths are model roots
// matched by cleaned path (the root itself or anything below it), other
// entries are plain prefixes ("TheBloke/"). Each entry, and every
// new_model_ref a reload sends, must pass CheckModelRef.
//
// Secrets never come from the file: auth holds only a token file's path.
package config
