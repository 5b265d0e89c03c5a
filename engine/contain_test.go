package engine_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/engine/cgroup"
	"github.com/pool-managerd/pool-managerd/engine/pidrec"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// escapeScript is an engine whose children leave its process group every
// way a real one's do: setsid(), setpgid(0, 0), and a daemonizing double
// fork (Ray workers under vLLM). Then the leader waits (or, given a file
// name, exits with code 3 by itself once that file exists).
const escapeScript = testutil.Escapees + `echo started
if [ -n "$1" ]; then while [ ! -e "$1" ]; do sleep 0.05; done; exit 3; fi
exec sleep 1000
`

// needPython skips when python3 (the escapees) is missing.
func needPython(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not found: the escaping children are python processes")
	}
}

// testCgroupParent makes a cgroup parent for one test under the cgroup2
// mount and removes it (and anything left in it) afterwards; it skips the
// test when no cgroup can be made here.
func testCgroupParent(t *testing.T) *cgroup.Parent {
	t.Helper()
	mount := cgroup.Mount()
	if mount == "" {
		t.Skip("no cgroup2 mount: cgroup containment cannot be tested here")
	}
	dir := filepath.Join(mount, fmt.Sprintf("pm-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	p, err := cgroup.Setup(dir, nil)
	if err != nil {
		t.Skipf("cannot create a test cgroup: %v", err)
	}
	t.Cleanup(func() {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.IsDir() {
				cg := cgroup.Open(filepath.Join(dir, e.Name()))
				_ = cg.Kill()
				cg.WaitEmpty(10*time.Second, nil)
				_ = cg.Remove()
				t.Errorf("engine cgroup %s was left behind", e.Name())
			}
		}
		_ = syscall.Rmdir(dir)
	})
	return p
}

// markedProcs lists the live (non-zombie) processes carrying poolID's marker,
// whatever their session or group.
func markedProcs(poolID string) []int { return markedOutside(poolID, 0) }

// markedOutside is markedProcs without the members of process group pgid
// (0: all of them).
func markedOutside(poolID string, pgid int) []int {
	prefix := []byte(pidrec.EnvVar + "=" + poolID + ":")
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		found := false
		for kv := range bytes.SplitSeq(env, []byte{0}) {
			if bytes.HasPrefix(kv, prefix) {
				found = true
			}
		}
		if !found {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // f[0] is field 3 (state), f[2] field 5 (pgrp)
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" || (pgid != 0 && f[2] == strconv.Itoa(pgid)) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// launchEscaper launches escapeScript and waits until its three escapees
// run beside the leader.
func launchEscaper(t *testing.T, poolID, stateDir string, parent *cgroup.Parent, crashFile string) *engine.Process {
	t.Helper()
	needPython(t)
	cmd := []string{"sh", "-c", escapeScript, "engine"}
	if crashFile != "" {
		cmd = append(cmd, crashFile)
	}
	sink := engine.NewSink(nil, 100, 0, 0)
	escDir := t.TempDir()
	p, _, err := engine.Launch(engine.LaunchSpec{PoolID: poolID, Command: cmd, StateDir: stateDir, Cgroups: parent, Sink: sink,
		Env: map[string]string{"ESCAPE_DIR": escDir}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(0) })
	waitFor(t, 30*time.Second, "the three escapees to start", func() bool {
		select {
		case <-p.Done():
			return true // crashed already: the test's own check follows
		default:
		}
		return testutil.EscapeesSettled(escDir) && len(markedOutside(poolID, p.Pgid())) >= 3
	})
	return p
}

func TestLaunchContainsEscapees(t *testing.T) {
	for _, mode := range []string{engine.ContainCgroup, engine.ContainMarker} {
		for _, how := range []string{"stop", "kill", "crash"} {
			t.Run(mode+"/"+how, func(t *testing.T) {
				t.Parallel()
				var parent *cgroup.Parent
				if mode == engine.ContainCgroup {
					parent = testCgroupParent(t)
				}
				stateDir := t.TempDir()
				poolID := fmt.Sprintf("esc-%s-%s-%d", mode, how, time.Now().UnixNano())
				crash := ""
				if how == "crash" {
					crash = filepath.Join(t.TempDir(), "crash-now")
				}
				p := launchEscaper(t, poolID, stateDir, parent, crash)
				if got := p.Containment(); got != mode {
					t.Fatalf("Containment() = %q, want %q", got, mode)
				}
				cgPath := p.Cgroup()
				if mode == engine.ContainCgroup {
					if cgPath == "" {
						t.Fatal("no cgroup path")
					}
					if got := cgroup.Open(cgPath).Procs(); len(got) < 4 {
						t.Fatalf("cgroup.procs = %v, want the leader and its escapees", got)
					}
				}
				recs, _ := filepath.Glob(filepath.Join(stateDir, "*.json"))
				if len(recs) != 1 {
					t.Fatalf("pid records = %v, want one", recs)
				}
				if mode == engine.ContainCgroup {
					var r pidrec.Record
					b, _ := os.ReadFile(recs[0])
					if err := json.Unmarshal(b, &r); err != nil || r.Cgroup != cgPath {
						t.Fatalf("record %s: cgroup %q, want %q (err %v)", b, r.Cgroup, cgPath, err)
					}
				}
				switch how {
				case "stop":
					p.Stop(5 * time.Second)
				case "kill":
					p.Kill()
					waitDone(t, p, 30*time.Second)
				case "crash":
					if err := os.WriteFile(crash, nil, 0o600); err != nil {
						t.Fatal(err)
					}
					if e := waitDone(t, p, 30*time.Second); e.Code != 3 {
						t.Fatalf("exit = %v, want exit code 3", e)
					}
				}
				if left := markedProcs(poolID); len(left) != 0 {
					t.Fatalf("%d processes of the engine outlived it: %v", len(left), left)
				}
				if cgPath != "" {
					if _, err := os.Stat(cgPath); !os.IsNotExist(err) {
						t.Fatalf("engine cgroup %s not removed (stat: %v)", cgPath, err)
					}
				}
				if recs, _ := filepath.Glob(filepath.Join(stateDir, "*.json")); len(recs) != 0 {
					t.Fatalf("pid records left after a complete stop: %v", recs)
				}
			})
		}
	}
}

// TestStopContinuesStoppedEngine: SIGCONT follows the SIGTERM, so a
// SIGSTOPped engine acts on it at once instead of costing the whole grace.
func TestStopContinuesStoppedEngine(t *testing.T) {
	t.Parallel()
	sink := engine.NewSink(nil, 100, 0, 0)
	p, err := engine.Start(engine.Spec{Argv: []string{"sleep", "1000"}, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(-p.Pgid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the engine to be stopped", func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		return i > 0 && len(s) > i+2 && s[i+2] == 'T'
	})
	start := time.Now()
	e := p.Stop(60 * time.Second)
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("Stop of a SIGSTOPped engine took %v: SIGTERM waited for the grace", d)
	}
	if e.Signal != "SIGTERM" {
		t.Fatalf("exit = %v, want killed by SIGTERM (the SIGCONT let it act on it)", e)
	}
}

// launchHelper is a tiny daemon (a re-executed test binary) that launches
// escapeScript with the state_dir and cgroup parent its environment names,
// prints the engine's pid and waits to be SIGKILLed.
func launchHelper() int {
	var parent *cgroup.Parent
	if dir := os.Getenv("POOL_MANAGERD_TEST_CGROUP"); dir != "" {
		var err error
		if parent, err = cgroup.Setup(dir, nil); err != nil {
			fmt.Println("error:", err)
			return 1
		}
	}
	p, _, err := engine.Launch(engine.LaunchSpec{PoolID: os.Getenv("POOL_MANAGERD_TEST_POOL"),
		Command: []string{"sh", "-c", escapeScript}, StateDir: os.Getenv("POOL_MANAGERD_TEST_STATE"), Cgroups: parent,
		Env: map[string]string{"ESCAPE_DIR": os.Getenv("POOL_MANAGERD_TEST_ESCAPES")}})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Printf("pid=%d containment=%s\n", p.Pid(), p.Containment())
	time.Sleep(10 * time.Minute)
	return 0
}

// TestSweepAfterDaemonSIGKILL: a daemon SIGKILLed while its engine runs
// leaves the engine's escapees alive (Pdeathsig takes only the leader); the
// next start-up sweep, reading the kept pid record, kills every one of them
// (by the record's cgroup, or by the marker), and removes record and cgroup.
func TestSweepAfterDaemonSIGKILL(t *testing.T) {
	for _, mode := range []string{engine.ContainCgroup, engine.ContainMarker} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			needPython(t)
			cgDir := ""
			if mode == engine.ContainCgroup {
				cgDir = testCgroupParent(t).Path
			}
			stateDir := t.TempDir()
			poolID := fmt.Sprintf("sweep-%s-%d", mode, time.Now().UnixNano())
			self, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			escDir := t.TempDir()
			helper := exec.Command(self)
			helper.Env = engine.CleanEnv(os.Environ(), map[string]string{helperEnv: "launch",
				"POOL_MANAGERD_TEST_CGROUP": cgDir, "POOL_MANAGERD_TEST_STATE": stateDir, "POOL_MANAGERD_TEST_POOL": poolID,
				"POOL_MANAGERD_TEST_ESCAPES": escDir})
			out, err := helper.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := helper.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil || !strings.Contains(line, "containment="+mode) {
				t.Fatalf("helper said %q (%v), want containment=%s", line, err, mode)
			}
			var leader int
			if _, err := fmt.Sscanf(line, "pid=%d", &leader); err != nil {
				t.Fatalf("helper said %q: %v", line, err)
			}
			waitFor(t, 30*time.Second, "the three escapees", func() bool {
				return testutil.EscapeesSettled(escDir) && len(markedOutside(poolID, leader)) >= 3
			})
			_ = helper.Process.Signal(syscall.SIGKILL)
			_ = helper.Wait()
			waitFor(t, 30*time.Second, "the leader to die by Pdeathsig", func() bool {
				err := syscall.Kill(leader, 0)
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", leader))
				return err != nil || strings.Contains(string(b), ") Z")
			})
			if n := len(markedProcs(poolID)); n < 3 {
				t.Fatalf("only %d escapees outlived the daemon: the test proves nothing", n)
			}
			if _, err := pidrec.Sweep(stateDir, nil); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 30*time.Second, "no process of the engine left", func() bool { return len(markedProcs(poolID)) == 0 })
			if recs, _ := filepath.Glob(filepath.Join(stateDir, "*.json")); len(recs) != 0 {
				t.Fatalf("records left after the sweep: %v", recs)
			}
			if cgDir != "" {
				if es, _ := os.ReadDir(cgDir); len(es) > 0 {
					var names []string
					for _, e := range es {
						if e.IsDir() {
							names = append(names, e.Name())
						}
					}
					if len(names) > 0 {
						t.Fatalf("engine cgroups left after the sweep: %v", names)
					}
				}
			}
		})
	}
}

