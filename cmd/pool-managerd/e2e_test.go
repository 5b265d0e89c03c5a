// End-to-end tests: the real binary, its flags, signals, pid records and
// guardrails (docs/contract.md §1, §3, §5).

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/engine/pidrec"
)

// simHead is the top of a config whose pools run the simulator.
const simHead = "shutdown_deadline: 5s\ngpu: {require_nvidia: false}\n"

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, `shutdown_deadline: 5s
gpu: {require_nvidia: false}
bogus_key: 1
pools:
  - id: one
    engine: llamacpp
    model_ref: m
    command: ["${SELF}", "sim-engine", "--port", "${PORT}"]
    stop_grace: 5 seconds
  - id: one
    engine: llamacpp
    model_ref: m
    command: ["${SELF}", "sim-engine", "--port", "${PORT}"]
`)
	code, stdout, stderr := runMain(t, nil, "-check-config", bad)
	if code != 2 {
		t.Fatalf("-check-config on a bad file: exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		bad + ":3: bogus_key: unknown key",
		bad + ":9: pools[0].stop_grace: invalid duration",
		bad + ":10: pools[1].id: duplicate id",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not name %q:\n%s", want, stderr)
		}
	}
	if n := strings.Count(strings.TrimSpace(stderr), "\n") + 1; n != 3 {
		t.Errorf("stderr has %d problem lines, want 3:\n%s", n, stderr)
	}

	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, configYAML(simHead, simPool("one", nil)))
	if code, stdout, stderr := runMain(t, nil, "-check-config", good); code != 0 {
		t.Fatalf("-check-config on a good file: exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}

	for _, args := range [][]string{
		{"-no-such-flag"},
		{},                                  // neither -config nor -demo
		{"-demo", "-config", good},          // exclusive
		{"-config", good, "stray-argument"}, // positional leftovers
		{"-config", filepath.Join(dir, "missing.yaml")},
	} {
		if code, _, stderr := runMain(t, nil, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", args, code, stderr)
		}
	}
}

func TestDemoRunsAndShutsDownClean(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "-demo")
	pools := d.waitPools(">= 3 demo pools ready", func(ps []poolStatus) bool {
		if len(ps) < 3 {
			return false
		}
		for _, p := range ps {
			if p.State != "ready" || p.PID == nil {
				return false
			}
		}
		return true
	})
	var pids []int
	for _, p := range pools {
		pids = append(pids, p.pid())
	}
	const demoShutdownDeadline = 10 * time.Second // configs/demo.yaml
	d.signal(syscall.SIGTERM)
	if code, took := d.waitExit(demoShutdownDeadline); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	} else {
		t.Logf("shutdown took %s", took)
	}
	// The daemon reaps its engines before it exits: nothing to wait for.
	for _, pid := range pids {
		if !gone(pid) {
			t.Errorf("engine %d (or its process group) outlived the daemon", pid)
		}
	}
	recs := d.records()
	if len(recs) == 0 {
		t.Fatal("no log lines on stdout")
	}
	for _, r := range recs {
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := r.Fields[k].(string); !ok {
				t.Errorf("log line without string %q: %s", k, r.Raw)
			}
		}
		if len(r.Dups) > 0 {
			t.Errorf("log line with duplicate keys %v: %s", r.Dups, r.Raw)
		}
	}
	if len(find(recs, "daemon.stopped")) != 1 {
		t.Error("no daemon.stopped record")
	}
}

