// FuzzParse feeds arbitrary bytes to Parse. Plain `go test` runs only the
// seeds (every example in ../configs plus broken snippets); CI fuzzes briefly:
//
//	go test -run='^$' -fuzz='^FuzzParse$' -fuzztime=20s ./config
//
// Parse must never panic. A config it accepts must hold every invariant the
// rest of the daemon relies on without re-checking (see checkConfig); a
// config it refuses must come back as an *Errors whose problems all have a
// line (0 for the whole file) and a message.

package config_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pool-managerd/pool-managerd/config"
)

// brokenSeeds are small files that exercise the error paths: YAML syntax,
// wrong types, unknown keys, bad durations, duplicates, anchors and merges
// (merge cycles and fan-out included).
var brokenSeeds = []string{
	"",
	"---\n",
	"pools: [",
	"pools: {}\n",
	"pools:\n  - 1\n",
	"listen: 9200\npools: []\n",
	"listen: \"unix:relative\"\npools: []\n",
	"shutdown_deadline: 30\npools: []\n",
	"shutdown_deadline: -1s\n",
	"state_dir: rel/dir\n",
	"log: {format: xml, level: loud}\n",
	"gpu: {require_nvidia: yes please, min_driver_version: \"v535\"}\n",
	"pools:\n  - id: A\n    engine: nope\n",
	"pools:\n  - {id: a, engine: llamacpp, model_ref: m, command: [s, \"${PORT}\"]}\n  - {id: a, engine: vllm, model_ref: m, command: [s, \"${PORT}\"]}\n",
	"pools:\n  - {id: a, engine: other, model_ref: m, command: [s], port: 80}\n  - {id: b, engine: other, model_ref: m, command: [s], port: 80}\n",
	"pools:\n  - {id: a, engine: other, model_ref: \" \", command: \"srv --port 1\"}\n",
	"pools:\n  - {id: a, engine: other, model_ref: m, command: [\"\", \"${NOPE}\", \"${PORT\"]}\n",
	"pools:\n  - {id: a, engine: other, model_ref: m, command: [s, \"${PORT}\"], devices: [0, 0, -1], env: {CUDA_VISIBLE_DEVICES: \"0\", 1X: y}}\n",
	"pools:\n  - {id: a, engine: tgi, model_ref: m, command: [s, \"${PORT}\"], restart: {initial: 0s, multiplier: 0.5, jitter: 2, max_failures: -1}}\n",
	"pools:\n  - {id: a, engine: triton, model_ref: m, command: [s, \"${PORT}\"], liveness: {interval: 0s, failure_threshold: 0, path: health}}\n",
	"defaults: &d {stop_grace: 1s}\npools:\n  - {<<: *d, id: a, engine: vllm, model_ref: m, command: [s, \"${PORT}\"]}\n",
	"x: &a {b: *a}\n",
	"pools: &a [*a]\n",
	"pools:\n  - id: a\n    id: b\n",
	"a: 1\n---\nb: 2\n",
	"pools:\n  - {id: a, engine: other, model_ref: m, command: [s, \"${PORT}\"], slots: 1.5, port: 70000, min_free_vram_mib: -1}\n",
	"\t\tpools: []\n",
	"\r\r0", // \r breaks lines in YAML too
	"pools: [\r\n  {id: a,\r",
	"pools: [{id: a, engine: llamacpp, model_ref: m, command: [s, \"${PORT}\"], stall_timeout: 0s, drain_deadline: 0s}]\n",
	// Merge keys that lead back to a mapping being merged: a merge cycle.
	"defaults: &a {<<: *a}\npools: []\n",
	"pools:\n  - &p {<<: [*p], id: a}\n",
	"defaults: &a\n  restart: &b {<<: *a}\n  <<: *b\n",
	"defaults: &a {<<: {<<: [*a]}}\n",
	// Merges and aliases that fan out: bounded by maxExpansion.
	"pools:\n  - &a {id: a, engine: other, model_ref: m, command: [s, \"${PORT}\"]}\n  - &b {<<: [*a, *a, *a], id: b}\n  - &c {<<: [*b, *b, *b], id: c}\n  - {<<: [*c, *c, *c], id: d}\n",
	"pools:\n  - &a {id: a, engine: other, model_ref: m, command: &c [s, \"${PORT}\", *c]}\n  - {<<: *a, id: b, command: *c, env: &e {X: *c}}\n  - {<<: *a, id: c, env: *e}\n",
}

