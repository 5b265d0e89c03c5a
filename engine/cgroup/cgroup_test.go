package cgroup

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
