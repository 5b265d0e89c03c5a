// End-to-end tests of the daemon binary. The test binary doubles as the
// daemon (POOL_MANAGERD_AS_MAIN=1 makes TestMain run main's run), and since
// the daemon starts engines as "${SELF} sim-engine …" with its environment
// inherited, every engine is the simulator inside this same binary (STYLE
// lesson 7: fake processes are real processes). This file holds the helpers:
// starting a daemon, the HTTP API, its JSON log lines, and processes.

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// asMainEnv makes a re-executed test binary run the daemon's main.
const asMainEnv = "POOL_MANAGERD_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	// As a child subreaper, the test process inherits the engines of a daemon
	// it SIGKILLs. Their Pdeathsig kills them and the test reaps them itself
	// (reapIfChild), so "the engine is gone" is checkable at once instead of
	// whenever pid 1 gets round to reaping.
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		fmt.Fprintln(os.Stderr, "prctl(PR_SET_CHILD_SUBREAPER):", errno)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// Limits of the waits below. They are generous: a -race build on a busy
// two-core CI box starts a simulator in a few hundred milliseconds, and a
// wait ends as soon as its condition holds.
const (
	startLimit = 30 * time.Second // daemon answering, pools ready
	waitLimit  = 30 * time.Second // any other condition
	exitLimit  = 20 * time.Second // a signalled daemon exits
	pollEvery  = 20 * time.Millisecond
)

// ---- buffers and environment ----

// daemonEnv is the environment of a daemon child: ours without any
// POOL_MANAGERD_* setting, plus extra ("KEY=value").
func daemonEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "POOL_MANAGERD_") && !strings.HasPrefix(kv, "GORACE=") {
			env = append(env, kv)
		}
	}
	// A -race binary sleeps a second at exit by default; daemons and engines
	// exit a lot here.
	env = append(env, asMainEnv+"=1", "GORACE=atexit_sleep_ms=0")
	return append(env, extra...)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// runMain runs the binary to completion (for commands that exit on their own).
func runMain(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = daemonEnv(env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = time.Second
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("%v: %v", args, err)
		}
		return cmd.ProcessState.ExitCode(), out.String(), errb.String()
	case <-time.After(exitLimit):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not exit within %s; stdout:\n%s\nstderr:\n%s", args, exitLimit, out.String(), errb.String())
		return 0, "", ""
	}
}

// ---- configs ----

// simCommand is a pool's command running the simulator with extra flags.
func simCommand(flags ...string) string {
	argv := []string{"${SELF}", "sim-engine", "--host", "${HOST}", "--port", "${PORT}", "--model", "${MODEL_REF}",
		"--parallel", "1000"} // /props total_slots: the sim must not bound leases where a test means no limit
	argv = append(argv, flags...)
	b, _ := json.Marshal(argv)
	return string(b)
}

// simPool is one YAML pool entry (a list item) running the simulator; extra
// lines are added to the entry as they are (indented by the caller's four
// spaces).
func simPool(id string, flags []string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  - id: %s\n    engine: llamacpp\n    engine_version: sim\n    model_ref: test/%s\n    command: %s\n", id, id, simCommand(flags...))
	for _, l := range extra {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// testDefaults keeps pools quick: instant restarts, no liveness traffic.
const testDefaults = `defaults:
  startup_timeout: 30s
  stop_grace: 2s
  drain_deadline: 5s
  liveness: {interval: 1h}
  restart: {initial: 100ms, max: 1s, reset_after: 1h, max_failures: 10, window: 1h}
`

// configYAML is a config with top-level lines head, testDefaults and pools.
func configYAML(head string, pools ...string) string {
	return head + testDefaults + "pools:\n" + strings.Join(pools, "")
}

// writeFile writes data to path atomically, so a daemon re-reading it on
// SIGHUP never sees half a file.
func writeFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// ---- the daemon ----

type daemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	base   string // http://127.0.0.1:PORT
	stdout *testutil.SyncBuffer
	stderr *testutil.SyncBuffer
	done   chan struct{} // closed once the process is reaped
	client *http.Client
	// runDir is the daemon's $RUNTIME_DIRECTORY: running as root without a
	// token, it writes the write token there (api.token), which do sends.
	runDir string
}

// writeToken is the token the daemon generated, or "" when it wrote none.
func (d *daemon) writeToken() string {
	b, err := os.ReadFile(filepath.Join(d.runDir, "api.token"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// startDaemon starts the binary with args and waits for its API. A port
// taken between freePort and the daemon's listen is retried.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	for attempt := 0; ; attempt++ {
		d := spawnDaemon(t, args...)
		err := d.waitAPI()
		if err == nil {
			return d
		}
		if attempt < 3 && d.exited() && strings.Contains(d.stdout.String()+d.stderr.String(), "address already in use") {
			continue
		}
		t.Fatalf("daemon %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, d.stdout.String(), d.stderr.String())
	}
}

func spawnDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := &daemon{t: t, base: "http://" + addr, stdout: &testutil.SyncBuffer{}, stderr: &testutil.SyncBuffer{}, done: make(chan struct{}),
		client: &http.Client{Timeout: 10 * time.Second}}
	d.cmd = exec.Command(os.Args[0], args...)
	d.runDir = t.TempDir()
	d.cmd.Env = daemonEnv("POOL_MANAGERD_ADDR="+addr, "RUNTIME_DIRECTORY="+d.runDir)
	d.cmd.Stdout, d.cmd.Stderr = d.stdout, d.stderr
	d.cmd.WaitDelay = 2 * time.Second // engines have pipes of their own; this is only a backstop
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		if !d.exited() {
			_ = d.cmd.Process.Kill() // Pdeathsig takes its engines along
			<-d.done
		}
		if t.Failed() {
			t.Logf("daemon %v stdout:\n%s\nstderr:\n%s", args, d.stdout.String(), d.stderr.String())
		}
	})
	return d
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// waitAPI waits until GET /healthz answers 200.
func (d *daemon) waitAPI() error {
	deadline := time.Now().Add(startLimit)
	for time.Now().Before(deadline) {
		if d.exited() {
			return fmt.Errorf("exited early with code %d", d.cmd.ProcessState.ExitCode())
		}
		if resp, err := d.client.Get(d.base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(pollEvery)
	}
	return fmt.Errorf("API not up within %s", startLimit)
}

func (d *daemon) signal(sig syscall.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("signal %v: %v", sig, err)
	}
}

// waitExit waits for the daemon to exit and returns its exit code and how
// long that took.
func (d *daemon) waitExit(limit time.Duration) (int, time.Duration) {
	d.t.Helper()
	start := time.Now()
	select {
	case <-d.done:
	case <-time.After(limit):
		d.t.Fatalf("daemon did not exit within %s", limit)
	}
	ws := d.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return -int(ws.Signal()), time.Since(start)
	}
	return ws.ExitStatus(), time.Since(start)
}