func TestCrashRecoveryAndOrphanSweep(t *testing.T) {
	t.Parallel()
	stateDir := filepath.Join(t.TempDir(), "state")
	cfg := tempConfig(t, configYAML(simHead+"state_dir: "+stateDir+"\n", simPool("alpha", nil), simPool("beta", nil)))

	d := startDaemon(t, "-config", cfg)
	pools := d.waitPools("alpha and beta ready", allReady("alpha", "beta"))
	files := stateFiles(t, stateDir)
	var pids []int
	for _, p := range pools {
		pids = append(pids, p.pid())
		name := fmt.Sprintf("%s.%d.json", p.PoolID, p.pid())
		if !slices.Contains(files, name) {
			t.Fatalf("no pid record %s in state_dir; have %v", name, files)
		}
		var rec pidrec.Record
		b, err := os.ReadFile(filepath.Join(stateDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.PoolID != p.PoolID || rec.PID != p.pid() || rec.PGID != p.pid() || rec.StartTime == 0 || rec.Token == "" {
			t.Errorf("pid record %s = %+v", name, rec)
		}
		// The engine carries the marker the sweep finds its workers by.
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.pid()))
		if err != nil {
			t.Fatal(err)
		}
		if mark := pidrec.EnvVar + "=" + pidrec.EnvValue(p.PoolID, rec.Token); !slices.Contains(strings.Split(string(env), "\x00"), mark) {
			t.Errorf("engine %d of %s lacks %s in its environment", p.pid(), p.PoolID, mark)
		}
	}

	d.signal(syscall.SIGKILL)
	if code, _ := d.waitExit(exitLimit); code != -int(syscall.SIGKILL) {
		t.Fatalf("daemon exit = %d, want killed by SIGKILL", code)
	}
	// Pdeathsig: the engines die with their daemon.
	waitGone(t, waitLimit, pids...)

	// (a) an engine that survived its daemon (recorded without a marker
	// token: its live leader alone vouches for it); (b) a record whose pid is
	// now someone else's (its start time differs), which must not be killed.
	survivor, stranger := startSleeper(t), startSleeper(t)
	if err := pidrec.Write(stateDir, "survivor", survivor.pid(), survivor.pid(), "sleep", ""); err != nil {
		t.Fatal(err)
	}
	start, err := pidrec.StartTime(stranger.pid())
	if err != nil {
		t.Fatal(err)
	}
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	reused, err := json.Marshal(pidrec.Record{PoolID: "stranger", PID: stranger.pid(), PGID: stranger.pid(),
		StartTime: start + 1000, Argv0: "sleep", BootID: strings.TrimSpace(string(boot)), RecordedAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(stateDir, fmt.Sprintf("stranger.%d.json", stranger.pid())), string(reused))

	d2 := startDaemon(t, "-config", cfg) // the sweep runs before the API listens
	select {
	case <-survivor.done:
		if ws := survivor.cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("survivor ended with %v, want killed by SIGKILL", survivor.cmd.ProcessState)
		}
	case <-time.After(waitLimit):
		t.Fatal("the sweep did not kill the surviving engine")
	}
	if stranger.exited() {
		t.Fatalf("the sweep killed a process whose start time does not match its record: %v", stranger.cmd.ProcessState)
	}
	recs := d2.records()
	if len(find(recs, "orphan engine killed", "pid", survivor.pid(), "pool_id", "survivor")) != 1 {
		t.Errorf("no `orphan engine killed` record for pid %d", survivor.pid())
	}
	if m := find(recs, "orphan engine killed", "pid", stranger.pid()); len(m) != 0 {
		t.Errorf("logged the stranger as killed: %s", m[0].Raw)
	}
	if len(find(recs, "stale pid record", "pid", stranger.pid(), "reason", "pid reused by another process")) != 1 {
		t.Errorf("no `stale pid record` for the reused pid %d", stranger.pid())
	}

	pools = d2.waitPools("alpha and beta ready again", allReady("alpha", "beta"))
	var want []string
	for _, p := range pools {
		want = append(want, fmt.Sprintf("%s.%d.json", p.PoolID, p.pid()))
	}
	slices.Sort(want)
	if got := stateFiles(t, stateDir); !slices.Equal(got, want) {
		t.Errorf("state_dir after the restart = %v, want only the new engines' records %v", got, want)
	}
	d2.stop()
	if got := stateFiles(t, stateDir); len(got) != 0 {
		t.Errorf("state_dir after a clean stop = %v, want empty", got)
	}
	if stranger.exited() {
		t.Fatal("the stranger died")
	}
}

