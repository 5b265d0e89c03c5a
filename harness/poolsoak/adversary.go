// The adversary's faults, each behind a flag: engines whose children escape
// their process group and session (-plant-escapes), and API callers who
// send shell code, huge paths and broken bodies (-hostile-api).
//
// Escapees are told apart by their command line: each carries escapeTag and
// its kind, so the report counts them exactly among the leftovers, whatever
// group, session or parent they ended up with.

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/pool-managerd/pool-managerd/engine/pidrec"
)

// escapeTag is the argv word that marks a planted escapee:
// `poolsoak sleep D poolsoak-escapee:KIND`.
const escapeTag = "poolsoak-escapee:"

// escapeKinds are the ways a planted child leaves its engine's process
// group: a new session (setsid), a new group in the engine's session
// (setpgid), and a daemon's double fork (setsid in a middle process that
// exits at once, so the sleeper is orphaned too).
var escapeKinds = []string{"setsid", "setpgid", "double-fork"}

// escaperMain is the engine leader of an escaping pool:
// `poolsoak escaper LOG LIFE sim-engine ARGS...`. It plants one escapee of
// each kind, appends their pids to LOG, then execs the simulator (same pid,
// so the daemon supervises the simulator as its engine).
func escaperMain(args []string) int {
	if len(args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: poolsoak escaper LOG LIFE sim-engine ARGS...")
		return exitBadArgs
	}
	logPath, life, rest := args[0], args[1], args[2:]
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "escaper:", err)
		return exitFail
	}
	var planted []string
	for _, kind := range escapeKinds {
		pid, err := plantEscapee(self, kind, life)
		if err != nil {
			fmt.Fprintf(os.Stderr, "escaper: %s: %v\n", kind, err)
			continue
		}
		planted = append(planted, fmt.Sprintf("%s %d\n", kind, pid))
	}
	if f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		_, _ = f.WriteString(strings.Join(planted, ""))
		_ = f.Close()
	}
	err = syscall.Exec(self, append([]string{self}, rest...), os.Environ())
	fmt.Fprintln(os.Stderr, "escaper: exec:", err)
	return exitFail
}

// plantEscapee starts one escapee and returns its pid (for a double fork,
// the middle process's: the sleeper's pid is only known to it).
func plantEscapee(self, kind, life string) (int, error) {
	tag := escapeTag + kind
	switch kind {
	case "setsid", "setpgid":
		cmd := exec.Command(self, "sleep", life, tag)
		if kind == "setsid" {
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		} else {
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		}
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		pid := cmd.Process.Pid
		_ = cmd.Process.Release() // the simulator exec'd over us never waits: a zombie until we die
		return pid, nil
	default: // double-fork
		cmd := exec.Command(self, "escape-middle", life, tag)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Run(); err != nil {
			return 0, err
		}
		return cmd.ProcessState.Pid(), nil
	}
}

// escapeMiddleMain is the middle of a double fork: it starts the sleeper
// and exits without waiting, orphaning it.
func escapeMiddleMain(args []string) int {
	self, err := os.Executable()
	if err != nil || len(args) < 2 {
		return exitFail
	}
	cmd := exec.Command(self, "sleep", args[0], args[1])
	if err := cmd.Start(); err != nil {
		return exitFail
	}
	return exitPass
}

// escapeeKind returns the kind of a planted escapee, "" for any other
// process.
func escapeeKind(p proc) string {
	i := strings.Index(p.cmd, escapeTag)
	if i < 0 {
		return ""
	}
	kind, _, _ := strings.Cut(p.cmd[i+len(escapeTag):], " ")
	return kind
}

// escapesPlanted counts the escapees the escaping engines wrote to the
// run's escape log, by kind.
func (s *soak) escapesPlanted() (total int, byKind map[string]int) {
	byKind = map[string]int{}
	b, _ := os.ReadFile(s.escapeLog())
	for line := range strings.SplitSeq(string(b), "\n") {
		if kind, _, ok := strings.Cut(line, " "); ok {
			byKind[kind]++
			total++
		}
	}
	return total, byKind
}

func (s *soak) escapeLog() string { return filepath.Join(s.dir, "escapes.log") }

// countEscapees counts the planted escapees among procs, by kind.
func countEscapees(procs []proc) (total int, byKind map[string]int) {
	byKind = map[string]int{}
	for _, p := range procs {
		if k := escapeeKind(p); k != "" {
			byKind[k]++
			total++
		}
	}
	return total, byKind
}

func describeKinds(byKind map[string]int) string {
	var parts []string
	for _, k := range escapeKinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, byKind[k]))
	}
	return strings.Join(parts, ", ")
}

