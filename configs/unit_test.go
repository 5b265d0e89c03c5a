package configs_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const unitFile = "pool-managerd.service"

// maxExposure is the highest `systemd-analyze security` score the unit may
// have (0 is locked down, 10 is everything allowed).
const maxExposure = 3.5

// unitDirectives returns the [Service] section of the unit as key -> values,
// in order (a key may repeat).
func unitDirectives(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not key=value: %q", unitFile, line)
		}
		if section == "[Service]" {
			out[k] = append(out[k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestUnitHardening asserts the sandbox the unit promises (README,
// Operations): engines are supervised, contained by the delegated cgroup
// subtree, and confined to the GPU device nodes and a minimal bounding set.
func TestUnitHardening(t *testing.T) {
	d := unitDirectives(t)
	want := map[string]string{
		"Type":                    "notify",
		"NotifyAccess":            "main",
		"WatchdogSec":             "30s",
		"KillMode":                "mixed",
		"Delegate":                "yes",
		"DevicePolicy":            "closed",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"ProtectControlGroups":    "yes",
		"ProtectClock":            "yes",
		"ProtectHostname":         "yes",
		"ProtectProc":             "invisible",
		"RestrictNamespaces":      "yes",
		"RestrictSUIDSGID":        "yes",
		"RestrictRealtime":        "yes",
		"LockPersonality":         "yes",
		"SystemCallArchitectures": "native",
		"SystemCallErrorNumber":   "EPERM",
		"UMask":                   "0077",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		"CapabilityBoundingSet":   "CAP_SETUID CAP_SETGID CAP_KILL CAP_SYS_PTRACE CAP_DAC_READ_SEARCH",
	}
	for k, v := range want {
		got := d[k]
		if len(got) != 1 || got[0] != v {
			t.Errorf("%s=%q, want exactly %q", k, got, v)
		}
	}
	devices := strings.Join(d["DeviceAllow"], ",")
	for _, dev := range []string{"char-nvidia-frontend rw", "char-nvidia-uvm rw", "char-nvidia-caps r", "char-drm rw"} {
		if !strings.Contains(devices, dev) {
			t.Errorf("DeviceAllow lacks %q: %s", dev, devices)
		}
	}
	// The engine cgroups live in the unit's own cgroup: it must stay
	// writable under ProtectControlGroups= on unified and hybrid hosts.
	rw := strings.Join(d["ReadWritePaths"], " ")
	for _, p := range []string{"-/sys/fs/cgroup/system.slice/%n", "-/sys/fs/cgroup/unified/system.slice/%n"} {
		if !strings.Contains(rw, p) {
			t.Errorf("ReadWritePaths lacks %s: %s", p, rw)
		}
	}
	// Engines JIT (W+X memory), see GPUs, and need setuid() for `user:`.
	for _, k := range []string{"MemoryDenyWriteExecute", "PrivateDevices", "PrivateUsers", "PrivateNetwork", "DynamicUser"} {
		if len(d[k]) > 0 {
			t.Errorf("%s=%v breaks engines", k, d[k])
		}
	}
	filter := strings.Join(d["SystemCallFilter"], " ")
	for _, g := range []string{"@privileged", "@resources", "@debug", "@process"} {
		if strings.Contains(filter, g) {
			t.Errorf("SystemCallFilter names %s, which engines or the daemon need: %s", g, filter)
		}
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// TestUnitSecurityScore runs `systemd-analyze security --offline=yes` on
// the unit where systemd-analyze (systemd >= 250) is installed, and fails
// above maxExposure. It also runs `systemd-analyze verify` on a copy whose
// ExecStart names a binary that exists.
func TestUnitSecurityScore(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	out, err := exec.Command(sa, "security", "--offline=yes", unitFile).CombinedOutput()
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Skipf("systemd-analyze security --offline=yes unsupported here (%v): %.300s", err, out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security: %.1f", score)
	if score > maxExposure {
		t.Errorf("exposure %.1f, want <= %.1f:\n%s", score, maxExposure, out)
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	copied := strings.Replace(string(unit), "ExecStart=/usr/local/bin/pool-managerd", "ExecStart="+self, 1)
	if copied == string(unit) {
		t.Fatal("ExecStart=/usr/local/bin/pool-managerd not found")
	}
	path := filepath.Join(t.TempDir(), unitFile)
	if err := os.WriteFile(path, []byte(copied), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sa, "verify", path).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
