package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// The test binary plays the soak's helper roles (daemon, sim-engine, sleep)
// when the soak re-executes it, as the poolsoak binary does.
func TestMain(m *testing.M) {
	if isRole(os.Args[1:]) {
		os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// runSoak runs the soak in-process; its run directory, kept when a run
// fails, lands in the test's temporary directory.
func runSoak(t *testing.T, args ...string) (string, int) {
	t.Helper()
	t.Setenv("TMPDIR", t.TempDir())
	var out testutil.SyncBuffer
	code := soakMain(args, &out, &out)
	return out.String(), code
}

// TestSoakShort is the CI form of the soak: 15s of chaos, ~20s in all.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped with -short")
	}
	out, code := runSoak(t, "-duration", "15s", "-pools", "6", "-seed", "1")
	if code != exitPass {
		t.Fatalf("soak failed (exit %d):\n%s", code, out)
	}
	t.Log(out)
}

// TestSoakDetectsPlanted proves the checks can fail: each planted fault
// must make a short run exit 1 with a message naming it.
func TestSoakDetectsPlanted(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped with -short")
	}
	for _, tc := range []struct{ flag, want string }{
		{"-plant-leftover", "leftover process of planted"},
		{"-plant-negative-lease", "negative: a release was booked twice"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			out, code := runSoak(t, "-duration", "5s", "-pools", "3", "-seed", "2", tc.flag)
			if code != exitFail || !strings.Contains(out, tc.want) {
				t.Fatalf("%s: exit %d, want %d with %q in:\n%s", tc.flag, code, exitFail, tc.want, out)
			}
		})
	}
}

// TestSoakAdversary runs the soak with escaping engines (-plant-escapes)
// and hostile API callers (-hostile-api): it must pass, leftovers 0 and no
// hostile request running code, once every engine is contained (a cgroup,
// or the marker kill after every stop) and API input is data.
func TestSoakAdversary(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped with -short")
	}
	out, code := runSoak(t, "-duration", "15s", "-pools", "6", "-seed", "3", "-plant-escapes", "-hostile-api")
	if code != exitPass || !strings.Contains(out, "alive after the daemon stopped (setsid 0, setpgid 0, double-fork 0)") {
		t.Fatalf("adversarial soak failed (exit %d):\n%s", code, out)
	}
	t.Log(out)
}

// TestEscaperPlants runs the escaping engine's leader on its own: it must
// plant one escapee of each kind, each outside the leader's process group
// and tagged with its kind, and log them, before it execs the engine.
func TestEscaperPlants(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	runID := fmt.Sprintf("escaper-test-%d", os.Getpid())
	log := filepath.Join(t.TempDir(), "escapes.log")
	cmd := exec.Command(self, "escaper", log, "1m", "sleep", "0")
	cmd.Env = append(os.Environ(), runEnv+"="+runID)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c, err := spawn(cmd, false) // never exec.Cmd.Wait: the soak's reaper may run in this process
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killRun(runID, nil) })
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatal("escaper did not exit")
	}
	if c.err != nil {
		t.Fatalf("escaper: %v", c.err)
	}
	leader := c.pid
	if n, byKind := countEscapeesIn(t, log); n != 3 || byKind["setsid"] != 1 || byKind["setpgid"] != 1 || byKind["double-fork"] != 1 {
		t.Errorf("escape log: %d planted, %v", n, byKind)
	}
	var found []proc
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if found = scanRun(runID); len(found) == 3 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	kinds := map[string]bool{}
	for _, p := range found {
		kinds[escapeeKind(p)] = true
		if p.pgid == leader || p.pgid == syscall.Getpgrp() {
			t.Errorf("escapee in the leader's or the test's group: %s", p)
		}
	}
	if len(found) != 3 || !kinds["setsid"] || !kinds["setpgid"] || !kinds["double-fork"] {
		t.Errorf("want one live escapee of each kind, got %v", found)
	}
}

// countEscapeesIn reads an escape log the way the report does.
func countEscapeesIn(t *testing.T, log string) (int, map[string]int) {
	t.Helper()
	s := &soak{dir: filepath.Dir(log)}
	return s.escapesPlanted()
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-duration", "1s"}, {"-pools", "0"}, {"-seed", "x"}, {"extra"}} {
		if _, code := runSoak(t, args...); code != exitBadArgs {
			t.Errorf("%q: exit %d, want %d", args, code, exitBadArgs)
		}
	}
}
