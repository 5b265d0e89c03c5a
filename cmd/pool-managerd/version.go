package main

import (
	"github.com/pool-managerd/pool-managerd/internal/buildinfo"
	"github.com/pool-managerd/pool-managerd/supervisor"
)

// A stamped release version (packaging/build-deb.sh) or the module version
// the go command derived from VCS becomes the daemon's version everywhere:
// -version, /healthz, daemon.started. Unstamped builds keep
// supervisor.Version's default.
func init() {
	if v := buildinfo.Get().Version; v != "" {
		supervisor.Version = v
	}
}

// versionLine is what -version prints: name, version, commit, toolchain.
func versionLine() string {
	return "pool-managerd " + buildinfo.Get().String(supervisor.Version)
}
