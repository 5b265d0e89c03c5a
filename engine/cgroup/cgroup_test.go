package cgroup

import (
	"bufio"
	"strings"
	"testing"
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
