package cgroup

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func TestParseMountinfo(t *testing.T) {
	hybrid := `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	if got := parseMountinfo(bufio.NewScanner(strings.NewReader(hybrid))); got != "/sys/fs/cgroup/unified" {
		t.Errorf("hybrid: %q", got)
	}
	unified := `30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
50 30 0:26 /sub /mnt/with\040space rw - cgroup2 cgroup2 rw
`
	if got := parseMountinfo(bufio.NewScanner(strings.NewReader(unified))); got != "/sys/fs/cgroup" {
		t.Errorf("unified: %q", got)
	}
	if got := parseMountinfo(bufio.NewScanner(strings.NewReader("1 0 0:1 / / rw - ext4 /dev/sda rw\n"))); got != "" {
		t.Errorf("none: %q", got)
	}
	if got := unescapeMount(`/mnt/with\040space`); got != "/mnt/with space" {
		t.Errorf("unescape: %q", got)
	}
}

func TestSetupRefusesBadParent(t *testing.T) {
	for _, p := range []string{"relative", "/sys/fs/cgroup/../etc", "/etc/pool-managerd"} {
		if _, err := Setup(p, nil); err == nil {
			t.Errorf("Setup(%q) accepted", p)
		}
	}
	if p, err := Setup(Off, nil); p != nil || err != nil {
		t.Errorf("Setup(off) = %v, %v", p, err)
	}
}

func TestRemoveStale(t *testing.T) {
	mount := Mount()
	if mount == "" {
		t.Skip("no cgroup2 mount")
	}
	p, err := Setup(filepath.Join(mount, "pm-test-stale-"+strconv.Itoa(os.Getpid())), nil)
	if err != nil {
		t.Skipf("cannot create a test cgroup: %v", err)
	}
	defer syscall.Rmdir(p.Path)
	cg, err := p.New("x")
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Remove()
	if n := p.RemoveStale(time.Hour); n != 0 {
		t.Fatalf("removed %d fresh cgroups", n)
	}
	if n := p.RemoveStale(0); n != 1 {
		t.Fatalf("removed %d stale empty cgroups, want 1", n)
	}
	if _, err := os.Stat(cg.Path); !os.IsNotExist(err) {
		t.Fatalf("stale cgroup still there: %v", err)
	}
}

// A process that has exited leaves its cgroup at once: the cgroup reads
// empty while the process is still an unreaped zombie, so the end of an
// engine that ran alone costs one read of cgroup.events (WaitEmpty).
func TestPopulatedIgnoresZombies(t *testing.T) {
	mount := Mount()
	if mount == "" {
		t.Skip("no cgroup2 mount")
	}
	p, err := Setup(filepath.Join(mount, "pm-test-zombie-"+strconv.Itoa(os.Getpid())), nil)
	if err != nil {
		t.Skipf("cannot create a test cgroup: %v", err)
	}
	defer syscall.Rmdir(p.Path)
	cg, err := p.New("z")
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Remove()
	fd, err := cg.OpenFD()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	err = cmd.Start()
	fd.Close()
	if err != nil {
		t.Skipf("cannot spawn into a cgroup here: %v", err)
	}
	if pop, err := cg.Populated(); err != nil || !pop {
		t.Fatalf("with a live member: Populated = %v, %v", pop, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Wait for the exit without reaping it.
	var info [128]byte
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, 1 /* P_PID */, uintptr(cmd.Process.Pid),
			uintptr(unsafe.Pointer(&info)), syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		if errno != syscall.EINTR {
			break
		}
	}
	if pop, err := cg.Populated(); err != nil || pop {
		t.Errorf("with only a zombie: Populated = %v, %v; want false", pop, err)
	}
	calls := 0
	if !cg.WaitEmpty(10*time.Second, func(int) { calls++ }) {
		t.Error("WaitEmpty: not empty")
	}
	if calls != 0 {
		t.Errorf("WaitEmpty called reap %d times for an empty cgroup", calls)
	}
	_ = cmd.Wait()
}
