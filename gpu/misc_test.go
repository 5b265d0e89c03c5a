package gpu

import (
	"testing"
)

func TestClassifyXID(t *testing.T) {
	for _, xid := range []uint64{13, 31, 43, 45, 68, 109} {
		if dl, known, _ := classifyXID(xid); dl || !known {
			t.Errorf("XID %d: deviceLevel=%v known=%v, want engine-level", xid, dl, known)
		}
	}
	for _, xid := range []uint64{48, 63, 64, 74, 79, 92, 94, 95} {
		if dl, known, _ := classifyXID(xid); !dl || !known {
			t.Errorf("XID %d: deviceLevel=%v known=%v, want device-level", xid, dl, known)
		}
	}
	if dl, known, _ := classifyXID(999); dl || known {
		t.Error("unknown XID should be engine-level and unknown")
	}
}

func TestVersionCompare(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		less bool
	}{
		{"470.57", "535.0", true},
		{"535.0", "535", false},
		{"535", "535.0", false},
		{"535.104.05", "535.54", false},
		{"99.1", "100.0", true},
		{"550.54.15", "535.0", false},
	} {
		a, err := parseVersion(tc.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := parseVersion(tc.b)
		if err != nil {
			t.Fatal(err)
		}
		if got := versionLess(a, b); got != tc.less {
			t.Errorf("%s < %s = %v", tc.a, tc.b, got)
		}
	}
	for _, bad := range []string{"", "535.x", "latest", "535..1", "-1"} {
		if _, err := parseVersion(bad); err == nil {
			t.Errorf("parseVersion(%q) accepted", bad)
		}
	}
}

func TestCUDAEnv(t *testing.T) {
	if env := CUDAEnv(nil); env == nil || len(env) != 0 {
		t.Errorf("CUDAEnv(nil) = %v, want an empty map", env)
	}
	env := CUDAEnv([]Device{{UUID: "GPU-a"}, {UUID: "MIG-b"}})
	if env["CUDA_VISIBLE_DEVICES"] != "GPU-a,MIG-b" || env["CUDA_DEVICE_ORDER"] != "PCI_BUS_ID" || len(env) != 2 {
		t.Errorf("CUDAEnv = %v", env)
	}
}

func TestNoGuard(t *testing.T) {
	var g Guard = NoGuard{}
	g.ClearUnhealthy("GPU-x")
	if g.Events() != nil || g.Close() != nil {
		t.Error("NoGuard should have no events and close cleanly")
	}
}
