package supervisor

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/engine/cgroup"
	"github.com/pool-managerd/pool-managerd/engine/pidrec"
	"github.com/pool-managerd/pool-managerd/gpu"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// escapes start three children that leave the engine's process group:
// setsid(), setpgid(0, 0) and a daemonizing double fork. Then the script
// execs the simulator.
const escapes = testutil.Escapees + `exec "$@"
`

// escapingPool is a simulator pool whose engine leaves three escapees.
func escapingPool(t *testing.T, id string, flags ...string) config.Pool {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not found: the escaping children are python processes")
	}
	p := simPool(id, flags...)
	p.Command = append([]string{"sh", "-c", escapes, "sh"}, p.Command...)
	return p
}

// containModes runs f with a test cgroup parent (skipped where none can be
// made) and with cgroups off.
func containModes(t *testing.T, f func(t *testing.T, cgroupParent string)) {
	t.Run("cgroup", func(t *testing.T) {
		mount := cgroup.Mount()
		if mount == "" {
			t.Skip("no cgroup2 mount")
		}
		dir := filepath.Join(mount, fmt.Sprintf("pm-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
		if _, err := cgroup.Setup(dir, nil); err != nil {
			t.Skipf("cannot create a test cgroup: %v", err)
		}
		t.Cleanup(func() {
			if es, _ := os.ReadDir(dir); len(es) > 0 {
				for _, e := range es {
					if e.IsDir() {
						t.Errorf("engine cgroup %s left behind", e.Name())
						cg := cgroup.Open(filepath.Join(dir, e.Name()))
						_ = cg.Kill()
						cg.WaitEmpty(10*time.Second, nil)
						_ = cg.Remove()
					}
				}
			}
			_ = syscall.Rmdir(dir)
		})
		f(t, dir)
	})
	t.Run("marker", func(t *testing.T) { f(t, cgroup.Off) })
}

// startContainDaemon is startDaemon with a state_dir and a cgroup_parent.
func startContainDaemon(t *testing.T, stateDir, cgroupParent string, pools ...config.Pool) *testDaemon {
	t.Helper()
	return startDaemonWith(t, func(o *Options) {
		o.Config.StateDir, o.Config.CgroupParent = stateDir, cgroupParent
	}, pools...)
}

// marked lists the live processes carrying the marker of poolID (any
// engine start of it), by token.
func marked(poolID string) map[int]string {
	prefix := []byte(pidrec.EnvVar + "=" + poolID + ":")
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for kv := range bytes.SplitSeq(env, []byte{0}) {
			if tok, ok := bytes.CutPrefix(kv, prefix); ok {
				if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
					s := string(st)
					if i := strings.LastIndexByte(s, ')'); i > 0 && len(s) > i+2 && s[i+2] != 'Z' && s[i+2] != 'X' {
						out[pid] = string(tok)
					}
				}
			}
		}
	}
	return out
}