func TestSIGHUPReconfigures(t *testing.T) {
	t.Parallel()
	keep, gonePool, newPool := simPool("keep", nil), simPool("gone", nil), simPool("new", nil)
	cfg := tempConfig(t, configYAML(simHead, keep, gonePool))
	d := startDaemon(t, "-config", cfg)
	before := byID(d.waitPools("gone and keep ready", allReady("gone", "keep")))

	writeFile(t, cfg, configYAML(simHead, keep, newPool))
	d.signal(syscall.SIGHUP)
	after := byID(d.waitPools("keep and new ready, gone removed", allReady("keep", "new")))
	if _, code, err := d.pool("gone"); err != nil || code != 404 {
		t.Errorf("GET /v1/pools/gone = HTTP %d (%v), want 404", code, err)
	}
	if a, b := after["keep"].pid(), before["keep"].pid(); a != b {
		t.Errorf("keep's engine changed on SIGHUP: pid %d -> %d", b, a)
	}
	waitGone(t, waitLimit, before["gone"].pid())
	d.waitLog("config.reloaded")

	writeFile(t, cfg, "pools: [{id: keep, bogus: 1}]\n")
	d.signal(syscall.SIGHUP)
	r := d.waitLog("config.reload_failed")
	if !strings.Contains(r.str("err"), "bogus") {
		t.Errorf("config.reload_failed does not name the bad key: %s", r.Raw)
	}
	p, _, err := d.pool("keep")
	if err != nil || p.State != "ready" || p.pid() != before["keep"].pid() {
		t.Errorf("after an invalid config, keep = %+v (%v), want ready with pid %d", p, err, before["keep"].pid())
	}
	if n, _, err := d.pool("new"); err != nil || n.State != "ready" || n.pid() != after["new"].pid() {
		t.Errorf("after an invalid config, new = %+v (%v), want ready with pid %d", n, err, after["new"].pid())
	}
	d.stop()
}

func TestRequireNVIDIARefusesWithoutDriver(t *testing.T) {
	t.Parallel()
	cfg := tempConfig(t, configYAML("shutdown_deadline: 5s\ngpu: {require_nvidia: true}\n",
		simPool("gpu-pool", nil, "devices: [0]")))
	d := startDaemon(t, "-config", cfg)
	if len(find(d.records(), "NVML ready")) > 0 {
		t.Skip("this host has an NVIDIA driver; the test needs one without")
	}
	p := d.waitPool("gpu-pool", "to record the guardrail refusal", func(p poolStatus, code int) bool {
		return code == 200 && p.LastError != nil
	})
	if !strings.Contains(*p.LastError, "NVML") {
		t.Errorf("last_error %q does not name the NVML cause", *p.LastError)
	}
	if p.State == "ready" || p.PID != nil {
		t.Errorf("refused pool is %s with pid %v", p.State, p.PID)
	}
	d.waitLog("pool.failure", "pool_id", "gpu-pool", "reason", "guardrail")
	if m := find(d.records(), "engine.spawned", "pool_id", "gpu-pool"); len(m) > 0 {
		t.Errorf("an engine was spawned despite the guardrail: %s", m[0].Raw)
	}
	d.stop()
}

func TestRefusesNonLoopbackWithoutToken(t *testing.T) {
	t.Parallel()
	addr := "0.0.0.0:" + strconv.Itoa(freePort(t))
	code, stdout, stderr := runMain(t, []string{"POOL_MANAGERD_ADDR=" + addr}, "-demo")
	if code != 2 {
		t.Fatalf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"non-loopback", addr, "token"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not say %q: %s", want, stderr)
		}
	}
	if strings.Contains(stdout, "engine.spawned") {
		t.Errorf("engines started before the refusal:\n%s", stdout)
	}
}

func TestShutdownKillsStubbornEngineWithLease(t *testing.T) {
	t.Parallel()
	cfg := tempConfig(t, configYAML("shutdown_deadline: 1s\ngpu: {require_nvidia: false}\n",
		simPool("stubborn", []string{"--ignore-sigterm"}, "stop_grace: 500ms")))
	d := startDaemon(t, "-config", cfg)
	pid := d.waitPools("stubborn ready", allReady("stubborn"))[0].pid()
	var lease struct {
		LeaseID string `json:"lease_id"`
	}
	if code, err := d.do("POST", "/v1/pools/stubborn/leases", "{}", &lease); err != nil || code != 201 || lease.LeaseID == "" {
		t.Fatalf("POST leases = HTTP %d %+v (%v), want 201", code, lease, err)
	}
	d.signal(syscall.SIGTERM)
	code, took := d.waitExit(exitLimit)
	if code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
	// shutdown_deadline 1s + stop_grace 500ms, then SIGKILL; 10s would mean
	// a fallback timeout did the work.
	if limit := 5 * time.Second; took > limit {
		t.Errorf("shutdown took %s, want well under 10s (< %s)", took, limit)
	}
	if !gone(pid) {
		t.Errorf("engine %d outlived the daemon", pid)
	}
	recs := d.records()
	if len(find(recs, "drain.finished", "pool_id", "stubborn", "forced", true, "final_leases", 1)) != 1 {
		t.Error("no forced drain.finished with final_leases 1")
	}
	if len(find(recs, "engine.stopped", "pool_id", "stubborn", "signal", "SIGKILL")) != 1 {
		t.Error("no engine.stopped with signal SIGKILL")
	}
}
