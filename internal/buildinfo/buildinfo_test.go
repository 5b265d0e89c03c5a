package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestInfoString(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261201111525-1d5e43b13d71"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "1d5e43b13d71559b6eb18a44c1e92aa825a4164c"},
			{Key: "vcs.time", Value: "2026-12-01T11:15:25Z"},
			{Key: "vcs.modified", Value: "true"},
		}}
	read := func() (*debug.BuildInfo, bool) { return bi, true }
	for _, tc := range []struct {
		stamped, want string
	}{
		{"1.2.0", "1.2.0 (commit 1d5e43b13d71+dirty, 2026-12-01T11:15:25Z, go1.26.8)"},
		{"", "0.0.0-20261201111525-1d5e43b13d71 (commit 1d5e43b13d71+dirty, 2026-12-01T11:15:25Z, go1.26.8)"},
	} {
		Version = tc.stamped
		if got := get(read).String("dev"); got != tc.want {
			t.Errorf("stamped %q: String = %q, want %q", tc.stamped, got, tc.want)
		}
	}
	none := func() (*debug.BuildInfo, bool) { return &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true }
	// A worktree build: no vcs.* settings, the commit stamped with -X.
	Version, Commit, CommitTime, Modified = "1.2.0", "da3c41987a62b5c1649199444640975b8c2b7a8a", "2026-12-01T11:29:39Z", "false"
	if got, want := get(none).String("dev"), "1.2.0 (commit da3c41987a62, 2026-12-01T11:29:39Z)"; got != want {
		t.Errorf("stamped commit: String = %q, want %q", got, want)
	}
	Version, Commit, CommitTime, Modified = "", "", "", ""
	if got, want := get(none).String("0.1.0-dev"), "0.1.0-dev (commit unknown)"; got != want {
		t.Errorf("no build info: String = %q, want %q", got, want)
	}
}
