package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const fullYAML = `listen: unix:/run/pool-managerd/api.sock
shutdown_deadline: 0s
auth: {token_file: /etc/pool-managerd/token}
state_dir: /var/lib/pool-managerd
log: {format: text, level: debug}
gpu: {require_nvidia: false, min_driver_version: "535.104.05"}
defaults:
  startup_timeout: 5m
  stall_timeout: 3m
  readiness: {path: /ready, timeout: 3s}
  liveness: {interval: 7s}
  restart: {initial: 2s, max: 30s, max_failures: 7}
pools:
  - id: llama-8b
    engine: llamacpp
    engine_version: b4567
    model_ref: /models/llama.gguf
    command: [llama-server, --model, "${MODEL_REF}", --port, "${PORT}", -ngl, 99]
    env: {LLAMA_ARG_THREADS: 8, NAME: "pool-${POOL_ID}"}
    devices: [0, GPU-abc]
    min_free_vram_mib: 6000
    slots: 4
    user: llm
    metrics_path: /metrics
    stall_timeout: 0s
    drain_deadline: 0s
    liveness: {failure_threshold: 5, busy_grace: 30s}
    restart: {jitter: 0, max_failures: 0, reset_after: 0s}
  - id: triton.a_1
    engine: triton
    model_ref: repo/model
    command: [tritonserver, "--http-port=${PORT}"]
    readiness: {path: /custom}
  - id: misc
    engine: other
    model_ref: m
    host: 127.0.0.2
    port: 8081
    command: [srv]
`

func TestParseFull(t *testing.T) {
	c, err := Parse([]byte(fullYAML), "full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	wantTop := Config{
		Listen: "unix:/run/pool-managerd/api.sock", ShutdownDeadline: 0,
		Auth: Auth{TokenFile: "/etc/pool-managerd/token"}, StateDir: "/var/lib/pool-managerd",
		Log: Log{Format: "text", Level: "debug"}, GPU: GPU{RequireNVIDIA: false, MinDriverVersion: "535.104.05"},
	}
	got := *c
	got.Pools = nil
	if !reflect.DeepEqual(got, wantTop) {
		t.Errorf("top level:\n got %+v\nwant %+v", got, wantTop)
	}
	if len(c.Pools) != 3 {
		t.Fatalf("got %d pools, want 3", len(c.Pools))
	}

	llama := Pool{
		ID: "llama-8b", Engine: "llamacpp", EngineVersion: "b4567", ModelRef: "/models/llama.gguf",
		Command: []string{"llama-server", "--model", "${MODEL_REF}", "--port", "${PORT}", "-ngl", "99"},
		Env:     map[string]string{"LLAMA_ARG_THREADS": "8", "NAME": "pool-${POOL_ID}"},
		Host:    "127.0.0.1", Devices: []string{"0", "GPU-abc"}, MinFreeVRAMMiB: 6000, Slots: 4,
		User: "llm", MetricsPath: "/metrics",
		StartupTimeout: 5 * time.Minute, // defaults block
		StallTimeout:   0,               // pool's own 0 beats defaults' 3m
		StopGrace:      10 * time.Second,
		DrainDeadline:  0,
		// preset /health beats defaults' /ready; timeout still from defaults
		Readiness: Probe{Path: "/health", Timeout: 3 * time.Second},
		Liveness:  Probe{Path: "/health", Interval: 7 * time.Second, Timeout: 2 * time.Second, FailureThreshold: 5, BusyGrace: 30 * time.Second},
		Restart: Restart{Initial: 2 * time.Second, Multiplier: 2, Max: 30 * time.Second, Jitter: 0,
			ResetAfter: 0, MaxFailures: 0, Window: 10 * time.Minute},
		Line: 14,
	}
	if !reflect.DeepEqual(c.Pools[0], llama) {
		t.Errorf("llama pool:\n got %+v\nwant %+v", c.Pools[0], llama)
	}

	tri := c.Pools[1]
	if tri.Readiness.Path != "/custom" || tri.Liveness.Path != "/v2/health/live" {
		t.Errorf("triton probes = %q, %q; want own /custom and preset /v2/health/live", tri.Readiness.Path, tri.Liveness.Path)
	}
	if tri.StallTimeout != 3*time.Minute || tri.Restart.MaxFailures != 7 || tri.Line != 29 {
		t.Errorf("triton inherits: stall %v, max_failures %d, line %d", tri.StallTimeout, tri.Restart.MaxFailures, tri.Line)
	}

	misc := c.Pools[2]
	if misc.Readiness.Path != "/ready" || misc.Liveness.Path != "/health" {
		t.Errorf("engine other probes = %q, %q; want defaults /ready and built-in /health", misc.Readiness.Path, misc.Liveness.Path)
	}
	if misc.Host != "127.0.0.2" || misc.Port != 8081 {
		t.Errorf("misc host:port = %s:%d", misc.Host, misc.Port)
	}
}