func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("../configs/*.yaml")
	if err != nil || len(files) == 0 {
		f.Fatalf("no example configs in ../configs: %v", err)
	}
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range brokenSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(data, "fuzz.yaml")
		if err != nil {
			if c != nil {
				t.Fatalf("Parse returned a config along with an error: %v", err)
			}
			checkErrors(t, data, err)
			return
		}
		if c == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		if problems := checkConfig(c); len(problems) > 0 {
			t.Fatalf("accepted config breaks invariants:\n  %s\ninput:\n%s", strings.Join(problems, "\n  "), data)
		}
		// Parsing is a pure function of the bytes.
		again, err := config.Parse(data, "fuzz.yaml")
		if err != nil || !reflect.DeepEqual(c, again) {
			t.Fatalf("second Parse differs: err %v", err)
		}
	})
}

// checkErrors checks a refusal: an *Errors naming the file, with at least one
// problem, each with a line in or just past the file and a message.
func checkErrors(t *testing.T, data []byte, err error) {
	t.Helper()
	var errs *config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, want *config.Errors: %v", err, err)
	}
	if errs.File != "fuzz.yaml" {
		t.Errorf("Errors.File = %q, want fuzz.yaml", errs.File)
	}
	if len(errs.Problems) == 0 {
		t.Fatalf("*Errors without problems: %q", err.Error())
	}
	// YAML breaks lines at \n, \r, \r\n, NEL, LS and PS; counting \r\n
	// twice only loosens the bound.
	lines := 1
	for _, br := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
		lines += strings.Count(string(data), br)
	}
	for _, p := range errs.Problems {
		if p.Line < 0 || p.Line > lines+1 {
			t.Errorf("problem %+v: line %d outside 0..%d", p, p.Line, lines+1)
		}
		if strings.TrimSpace(p.Msg) == "" {
			t.Errorf("problem %+v has no message", p)
		}
	}
	if strings.TrimSpace(err.Error()) == "" {
		t.Error("empty Error()")
	}
}

var (
	idRE       = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`) // docs/contract.md §2
	envNameRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	driverRE   = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*$`)
	logFormats = []string{"auto", "json", "text"}
	logLevels  = []string{"debug", "info", "warn", "error"}
)

// checkConfig lists every invariant an accepted config breaks.
func checkConfig(c *config.Config) []string {
	var bad []string
	fail := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	if err := config.CheckListen(c.Listen); err != nil {
		fail("listen %q: %v", c.Listen, err)
	}
	if c.ShutdownDeadline < 0 {
		fail("shutdown_deadline %v < 0", c.ShutdownDeadline)
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		fail("state_dir %q not absolute", c.StateDir)
	}
	if c.Auth.TokenFile != "" && strings.TrimSpace(c.Auth.TokenFile) == "" {
		fail("auth.token_file is blank")
	}
	if !slices.Contains(logFormats, c.Log.Format) || !slices.Contains(logLevels, c.Log.Level) {
		fail("log %+v", c.Log)
	}
	if v := c.GPU.MinDriverVersion; v != "" && !driverRE.MatchString(v) {
		fail("gpu.min_driver_version %q", v)
	}
	ids, addrs := map[string]bool{}, map[string]bool{}
	for i, p := range c.Pools {
		for _, msg := range checkPool(p) {
			fail("pools[%d] (%s): %s", i, p.ID, msg)
		}
		if ids[p.ID] {
			fail("pools[%d]: duplicate id %q", i, p.ID)
		}
		ids[p.ID] = true
		if p.Port != 0 {
			addr := net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
			if addrs[addr] {
				fail("pools[%d]: %s used twice", i, addr)
			}
			addrs[addr] = true
		}
		if q, ok := c.Pool(p.ID); !ok || !q.Equal(p) || !p.Equal(p) {
			fail("pools[%d]: Pool(%q) lookup or Equal is inconsistent", i, p.ID)
		}
	}
	return bad
}

