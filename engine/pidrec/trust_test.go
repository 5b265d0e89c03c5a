package pidrec

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/engine/cgroup"
)

// TestPlantedRecordNeverKills: a record naming a live process with its
// correct start time, planted by someone other than the daemon's user, never
// gets that process killed: not in a state_dir others may write, and not as
// a file the daemon's user does not own.
func TestPlantedRecordNeverKills(t *testing.T) {
	cases := []struct {
		name  string
		plant func(t *testing.T, dir, file string)
		dirOK bool
	}{
		{"world-writable dir", func(t *testing.T, dir, file string) { must(t, os.Chmod(dir, 0o777)) }, false},
		{"group-writable dir", func(t *testing.T, dir, file string) { must(t, os.Chmod(dir, 0o770)) }, false},
		{"record owned by nobody", func(t *testing.T, dir, file string) {
			u, err := user.Lookup("nobody")
			if err != nil || os.Geteuid() != 0 {
				t.Skip("needs root and a nobody user")
			}
			uid, _ := strconv.Atoi(u.Uid)
			must(t, os.Chown(file, uid, -1))
		}, true},
		{"record writable by others", func(t *testing.T, dir, file string) { must(t, os.Chmod(file, 0o666)) }, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			victim := startSleeper(t)
			must(t, Write(dir, "planted", victim.Process.Pid, victim.Process.Pid, "sleep", ""))
			file := filepath.Join(dir, "planted."+strconv.Itoa(victim.Process.Pid)+".json")
			c.plant(t, dir, file)
			if err := CheckDir(dir); (err == nil) != c.dirOK {
				t.Fatalf("CheckDir = %v, want ok=%v", err, c.dirOK)
			}
			var logs bytes.Buffer
			n, err := Sweep(dir, logTo(&logs))
			if n != 0 {
				t.Fatalf("Sweep killed %d processes from a planted record", n)
			}
			if !c.dirOK && err == nil {
				t.Fatal("Sweep accepted a state_dir others may write")
			}
			time.Sleep(50 * time.Millisecond) // a SIGKILL, had one been sent, lands at once
			if !alive(t, victim.Process.Pid) {
				t.Fatal("the planted record's process was killed")
			}
			if !strings.Contains(logs.String(), "ignored") {
				t.Fatalf("no warning about the ignored record: %s", logs.String())
			}
			if _, err := os.Stat(file); err != nil {
				t.Fatalf("the planted record was removed (it is left for the operator): %v", err)
			}
		})
	}
}

func TestPrepareDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "state")
	must(t, PrepareDir(dir))
	fi, err := os.Stat(dir)
	must(t, err)
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("state_dir mode %04o, want 0700", fi.Mode().Perm())
	}
	must(t, os.Chmod(dir, 0o757))
	if err := PrepareDir(dir); err == nil || !strings.Contains(err.Error(), "chmod go-w") {
		t.Fatalf("PrepareDir on a world-writable dir = %v, want a refusal", err)
	}
	if u, err := user.Lookup("nobody"); err == nil && os.Geteuid() == 0 {
		uid, _ := strconv.Atoi(u.Uid)
		must(t, os.Chmod(dir, 0o700))
		must(t, os.Chown(dir, uid, -1))
		if err := CheckDir(dir); err == nil || !strings.Contains(err.Error(), "owned by uid") {
			t.Fatalf("CheckDir on nobody's dir = %v, want a refusal", err)
		}
	}
}

// TestSweepKillsRecordedCgroup: after a daemon SIGKILL, an engine whose
// leader is gone left a process that setsid()ed out of its group and
// cleared the marker; the record's cgroup still takes it.
func TestSweepKillsRecordedCgroup(t *testing.T) {
	mount := cgroup.Mount()
	if mount == "" {
		t.Skip("no cgroup2 mount")
	}
	parentDir := filepath.Join(mount, fmt.Sprintf("pm-test-sweep-%d", os.Getpid()))
	parent, err := cgroup.Setup(parentDir, nil)
	if err != nil {
		t.Skipf("cannot create a test cgroup: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Rmdir(parentDir) })
	cg, err := parent.New("sweep-" + NewToken())
	must(t, err)
	t.Cleanup(func() { _ = cg.Kill(); cg.WaitEmpty(10*time.Second, nil); _ = cg.Remove() })
	// The escapee: no marker at all, own session, in the engine's cgroup.
	esc := exec.Command("sleep", "300")
	esc.Env = []string{}
	esc.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	fd, err := cg.OpenFD()
	must(t, err)
	esc.SysProcAttr.UseCgroupFD, esc.SysProcAttr.CgroupFD = true, int(fd.Fd())
	must(t, esc.Start())
	fd.Close()
	t.Cleanup(func() { _ = esc.Process.Kill(); _ = esc.Wait() })

	dir := t.TempDir()
	leader := startSleeper(t) // stands in for the engine's leader, then dies
	must(t, Save(dir, Record{PoolID: "cg", PID: leader.Process.Pid, PGID: leader.Process.Pid, Argv0: "sleep", Cgroup: cg.Path}))
	_ = syscall.Kill(leader.Process.Pid, syscall.SIGKILL)
	_ = leader.Wait()

	var logs bytes.Buffer
	if _, err := Sweep(dir, logTo(&logs)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- esc.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("the cgroup's escapee survived the sweep: %s", logs.String())
	}
	if _, err := os.Stat(cg.Path); !os.IsNotExist(err) {
		t.Fatalf("swept cgroup not removed: %v", err)
	}
	if n := entries(t, dir); len(n) != 0 {
		t.Fatalf("records left: %v", n)
	}
}

// TestSweepRefusesForeignCgroup: a record may only name an engine cgroup,
// never the daemon's own or any other.
func TestSweepRefusesForeignCgroup(t *testing.T) {
	mount := cgroup.Mount()
	if mount == "" {
		t.Skip("no cgroup2 mount")
	}
	for _, p := range []string{mount, filepath.Join(mount, cgroup.Own()), filepath.Join(mount, "system.slice"), "/tmp/" + cgroup.EnginePrefix + "x", mount + "/../" + cgroup.EnginePrefix} {
		if err := cgroup.ValidEnginePath(p); err == nil {
			t.Errorf("ValidEnginePath(%q) accepted", p)
		}
	}
	if err := cgroup.ValidEnginePath(filepath.Join(mount, "x", cgroup.EnginePrefix+"p-1")); err != nil {
		t.Errorf("an engine cgroup refused: %v", err)
	}
}