// engineMarker is the pidrec.EnvVar entry of pid's environment ("" when
// none or unreadable): the same for an engine and everything it started.
func engineMarker(pid int) string {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return ""
	}
	prefix := []byte(pidrec.EnvVar + "=")
	for kv := range bytes.SplitSeq(env, []byte{0}) {
		if bytes.HasPrefix(kv, prefix) {
			return string(kv)
		}
	}
	return ""
}

// ---- hostile API callers ----

// hostile does one hostile request, chosen at random: a reload whose model
// reference is shell code that would create a file in the run directory, a
// huge path, or a broken body. The daemon must answer each with a 4xx (a
// reload it accepts must run nothing), keep its log bounded, and the files
// must never appear (checked at the end, hostileRan).
func (s *soak) hostile(ctx context.Context, id string, r *rand.Rand) {
	switch r.IntN(3) {
	case 0:
		n := r.IntN(1 << 20)
		target := filepath.Join(s.dir, fmt.Sprintf("pwned-%d", n))
		refs := []string{"$(touch " + target + ")m", "`touch " + target + "`", "m;touch " + target, "m$(touch${IFS}" + target + ")"}
		ref := refs[r.IntN(len(refs))]
		body := fmt.Sprintf(`{"new_model_ref": %q, "deadline_ms": 100}`, ref)
		s.hostileCall(ctx, "POST", "/v1/pools/"+id+"/reload", body, true)
		s.count("hostile reload (shell code in new_model_ref)")
	case 1:
		size := 64<<10 + r.IntN(192<<10)
		before := s.logSize()
		st := s.hostileCall(ctx, "GET", "/v1/pools/"+strings.Repeat("a", size), "", false)
		if grew := s.logSize() - before; st != 0 && grew > int64(size)/2 {
			s.fail("hostile: one request with a %d-byte path grew the daemon log by %d bytes (request-derived log fields must be bounded)", size, grew)
		}
		s.count("hostile huge path")
	default:
		bodies := []string{
			`not json`,
			`{"new_model_ref": 5}`,
			`{"new_model_ref": "soak/model-a", "deadline_ms": -1}`,
			`{"new_model_ref": "-rf"}`,
			`{"new_model_ref": "` + strings.Repeat("x", 128<<10) + `"}`,
			`[` + strings.Repeat(`{"a":`, 4096),
		}
		s.hostileCall(ctx, "POST", "/v1/pools/"+id+"/reload", bodies[r.IntN(len(bodies))], true)
		s.count("hostile bad body")
	}
}

// hostileCall sends one hostile request and fails the run unless the answer
// is a 4xx (or, when acceptOK, a 2xx: a reload the daemon takes as a plain
// model name). It returns the status, 0 on a transport error.
func (s *soak) hostileCall(ctx context.Context, method, path, body string, acceptOK bool) int {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.api.base+path, strings.NewReader(body))
	if err != nil {
		return 0
	}
	route := routeOf(method, path)
	if len(path) > 256 {
		route = method + " /v1/pools/{huge}"
	}
	wasDown := s.down.Load()
	resp, err := s.api.hc.Do(req)
	if err != nil {
		s.api.count(route + " transport-error")
		if !wasDown && !s.down.Load() && ctx.Err() == nil {
			s.fail("hostile %s: no answer: %v", route, err)
		}
		return 0
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	st := resp.StatusCode
	s.api.count(fmt.Sprintf("hostile %s %d", route, st))
	ok := st >= 400 && st < 500 || acceptOK && st >= 200 && st < 300 || st == 503 && s.down.Load()
	if !ok {
		s.fail("hostile %s: answered %d, want a 4xx: %s", route, st, truncate(string(raw), 200))
	}
	return st
}

// logSize is the current daemon log's size in bytes (0 when unknown).
func (s *soak) logSize() int64 {
	log := s.dlog.Load() // s.d belongs to the run goroutine, which restarts the daemon
	if log == nil {
		return 0
	}
	fi, err := os.Stat(*log)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// hostileRan fails the run for every file the hostile reloads' shell code
// would have created: API input must never run as code.
func (s *soak) hostileRan() string {
	found, _ := filepath.Glob(filepath.Join(s.dir, "pwned-*"))
	for _, f := range found {
		s.fail("a hostile new_model_ref ran as shell code: %s exists", f)
	}
	s.mu.Lock()
	n := s.actions["hostile reload (shell code in new_model_ref)"] + s.actions["hostile huge path"] + s.actions["hostile bad body"]
	s.mu.Unlock()
	return fmt.Sprintf("%d hostile requests, %d ran code", n, len(found))
}