// TestBuiltinDefaults spells the defaults out, so changing one is a visible decision.
func TestBuiltinDefaults(t *testing.T) {
	c, err := Parse([]byte("pools:\n  - {id: a, engine: other, model_ref: m, command: [srv, \"${PORT}\"]}\n"), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9200" || c.ShutdownDeadline != 30*time.Second || c.StateDir != "" ||
		c.Auth.TokenFile != "" || c.Log != (Log{"auto", "info"}) || c.GPU != (GPU{RequireNVIDIA: true}) {
		t.Errorf("top-level defaults: %+v", *c)
	}
	want := Pool{
		ID: "a", Engine: "other", ModelRef: "m", Command: []string{"srv", "${PORT}"}, Host: "127.0.0.1",
		StartupTimeout: 10 * time.Minute, StallTimeout: 2 * time.Minute, StopGrace: 10 * time.Second, DrainDeadline: 30 * time.Second,
		Readiness: Probe{Path: "/health", Timeout: time.Second},
		Liveness:  Probe{Path: "/health", Interval: 5 * time.Second, Timeout: 2 * time.Second, FailureThreshold: 3, BusyGrace: 5 * time.Minute},
		Restart: Restart{Initial: time.Second, Multiplier: 2, Max: 60 * time.Second, Jitter: 0.1,
			ResetAfter: 10 * time.Minute, MaxFailures: 5, Window: 10 * time.Minute},
		Line: 2,
	}
	if !reflect.DeepEqual(c.Pools[0], want) {
		t.Errorf("pool defaults:\n got %+v\nwant %+v", c.Pools[0], want)
	}
}

func TestEmptyPoolsAllowed(t *testing.T) {
	for _, src := range []string{"pools: []\n", "pools:\n", "listen: 127.0.0.1:1\n"} {
		c, err := Parse([]byte(src), "f.yaml")
		if err != nil || len(c.Pools) != 0 {
			t.Errorf("%q: pools %v, err %v", src, c, err)
		}
	}
}

func TestAnchorsAndMergeKeys(t *testing.T) {
	src := `pools:
  - &base {id: a, engine: vllm, model_ref: m, command: [srv, "${PORT}"], slots: 2}
  - <<: *base
    id: b
`
	c, err := Parse([]byte(src), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Pools[1]; b.ID != "b" || b.Engine != "vllm" || b.Slots != 2 {
		t.Errorf("merged pool = %+v", b)
	}
}

// poolYAML is a valid one-pool file whose pool gets extra at line 6.
func poolYAML(extra string) string {
	return "pools:\n  - id: a\n    engine: llamacpp\n    model_ref: m\n    command: [srv, \"${PORT}\"]\n    " + extra + "\n"
}

// topYAML puts line at line 1, above a valid pool.
func topYAML(line string) string { return line + "\n" + poolYAML("slots: 1") }

func TestProblems(t *testing.T) {
	cases := []struct {
		name, src string
		line      int
		key, msg  string
	}{
		{"unknown top key", topYAML("listn: 127.0.0.1:1"), 1, "listn", `unknown key (did you mean "listen"?)`},
		{"unknown pool key", poolYAML("modle_ref: x"), 6, "pools[0].modle_ref", `did you mean "model_ref"?`},
		{"unknown auth key", topYAML("auth: {token: x}"), 1, "auth.token", "unknown key"},
		{"unknown log key", topYAML("log: {fmt: json}"), 1, "log.fmt", "unknown key"},
		{"unknown gpu key", topYAML("gpu: {require: true}"), 1, "gpu.require", "unknown key"},
		{"unknown defaults key", topYAML("defaults: {startup: 1s}"), 1, "defaults.startup", "unknown key"},
		{"unknown readiness key", poolYAML("readiness: {interval: 1s}"), 6, "pools[0].readiness.interval", "unknown key"},
		{"unknown liveness key", topYAML("defaults: {liveness: {treshold: 1}}"), 1, "defaults.liveness.treshold", "unknown key"},
		{"unknown restart key", poolYAML("restart: {maximum: 1s}"), 6, "pools[0].restart.maximum", "unknown key"},
		{"repeated key", poolYAML("model_ref: again"), 6, "pools[0].model_ref", "first at line 4"},

		{"id missing", "pools:\n  - engine: other\n    model_ref: m\n    command: [s, \"${PORT}\"]\n", 2, "pools[0].id", "required"},
		{"id bad", "pools:\n  - id: Bad_ID\n    engine: other\n    model_ref: m\n    command: [s, \"${PORT}\"]\n", 2, "pools[0].id", "must match"},
		{"engine missing", "pools:\n  - id: a\n    model_ref: m\n    command: [s, \"${PORT}\"]\n", 2, "pools[0].engine", "required"},
		{"engine unknown", "pools:\n  - id: a\n    engine: ollama\n    model_ref: m\n    command: [s, \"${PORT}\"]\n", 3, "pools[0].engine", "must be one of"},
		{"model_ref missing", "pools:\n  - id: a\n    engine: other\n    command: [s, \"${PORT}\"]\n", 2, "pools[0].model_ref", "required"},
		{"command missing", "pools:\n  - id: a\n    engine: other\n    model_ref: m\n    port: 80\n", 2, "pools[0].command", "required"},
		{"command empty", "pools:\n  - id: a\n    engine: other\n    model_ref: m\n    command: []\n", 5, "pools[0].command", "must not be empty"},
		{"command string", "pools:\n  - id: a\n    engine: other\n    model_ref: m\n    command: srv --port 1\n", 5, "pools[0].command", "must be a list"},
		{"argv0 empty", "pools:\n  - id: a\n    engine: other\n    model_ref: m\n    command:\n      - \"\"\n      - ${PORT}\n", 6, "pools[0].command[0]", "argv[0]"},
		{"port not passed", "pools:\n  - id: a\n    engine: other\n    model_ref: m\n    command: [srv]\n", 5, "pools[0].command", "${PORT}"},

		{"duration without unit", poolYAML("startup_timeout: 30"), 6, "pools[0].startup_timeout", "duration needs a unit, e.g. 30s"},
		{"duration garbage", poolYAML("stop_grace: soon"), 6, "pools[0].stop_grace", "invalid duration"},
		{"duration negative", poolYAML("drain_deadline: -1s"), 6, "pools[0].drain_deadline", "negative"},
		{"duration as list", poolYAML("stall_timeout: [1s]"), 6, "pools[0].stall_timeout", "not a list"},
		{"startup_timeout zero", topYAML("defaults: {startup_timeout: 0s}"), 1, "defaults.startup_timeout", "greater than 0"},
		{"stop_grace zero", poolYAML("stop_grace: 0s"), 6, "pools[0].stop_grace", "greater than 0"},
		{"readiness timeout zero", poolYAML("readiness: {timeout: 0s}"), 6, "pools[0].readiness.timeout", "greater than 0"},
		{"liveness interval zero", poolYAML("liveness: {interval: 0s}"), 6, "pools[0].liveness.interval", "greater than 0"},
		{"liveness timeout zero", poolYAML("liveness: {timeout: 0s}"), 6, "pools[0].liveness.timeout", "greater than 0"},
		{"busy_grace negative", poolYAML("liveness: {busy_grace: -1s}"), 6, "pools[0].liveness.busy_grace", "must not be negative"},
		{"busy_grace on readiness", poolYAML("readiness: {busy_grace: 1s}"), 6, "pools[0].readiness.busy_grace", "unknown key"},
		{"failure_threshold zero", poolYAML("liveness: {failure_threshold: 0}"), 6, "pools[0].liveness.failure_threshold", ">= 1"},
		{"failure_threshold string", poolYAML("liveness: {failure_threshold: three}"), 6, "pools[0].liveness.failure_threshold", `must be an integer, not the string "three"`},
		{"probe path", poolYAML("readiness: {path: health}"), 6, "pools[0].readiness.path", `start with "/"`},
		{"multiplier", poolYAML("restart: {multiplier: 0.5}"), 6, "pools[0].restart.multiplier", ">= 1"},
		{"jitter", poolYAML("restart: {jitter: 1.5}"), 6, "pools[0].restart.jitter", "between 0 and 1"},
		{"max_failures", poolYAML("restart: {max_failures: -1}"), 6, "pools[0].restart.max_failures", ">= 0"},
		{"window zero", poolYAML("restart: {window: 0s}"), 6, "pools[0].restart.window", "greater than 0"},
		{"initial zero", poolYAML("restart: {initial: 0s}"), 6, "pools[0].restart.initial", "greater than 0"},
		{"port range", poolYAML("port: 65536"), 6, "pools[0].port", "between 0 and 65535"},
		{"port string", poolYAML("port: http"), 6, "pools[0].port", "must be an integer"},
		{"slots negative", poolYAML("slots: -1"), 6, "pools[0].slots", ">= 0"},
		{"canary path", poolYAML("canary: {path: completion}"), 6, "pools[0].canary.path", `start with "/"`},
		{"canary body", poolYAML("canary: {body: 'not json'}"), 6, "pools[0].canary.body", "must be JSON"},
		{"canary timeout", poolYAML("canary: {timeout: 0s}"), 6, "pools[0].canary.timeout", "greater than 0"},
		{"canary key", poolYAML("canary: {idle: 1m}"), 6, "pools[0].canary.idle", "unknown key"},
		{"canary idle_after", poolYAML("canary: {idle_after: -1m}"), 6, "pools[0].canary.idle_after", "must not be negative"},
		{"vram negative", poolYAML("min_free_vram_mib: -5"), 6, "pools[0].min_free_vram_mib", ">= 0"},
		{"ram negative", poolYAML("min_free_ram_mib: -1"), 6, "pools[0].min_free_ram_mib", ">= 0"},
		{"ram string", poolYAML("min_free_ram_mib: 16GiB"), 6, "pools[0].min_free_ram_mib", `must be an integer, not the string "16GiB"`},
		{"metrics path", poolYAML("metrics_path: metrics"), 6, "pools[0].metrics_path", `start with "/"`},
		{"device negative", poolYAML("devices: [-1]"), 6, "pools[0].devices[0]", "GPU index"},
		{"device twice", poolYAML("devices: [0, \"0\"]"), 6, "pools[0].devices[1]", "twice"},
		{"devices scalar", poolYAML("devices: 0"), 6, "pools[0].devices", "must be a list"},
		{"placeholder unknown", poolYAML("env: {X: \"${HOME}\"}"), 6, "pools[0].env.X", "unknown placeholder ${HOME}"},
		{"placeholder unterminated", "pools:\n  - id: a\n    engine: other\n    model_ref: m\n    command:\n      - srv\n      - \"--port=${PORT\"\n      - ${PORT}\n", 7, "pools[0].command[1]", "unterminated"},
		{"env name", poolYAML("env: {1X: a}"), 6, "pools[0].env.1X", "invalid variable name"},
		{"env value list", poolYAML("env: {X: [a]}"), 6, "pools[0].env.X", "must be a string"},
		{"cuda env with devices", poolYAML("devices: [0]\n    env: {CUDA_VISIBLE_DEVICES: \"1\"}"), 7, "pools[0].env.CUDA_VISIBLE_DEVICES", "set by the daemon"},
		{"duplicate port", "pools:\n  - {id: a, engine: other, model_ref: m, command: [s], port: 9}\n  - {id: b, engine: other, model_ref: m, command: [s], port: 9}\n", 3, "pools[1].port", `used by pool "a"`},
		{"model_ref shell substitution", "pools:\n  - id: a\n    engine: other\n    model_ref: \"$(id)m\"\n    command: [s, \"${PORT}\"]\n", 4, "pools[0].model_ref", "'$' (a shell metacharacter) at byte 0"},
		{"model_ref newline", "pools:\n  - id: a\n    engine: other\n    model_ref: \"a\\nb\"\n    command: [s, \"${PORT}\"]\n", 4, "pools[0].model_ref", "U+000A (a control character)"},
		{"reload_allowed scalar", poolYAML("reload_allowed: /models/"), 6, "pools[0].reload_allowed", "must be a list"},
		{"reload_allowed empty", poolYAML("reload_allowed: []"), 6, "pools[0].reload_allowed", "must not be empty"},
		{"reload_allowed dotdot", poolYAML("reload_allowed: [/models/../etc]"), 6, "pools[0].reload_allowed[0]", `".." path component`},
		{"reload_allowed metachar", poolYAML("reload_allowed: [\"/models/;x\"]"), 6, "pools[0].reload_allowed[0]", "shell metacharacter"},
		{"pool not mapping", "pools:\n  - just-a-string\n", 2, "pools[0]", "must be a mapping"},
		{"pools not list", "pools: {a: 1}\n", 1, "pools", "must be a list"},

		{"log format", topYAML("log: {format: xml}"), 1, "log.format", "json, text"},
		{"log level", topYAML("log: {level: trace}"), 1, "log.level", "debug, info, warn, error"},
		{"listen bad", topYAML("listen: localhost"), 1, "listen", "neither host:port nor unix:"},
		{"listen relative unix", topYAML("listen: unix:run/api.sock"), 1, "listen", "absolute"},
		{"listen port", topYAML("listen: 127.0.0.1:99999"), 1, "listen", "0 to 65535"},
		{"driver version", topYAML("gpu: {min_driver_version: r535}"), 1, "gpu.min_driver_version", "digits and dots"},
		{"require_nvidia type", topYAML("gpu: {require_nvidia: yes please}"), 1, "gpu.require_nvidia", "true or false"},
		{"shutdown negative", topYAML("shutdown_deadline: -5s"), 1, "shutdown_deadline", "negative"},
		{"state_dir relative", topYAML("state_dir: state"), 1, "state_dir", "absolute"},
		{"top not mapping", "- a\n", 1, "", "must be a mapping"},
		{"syntax", "pools: [\n", 1, "", "YAML syntax"},
		{"empty file", "# nothing here\n", 0, "", "file is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src), "f.yaml")
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("want *Errors, got %v", err)
			}
			if len(errs.Problems) != 1 {
				t.Fatalf("want 1 problem, got %d:\n%v", len(errs.Problems), err)
			}
			p := errs.Problems[0]
			if p.Line != tc.line || p.Key != tc.key || !strings.Contains(p.Msg, tc.msg) {
				t.Errorf("got %+v\nwant line %d, key %q, msg containing %q", p, tc.line, tc.key, tc.msg)
			}
			if tc.line > 0 && tc.key != "" && !strings.HasPrefix(err.Error(), fmt.Sprintf("f.yaml:%d: %s: ", tc.line, tc.key)) {
				t.Errorf("Error() = %q", err.Error())
			}
		})
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	src := `listen: nowhere
log: {level: loud}
pools:
  - id: a
    engine: llamacpp
    modle_ref: m
    command: [srv, "${PORT}"]
  - id: a
    engine: other
    model_ref: m
    command: [srv, "${PROT}"]
    startup_timeout: 10
`
	_, err := Parse([]byte(src), "all.yaml")
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want *Errors, got %v", err)
	}
	want := []string{
		"all.yaml:1: listen: ",
		"all.yaml:2: log.level: ",
		"all.yaml:4: pools[0].model_ref: required key is missing",
		"all.yaml:6: pools[0].modle_ref: unknown key",
		"all.yaml:8: pools[1].id: duplicate id \"a\" (first at line 4, again at line 8)",
		"all.yaml:11: pools[1].command: port is 0",
		"all.yaml:11: pools[1].command[1]: unknown placeholder ${PROT}",
		"all.yaml:12: pools[1].startup_timeout: duration needs a unit",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%v", len(lines), len(want), err)
	}
	for _, w := range want {
		found := false
		for _, l := range lines {
			found = found || strings.HasPrefix(l, w)
		}
		if !found {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	for i := 1; i < len(errs.Problems); i++ {
		if errs.Problems[i].Line < errs.Problems[i-1].Line {
			t.Errorf("problems not sorted by line: %v", errs.Problems)
		}
	}
}

func TestLoad(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: got %v, want fs.ErrNotExist", err)
	}
	path := filepath.Join(t.TempDir(), "pools.yaml")
	if err := os.WriteFile(path, []byte(poolYAML("modle_ref: x")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.HasPrefix(err.Error(), path+":6: ") {
		t.Errorf("Load error should name the path and line, got %v", err)
	}
}

func TestEqual(t *testing.T) {
	base := func() Pool {
		c, err := Parse([]byte(fullYAML), "f.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return c.Pools[0]
	}
	cases := []struct {
		name   string
		change func(*Pool)
		equal  bool
	}{
		{"identical", func(*Pool) {}, true},
		{"line moved", func(p *Pool) { p.Line += 10 }, true},
		{"nil vs empty env", func(p *Pool) { p.Env = nil }, false}, // base has env, so this differs
		{"env value", func(p *Pool) { p.Env = map[string]string{"LLAMA_ARG_THREADS": "9", "NAME": "pool-${POOL_ID}"} }, false},
		{"command", func(p *Pool) { p.Command = append([]string(nil), "other") }, false},
		{"devices order", func(p *Pool) { p.Devices = []string{"GPU-abc", "0"} }, false},
		{"model", func(p *Pool) { p.ModelRef = "/models/other.gguf" }, false},
		{"restart", func(p *Pool) { p.Restart.Jitter = 0.2 }, false},
		{"probe", func(p *Pool) { p.Liveness.Interval = time.Second }, false},
	}
	for _, tc := range cases {
		p, q := base(), base()
		tc.change(&q)
		if got := p.Equal(q); got != tc.equal {
			t.Errorf("%s: Equal = %v, want %v", tc.name, got, tc.equal)
		}
	}
	if !(Pool{Env: map[string]string{}, Devices: []string{}}).Equal(Pool{Line: 3}) {
		t.Error("empty and nil slices/maps should be equal")
	}
}

func TestConfigPool(t *testing.T) {
	c, err := Parse([]byte(fullYAML), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := c.Pool("misc"); !ok || p.Port != 8081 {
		t.Errorf("Pool(misc) = %+v, %v", p, ok)
	}
	if _, ok := c.Pool("nope"); ok {
		t.Error("Pool(nope) found")
	}
}

func TestListen(t *testing.T) {
	cases := []struct {
		addr     string
		valid    bool
		loopback bool
	}{
		{"127.0.0.1:9200", true, true},
		{"localhost:9200", true, true},
		{"[::1]:9200", true, true},
		{"unix:/run/x.sock", true, true},
		{"0.0.0.0:9200", true, false},
		{":9200", true, false},
		{"10.0.0.5:80", true, false},
		{"unix:x.sock", false, true},
		{"127.0.0.1", false, false},
		{"127.0.0.1:http", false, true},
	}
	for _, tc := range cases {
		if err := CheckListen(tc.addr); (err == nil) != tc.valid {
			t.Errorf("CheckListen(%q) = %v, want valid=%v", tc.addr, err, tc.valid)
		}
		if got := IsLoopback(tc.addr); got != tc.loopback {
			t.Errorf("IsLoopback(%q) = %v, want %v", tc.addr, got, tc.loopback)
		}
	}
}

// problemLines parses src and returns Error()'s lines, failing if it parses.
func problemLines(t *testing.T, src string) []string {
	t.Helper()
	_, err := Parse([]byte(src), "f.yaml")
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want *Errors, got %v", err)
	}
	return strings.Split(err.Error(), "\n")
}

// A "<<" that leads back to a mapping being merged used to recurse until the
// stack overflowed, which kills the process. It is a problem now.
func TestMergeCycles(t *testing.T) {
	const msg = ": merge cycle: an alias refers to a mapping that contains it"
	cases := []struct {
		name, src string
		want      []string // every line of Error()
	}{
		{"self", "defaults: &a {<<: *a}\npools: []\n",
			[]string{"f.yaml:1: defaults.<<" + msg}},
		{"self in a list", "pools:\n  - &p {<<: [*p], id: a, engine: other, model_ref: m, command: [s, \"${PORT}\"]}\n",
			[]string{"f.yaml:2: pools[0].<<" + msg}},
		{"through an inline mapping", "defaults: &a {<<: {<<: [*a]}}\n",
			[]string{"f.yaml:1: defaults.<<" + msg}},
		// a merges b, which merges a: found from defaults (the *a in b)
		// and from defaults.restart (the *b in a).
		{"indirect", "defaults: &a\n  stop_grace: 1s\n  restart: &b {<<: *a}\n  <<: *b\n", []string{
			"f.yaml:2: defaults.restart.stop_grace: unknown key",
			"f.yaml:3: defaults.<<" + msg,
			"f.yaml:3: defaults.restart.restart: unknown key",
			"f.yaml:4: defaults.restart.<<" + msg,
		}},
		{"cycle in every pool that uses it", "x: &a {<<: *a}\npools:\n  - {<<: *a}\n  - {<<: [*a]}\n", []string{
			"f.yaml:1: x: unknown key",
			"f.yaml:1: pools[0].<<" + msg,
			"f.yaml:1: pools[1].<<" + msg,
			"f.yaml:3: pools[0].id: required key is missing",
			"f.yaml:3: pools[0].engine: required key is missing",
			"f.yaml:3: pools[0].model_ref: required key is missing",
			"f.yaml:3: pools[0].command: required key is missing",
			"f.yaml:4: pools[1].id: required key is missing",
			"f.yaml:4: pools[1].engine: required key is missing",
			"f.yaml:4: pools[1].model_ref: required key is missing",
			"f.yaml:4: pools[1].command: required key is missing",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := problemLines(t, tc.src); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// A merge that names the same mapping twice, or a mapping merged on another
// path, is no cycle.
func TestMergeRepeatsAreNoCycle(t *testing.T) {
	src := `defaults: &d {stop_grace: 3s}
pools:
  - &a {<<: [*d, *d], id: a, engine: other, model_ref: m, command: [s, "${PORT}"]}
  - {<<: [*a, *d, *a], id: b}
`
	c, err := Parse([]byte(src), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range c.Pools {
		if p.StopGrace != 3*time.Second || p.Engine != "other" {
			t.Errorf("pool %s = %+v", p.ID, p)
		}
	}
}

// walk runs Parse's steps on src and returns the decoder, to read its
// expansion count.
func walk(t *testing.T, src string) *decoder {
	t.Helper()
	d := &decoder{}
	if root := d.document([]byte(src)); root != nil {
		d.config(root)
	}
	return d
}

// laughs is a billion laughs made of merges: pool k merges pool k-1 fan
// times. With distinct, there are two pools per level, each merging both of
// the level below, so no merge names a mapping twice.
func laughs(levels, fan int, distinct bool) string {
	var b strings.Builder
	b.WriteString("pools:\n  - &a0 {id: a0, engine: other, model_ref: m, command: [s, \"${PORT}\"]}\n")
	if distinct {
		b.WriteString("  - &b0 {id: b0, engine: other, model_ref: m, command: [s, \"${PORT}\"]}\n")
	}
	for k := 1; k <= levels; k++ {
		var srcs []string
		for range fan {
			srcs = append(srcs, fmt.Sprintf("*a%d", k-1))
			if distinct {
				srcs = append(srcs, fmt.Sprintf("*b%d", k-1))
			}
		}
		fmt.Fprintf(&b, "  - &a%d {<<: [%s], id: a%d}\n", k, strings.Join(srcs, ", "), k)
		if distinct {
			fmt.Fprintf(&b, "  - &b%d {<<: [%s], id: b%d}\n", k, strings.Join(srcs, ", "), k)
		}
	}
	return b.String()
}

// The fuzzer's 7 levels of 10 merges of the same mapping took 2.6 s, 10 times
// more per level. A mapping merged again into the same mapping adds nothing,
// so this is now linear, and a valid file.
func TestMergeFanOutSameSource(t *testing.T) {
	src := laughs(7, 10, false)
	c, err := Parse([]byte(src), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Pools) != 8 || c.Pools[7].ID != "a7" || c.Pools[7].Engine != "other" {
		t.Errorf("pools = %+v", c.Pools)
	}
	// Pool k follows k aliases down the chain, each to a mapping of about
	// 14 nodes: some 400 in all, not 10^7.
	if d := walk(t, src); d.expanded > 1000 {
		t.Errorf("expanded %d nodes", d.expanded)
	}
}

// With distinct sources at every level no merge is redundant: 2^k work for
// level k, cut off at maxExpansion with one problem. It names the mapping
// being walked and the alias that went over the limit, deep in the chain.
func TestMergeFanOutDistinctSources(t *testing.T) {
	src := laughs(40, 1, true)
	want := "f.yaml:%d: pools[%d].<<: too many alias/merge expansions: more than 10000 nodes"
	got := problemLines(t, src)
	if len(got) != 1 || !strings.HasPrefix(got[0], fmt.Sprintf(want, 4, 16)) {
		t.Errorf("got:\n%s", strings.Join(got, "\n"))
	}
	if d := walk(t, src); d.expanded <= maxExpansion || d.expanded > maxExpansion+100 {
		t.Errorf("expanded %d nodes, want just over %d", d.expanded, maxExpansion)
	}
}

// Plain aliases (values, not "<<") are counted too: each use walks what the
// alias refers to again.
func TestAliasFanOut(t *testing.T) {
	pools := func(n int, anchor, use string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "pools:\n  - {id: p0, engine: other, model_ref: m, %s}\n", anchor)
		for i := 1; i < n; i++ {
			fmt.Fprintf(&b, "  - {id: p%d, engine: other, model_ref: m, %s}\n", i, use)
		}
		return b.String()
	}
	argv := `command: &c [s, "${PORT}"` + strings.Repeat(", --flag", 98) + "]"

	// 50 pools sharing a 100-argument command: 49 uses of 101 nodes.
	src := pools(50, argv, "command: *c")
	if _, err := Parse([]byte(src), "f.yaml"); err != nil {
		t.Fatal(err)
	}
	if d := walk(t, src); d.expanded != 49*101 {
		t.Errorf("expanded %d nodes, want %d", d.expanded, 49*101)
	}

	// 200 such pools are too many.
	got := problemLines(t, pools(200, argv, "command: *c"))
	if len(got) != 1 || !strings.Contains(got[0], "pools[100].command: too many alias/merge expansions") {
		t.Errorf("got:\n%s", strings.Join(got, "\n"))
	}

	// A long string counts by its length: 64 bytes a node.
	long := fmt.Sprintf(`command: [s, "${PORT}"], env: {X: &x "%s"}`, strings.Repeat("x", 64*1000))
	if d := walk(t, pools(10, long, `command: [s, "${PORT}"], env: {X: *x}`)); len(d.probs) != 0 || d.expanded != 9*1001 {
		t.Errorf("expanded %d, problems %v", d.expanded, d.probs)
	}
	got = problemLines(t, pools(11, long, `command: [s, "${PORT}"], env: {X: *x}`))
	if len(got) != 1 || !strings.Contains(got[0], "pools[10].env.X: too many alias/merge expansions") {
		t.Errorf("got:\n%s", strings.Join(got, "\n"))
	}
}

func TestParseMinFreeRAM(t *testing.T) {
	c, err := Parse([]byte(poolYAML("min_free_ram_mib: 16000")), "ram.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Pools[0].MinFreeRAMMiB; got != 16000 {
		t.Fatalf("MinFreeRAMMiB = %d, want 16000", got)
	}
	c, err = Parse([]byte(poolYAML("slots: 1")), "noram.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Pools[0].MinFreeRAMMiB; got != 0 {
		t.Fatalf("MinFreeRAMMiB without the key = %d, want 0 (no check)", got)
	}
}

// A canary block turns the canary on, with the engine's preset path and
// body unless it names its own; none means off.
func TestCanaryPresets(t *testing.T) {
	for _, c := range []struct{ engine, block, path, body string }{
		{"llamacpp", "canary: {}", "/completion", `{"prompt":"a","n_predict":1}`},
		{"vllm", "canary: {timeout: 5s, idle_after: 10m}", "/v1/completions", `{"model":"${MODEL_REF}","prompt":"a","max_tokens":1}`},
		{"tgi", "canary: {}", "/v1/completions", `{"model":"${MODEL_REF}","prompt":"a","max_tokens":1}`},
		{"other", `canary: {path: /gen, body: '{"x":1}'}`, "/gen", `{"x":1}`},
	} {
		src := "pools:\n  - id: a\n    engine: " + c.engine + "\n    model_ref: m\n    command: [srv, \"${PORT}\"]\n    " + c.block + "\n"
		cfg, err := Parse([]byte(src), "t.yaml")
		if err != nil {
			t.Fatalf("%s: %v", c.engine, err)
		}
		got := cfg.Pools[0].Canary
		if !got.Enabled || got.Path != c.path || got.Body != c.body || got.Timeout <= 0 {
			t.Errorf("%s %s: %+v, want path %s body %s", c.engine, c.block, got, c.path, c.body)
		}
	}
	cfg, err := Parse([]byte(poolYAML("slots: 1")), "t.yaml")
	if err != nil || cfg.Pools[0].Canary.Enabled {
		t.Fatalf("no canary block: %+v %v (want off)", cfg.Pools[0].Canary, err)
	}
	cfg, err = Parse([]byte(poolYAML("canary: {enabled: false}")), "t.yaml")
	if err != nil || cfg.Pools[0].Canary.Enabled {
		t.Fatalf("enabled: false: %+v %v", cfg.Pools[0].Canary, err)
	}
	_, err = Parse([]byte("pools:\n  - id: a\n    engine: other\n    model_ref: m\n    command: [srv, \"${PORT}\"]\n    canary: {}\n"), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), "pools[0].canary.path") || !strings.Contains(err.Error(), "t.yaml:6:") {
		t.Fatalf("other without a path: %v", err)
	}
}