// An engine that ran alone in its cgroup and crashed is cleaned up in full
// (its cgroup reads empty at once, so there is no kill and no wait): Done
// closes with the kill reported, the cgroup is removed and the pid record
// is gone.
func TestLaunchLoneEngineCrashCleansUp(t *testing.T) {
	parent := testCgroupParent(t)
	state := t.TempDir()
	p, _, err := engine.Launch(engine.LaunchSpec{PoolID: "lone", Command: []string{"sleep", "1000"}, StateDir: state, Cgroups: parent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(0) })
	if p.Containment() != engine.ContainCgroup {
		t.Skipf("containment %s: no cgroup here", p.Containment())
	}
	cg := p.Cgroup()
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("Done not closed within 30 s of the SIGKILL")
	}
	if ex := p.Exit(); ex.Signal != "SIGKILL" {
		t.Errorf("exit %+v, want killed by SIGKILL", ex)
	}
	if _, err := os.Stat(cg); !os.IsNotExist(err) {
		t.Errorf("cgroup %s still there after Done: %v", cg, err)
	}
	if es, _ := os.ReadDir(state); len(es) > 0 {
		t.Errorf("pid record left after Done: %v", es)
	}
}

// OnStart hands the engine over before Launch returns (with the URL Launch
// returns), and OnDone reports its end once Done is closed and Exit valid.
func TestLaunchOnStartAndOnDone(t *testing.T) {
	type start struct {
		p   *engine.Process
		url string
	}
	started := make(chan start, 1)
	done := make(chan engine.Exit, 1)
	p, url, err := engine.Launch(engine.LaunchSpec{PoolID: "cb", Command: []string{"sleep", "1000"},
		OnStart: func(p *engine.Process, url string) { started <- start{p, url} },
		OnDone: func(p *engine.Process) {
			select {
			case <-p.Done():
				done <- p.Exit()
			default:
				t.Error("OnDone called before Done was closed")
				done <- engine.Exit{}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(0) })
	select {
	case s := <-started:
		if s.p != p || s.url != url {
			t.Errorf("OnStart got %v %q, Launch returned %v %q", s.p, s.url, p, url)
		}
	default:
		t.Fatal("OnStart not called by the time Launch returned")
	}
	select {
	case <-done:
		t.Fatal("OnDone called while the engine runs")
	default:
	}
	p.Kill()
	select {
	case ex := <-done:
		if ex.Signal != "SIGKILL" {
			t.Errorf("OnDone saw exit %+v, want killed by SIGKILL", ex)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("OnDone not called within 30 s of the kill")
	}
	if _, _, err := engine.Launch(engine.LaunchSpec{PoolID: "cb", Command: []string{"/nonexistent/engine"},
		OnStart: func(*engine.Process, string) { t.Error("OnStart called for a failed start") },
		OnDone:  func(*engine.Process) { t.Error("OnDone called for a failed start") }}); err == nil {
		t.Fatal("Launch of a missing program succeeded")
	}
}