// waitEscapees waits until the pool's current engine runs with its three
// escapees and returns the engine's marker token.
func (td *testDaemon) waitEscapees(id string) string {
	td.t.Helper()
	var token string
	td.eventually("the engine and its three escapees", func() bool {
		_, st := td.call("GET", "/v1/pools/"+id, nil)
		pid, ok := st["pid"].(float64)
		if !ok {
			return false
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", int(pid)))
		if err != nil {
			return false
		}
		for kv := range bytes.SplitSeq(env, []byte{0}) {
			if tok, ok := bytes.CutPrefix(kv, []byte(pidrec.EnvVar+"="+id+":")); ok {
				token = string(tok)
			}
		}
		n := 0
		for p, tok := range marked(id) {
			if tok == token && !samePgrp(p, int(pid)) {
				n++
			}
		}
		return n >= 3
	})
	return token
}

func samePgrp(pid, pgid int) bool {
	g, err := syscall.Getpgid(pid)
	return err == nil && g == pgid
}

// noneLeft asserts that no process of poolID's engines is left, except
// those of the engine with token keep ("" keeps none).
func (td *testDaemon) noneLeft(id, keep string) {
	td.t.Helper()
	td.eventually("no escaped process left", func() bool {
		for _, tok := range marked(id) {
			if tok != keep {
				return false
			}
		}
		return true
	})
	for pid, tok := range marked(id) {
		if tok != keep {
			td.t.Fatalf("process %d of an engine of %s outlived it", pid, id)
		}
	}
}

// TestEscapeesDieWithTheirEngine: drain, reload, a crash loop until the
// breaker opens, and a clean daemon shutdown leave no process of an engine
// whose children setsid(), setpgid(0, 0) and double-fork, with a cgroup per
// engine and with the marker alone.
func TestEscapeesDieWithTheirEngine(t *testing.T) {
	containModes(t, func(t *testing.T, parent string) {
		stateDir := t.TempDir()
		want := "marker"
		if parent != cgroup.Off {
			want = "cgroup"
		}
		crash := escapingPool(t, "crashloop", "--crash-after", "300ms")
		crash.Restart.MaxFailures = 3
		td := startContainDaemon(t, stateDir, parent, escapingPool(t, "esc"), crash, escapingPool(t, "down"))

		// drain
		td.waitState("esc", actors.StateReady)
		td.waitEscapees("esc")
		if _, st := td.call("GET", "/v1/pools/esc", nil); st["containment"] != want {
			t.Fatalf("containment = %v, want %s", st["containment"], want)
		}
		if code, _ := td.call("POST", "/v1/pools/esc/drain", nil); code != 202 {
			t.Fatalf("drain: %d", code)
		}
		td.waitState("esc", actors.StateStopped)
		td.noneLeft("esc", "")

		// reload: the old engine's escapees go, the new engine runs
		if code, _ := td.call("POST", "/v1/pools/esc/start", nil); code != 202 {
			t.Fatalf("start: %d", code)
		}
		td.waitState("esc", actors.StateReady)
		old := td.waitEscapees("esc")
		if code, body := td.call("POST", "/v1/pools/esc/reload", map[string]any{"new_model_ref": "test/other"}); code/100 != 2 {
			t.Fatalf("reload: %d %v", code, body["_raw"])
		}
		td.eventually("the reload to finish", td.poolHas("esc", map[string]any{"state": "ready", "model_ref": "test/other"}))
		cur := td.waitEscapees("esc")
		if cur == old {
			t.Fatal("the reload kept the old engine")
		}
		td.noneLeft("esc", cur)

		// crash loop until the breaker opens
		td.waitState("crashloop", actors.StateFailed)
		td.noneLeft("crashloop", "")

		// metric
		_, m := td.call("GET", "/metrics", nil)
		if line := fmt.Sprintf(`pool_managerd_pool_containment{kind=%q,pool_id="esc"} 1`, want); !strings.Contains(m["_raw"].(string), line) {
			t.Errorf("metrics lack %s", line)
		}

		// clean shutdown
		td.waitEscapees("down")
		td.Shutdown()
		for _, id := range []string{"esc", "down", "crashloop"} {
			td.noneLeft(id, "")
		}
		if recs, _ := filepath.Glob(filepath.Join(stateDir, "*.json")); len(recs) != 0 {
			t.Errorf("pid records left after a clean shutdown: %v", recs)
		}
	})
}

// TestStateDirTrust: a state_dir others may write is refused at start, and
// a missing one is created 0700.
func TestStateDirTrust(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	cfg := &config.Config{Listen: "127.0.0.1:0", StateDir: dir, CgroupParent: cgroup.Off}
	if _, err := New(Options{Config: cfg, Guard: gpu.NoGuard{}}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state_dir: %v, mode %v; want created 0700", err, fi)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Config: cfg, Guard: gpu.NoGuard{}}); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Fatalf("New with a world-writable state_dir = %v, want a refusal", err)
	}
	if err := CheckStateDir(cfg); err == nil {
		t.Fatal("CheckStateDir accepted a world-writable state_dir")
	}
}
