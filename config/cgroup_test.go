package config

import (
	"strings"
	"testing"
)

func TestCgroupParent(t *testing.T) {
	for _, v := range []string{"auto", "off", "/sys/fs/cgroup/pool-managerd.slice"} {
		c, err := Parse([]byte("cgroup_parent: "+v+"\n"), "c.yaml")
		if err != nil || c.CgroupParent != v {
			t.Errorf("cgroup_parent %s: %v, %q", v, err, c.CgroupParent)
		}
	}
	if c, err := Parse([]byte("listen: 127.0.0.1:9200\n"), "c.yaml"); err != nil || c.CgroupParent != "" {
		t.Errorf("default cgroup_parent = %q, %v; want \"\" (auto)", c.CgroupParent, err)
	}
	for _, v := range []string{"relative/path", "/sys/fs/cgroup/../x", "yes"} {
		_, err := Parse([]byte("\ncgroup_parent: "+v+"\n"), "c.yaml")
		if err == nil || !strings.Contains(err.Error(), "c.yaml:2: cgroup_parent:") {
			t.Errorf("cgroup_parent %s: %v, want an error naming key and line", v, err)
		}
	}
}