// stop sends SIGTERM and requires a clean exit (0).
func (d *daemon) stop() {
	d.t.Helper()
	d.signal(syscall.SIGTERM)
	if code, _ := d.waitExit(exitLimit); code != 0 {
		d.t.Fatalf("daemon exit code after SIGTERM = %d, want 0", code)
	}
}

// ---- the API ----

// poolStatus is the part of docs/contract.md §4's PoolStatus these tests read.
type poolStatus struct {
	PoolID       string  `json:"pool_id"`
	State        string  `json:"state"`
	Ready        bool    `json:"ready"`
	PID          *int    `json:"pid"`
	RestartCount int     `json:"restart_count"`
	LastError    *string `json:"last_error"`
}

func (p poolStatus) pid() int {
	if p.PID == nil {
		return 0
	}
	return *p.PID
}

// do sends a request and decodes a JSON answer into out (when not nil).
func (d *daemon) do(method, path, body string, out any) (int, error) {
	req, err := http.NewRequest(method, d.base+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok := d.writeToken(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w: %s", method, path, err, b)
		}
	}
	return resp.StatusCode, nil
}

func (d *daemon) pools() ([]poolStatus, error) {
	var r struct {
		Pools []poolStatus `json:"pools"`
	}
	code, err := d.do("GET", "/v1/pools", "", &r)
	if err == nil && code != 200 {
		err = fmt.Errorf("GET /v1/pools: HTTP %d", code)
	}
	return r.Pools, err
}

// pool returns the pool's status and the HTTP code (404 for an unknown pool).
func (d *daemon) pool(id string) (poolStatus, int, error) {
	var p poolStatus
	code, err := d.do("GET", "/v1/pools/"+id, "", &p)
	return p, code, err
}

// waitPools polls GET /v1/pools until ok holds and returns that answer.
func (d *daemon) waitPools(what string, ok func([]poolStatus) bool) []poolStatus {
	d.t.Helper()
	var last []poolStatus
	var lastErr error
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		if d.exited() {
			d.t.Fatalf("waiting for %s: the daemon exited", what)
		}
		pools, err := d.pools()
		if err == nil && ok(pools) {
			return pools
		}
		last, lastErr = pools, err
		time.Sleep(pollEvery)
	}
	d.t.Fatalf("waiting for %s: not within %s; last answer %+v, err %v", what, waitLimit, last, lastErr)
	return nil
}

// waitPool polls one pool until ok holds.
func (d *daemon) waitPool(id, what string, ok func(poolStatus, int) bool) poolStatus {
	d.t.Helper()
	var last poolStatus
	var lastCode int
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		if d.exited() {
			d.t.Fatalf("waiting for pool %s %s: the daemon exited", id, what)
		}
		p, code, err := d.pool(id)
		if err == nil && ok(p, code) {
			return p
		}
		last, lastCode = p, code
		time.Sleep(pollEvery)
	}
	d.t.Fatalf("waiting for pool %s %s: not within %s; last answer HTTP %d %+v", id, what, waitLimit, lastCode, last)
	return poolStatus{}
}