// checkPool lists what is wrong with one resolved pool.
func checkPool(p config.Pool) []string {
	var bad []string
	fail := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	if !idRE.MatchString(p.ID) {
		fail("invalid id")
	}
	if !slices.Contains(config.Engines, p.Engine) {
		fail("engine %q", p.Engine)
	}
	if strings.TrimSpace(p.ModelRef) == "" {
		fail("empty model_ref")
	}
	if len(p.Command) == 0 || strings.TrimSpace(p.Command[0]) == "" {
		fail("command %q has no program", p.Command)
	}
	usesPort := false
	for _, s := range p.Command {
		bad = append(bad, checkPlaceholders("command", s)...)
		usesPort = usesPort || strings.Contains(s, "${PORT}")
	}
	for k, v := range p.Env {
		if !envNameRE.MatchString(k) {
			fail("env name %q", k)
		}
		bad = append(bad, checkPlaceholders("env."+k, v)...)
		usesPort = usesPort || strings.Contains(v, "${PORT}")
	}
	if p.Port == 0 && !usesPort {
		fail("port 0 but ${PORT} is passed nowhere")
	}
	if p.Port < 0 || p.Port > 65535 || p.Slots < 0 {
		fail("port %d, slots %d", p.Port, p.Slots)
	}
	if strings.TrimSpace(p.Host) == "" || (p.User != "" && strings.TrimSpace(p.User) == "") {
		fail("blank host %q or user %q", p.Host, p.User)
	}
	if _, set := p.Env["CUDA_VISIBLE_DEVICES"]; set && len(p.Devices) > 0 {
		fail("CUDA_VISIBLE_DEVICES in env alongside devices")
	}
	seen := map[string]bool{}
	for _, d := range p.Devices {
		if strings.TrimSpace(d) == "" || strings.HasPrefix(d, "-") || seen[d] {
			fail("device %q blank, negative or repeated", d)
		}
		seen[d] = true
	}
	if p.MetricsPath != "" && !strings.HasPrefix(p.MetricsPath, "/") {
		fail("metrics_path %q", p.MetricsPath)
	}
	if p.StartupTimeout <= 0 || p.StopGrace <= 0 || p.StallTimeout < 0 || p.DrainDeadline < 0 {
		fail("timeouts startup %v stop_grace %v stall %v drain %v", p.StartupTimeout, p.StopGrace, p.StallTimeout, p.DrainDeadline)
	}
	r, l := p.Readiness, p.Liveness
	if !strings.HasPrefix(r.Path, "/") || r.Timeout <= 0 {
		fail("readiness %+v", r)
	}
	if !strings.HasPrefix(l.Path, "/") || l.Timeout <= 0 || l.Interval <= 0 || l.FailureThreshold < 1 {
		fail("liveness %+v", l)
	}
	rs := p.Restart
	if rs.Initial <= 0 || rs.Max <= 0 || rs.Window <= 0 || rs.ResetAfter < 0 || rs.MaxFailures < 0 ||
		!(rs.Multiplier >= 1) || !(rs.Jitter >= 0 && rs.Jitter <= 1) {
		fail("restart %+v", rs)
	}
	return bad
}

// checkPlaceholders reports any ${NAME} in s that is not a known placeholder.
func checkPlaceholders(key, s string) []string {
	var bad []string
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			return bad
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return append(bad, fmt.Sprintf("%s: unterminated placeholder", key))
		}
		if name := s[i+2 : i+j]; !slices.Contains(config.Placeholders, name) {
			bad = append(bad, fmt.Sprintf("%s: unknown placeholder ${%s}", key, name))
		}
		s = s[i+j+1:]
	}
}