// allReady reports whether pools holds exactly ids, each ready with an engine.
func allReady(ids ...string) func([]poolStatus) bool {
	return func(pools []poolStatus) bool {
		if len(pools) != len(ids) {
			return false
		}
		for i, p := range pools {
			if p.PoolID != ids[i] || p.State != "ready" || !p.Ready || p.PID == nil {
				return false
			}
		}
		return true
	}
}

func byID(pools []poolStatus) map[string]poolStatus {
	m := map[string]poolStatus{}
	for _, p := range pools {
		m[p.PoolID] = p
	}
	return m
}

// ---- logs ----

// record is one JSON log line. Fields keeps the first value of each key
// (what slog itself wrote first); Dups lists keys written more than once,
// which a JSON consumer would read as the last value only.
type record struct {
	Raw    string
	Keys   []string
	Dups   []string
	Fields map[string]any
}

func (r record) str(key string) string {
	s, _ := r.Fields[key].(string)
	return s
}

func (r record) num(key string) float64 {
	f, _ := r.Fields[key].(float64)
	return f
}

func (r record) msg() string { return r.str("msg") }

// parseRecord parses one line as a flat JSON object, keeping key order and
// duplicates.
func parseRecord(line string) (record, error) {
	r := record{Raw: line, Fields: map[string]any{}}
	dec := json.NewDecoder(strings.NewReader(line))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return r, fmt.Errorf("not a JSON object: %q", line)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return r, fmt.Errorf("%w in %q", err, line)
		}
		key := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return r, fmt.Errorf("%w in %q", err, line)
		}
		if n, ok := v.(json.Number); ok {
			v, _ = n.Float64()
		}
		if _, seen := r.Fields[key]; seen {
			r.Dups = append(r.Dups, key)
			continue
		}
		r.Keys = append(r.Keys, key)
		r.Fields[key] = v
	}
	if _, err := dec.Token(); err != nil {
		return r, fmt.Errorf("%w in %q", err, line)
	}
	if dec.More() {
		return r, fmt.Errorf("trailing data in %q", line)
	}
	return r, nil
}

// records parses every complete line the daemon has written to stdout.
func (d *daemon) records() []record {
	d.t.Helper()
	out := d.stdout.String()
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		out = out[:i]
	} else {
		return nil
	}
	var recs []record
	for _, line := range strings.Split(out, "\n") {
		r, err := parseRecord(line)
		if err != nil {
			d.t.Fatalf("stdout is not JSON lines: %v", err)
		}
		recs = append(recs, r)
	}
	return recs
}

// find returns the records that match every key=value pair in kv.
func find(recs []record, msg string, kv ...any) []record {
	var out []record
next:
	for _, r := range recs {
		if r.msg() != msg {
			continue
		}
		for i := 0; i+1 < len(kv); i += 2 {
			want := fmt.Sprint(kv[i+1])
			got := r.Fields[kv[i].(string)]
			if f, ok := got.(float64); ok {
				got = fmt.Sprint(int64(f))
			}
			if fmt.Sprint(got) != want {
				continue next
			}
		}
		out = append(out, r)
	}
	return out
}

// waitLog polls stdout until a record matches msg and kv.
func (d *daemon) waitLog(msg string, kv ...any) record {
	d.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		if m := find(d.records(), msg, kv...); len(m) > 0 {
			return m[0]
		}
		if d.exited() {
			break
		}
		time.Sleep(pollEvery)
	}
	d.t.Fatalf("no log record %q %v within %s", msg, kv, waitLimit)
	return record{}
}

// ---- processes ----

// gone reports whether neither pid nor its process group exists. A zombie
// counts as existing, so a zombie that is our own child (an engine whose
// daemon we SIGKILLed was re-parented to this subreaper) is reaped first.
func gone(pid int) bool {
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) && errors.Is(syscall.Kill(-pid, 0), syscall.ESRCH)
}

// waitGone polls until every pid and its group are gone.
func waitGone(t *testing.T, limit time.Duration, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var alive []int
		for _, pid := range pids {
			if !gone(pid) {
				alive = append(alive, pid)
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range alive {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Fatalf("engine processes (or their groups) %v still exist after %s", alive, limit)
		}
		time.Sleep(pollEvery)
	}
}

// sleeper is a `sleep 300` in its own process group, standing in for an
// engine that outlived its daemon.
type sleeper struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startSleeper(t *testing.T) *sleeper {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sleeper{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	})
	return s
}

func (s *sleeper) pid() int { return s.cmd.Process.Pid }

func (s *sleeper) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// stateFiles lists the names of the files in dir.
func stateFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func tempConfig(t *testing.T, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pool-managerd.yaml")
	writeFile(t, path, data)
	return path
}
