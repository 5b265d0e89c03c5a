// Package buildinfo says which build of pool-managerd is running: the
// release version (stamped with -ldflags -X by packaging/build-deb.sh, else
// the module version the go command derived from VCS tags) and the VCS
// commit the go command records with -buildvcs. Both binaries print it:
// `pool-managerd -version`, `poolctl --version`.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Version is the release version, set at build time with
//
//	-ldflags "-X github.com/pool-managerd/pool-managerd/internal/buildinfo.Version=1.2.3"
//
// Empty means "not stamped": Get falls back to the module version.
var Version string

// Commit, CommitTime and Modified ("true" or "false") stand in for the go
// command's vcs.revision, vcs.time and vcs.modified where it records none:
// it finds no VCS in a git worktree (.git is a file there) or with
// -buildvcs=false. packaging/build-deb.sh stamps them with -X like Version.
var Commit, CommitTime, Modified string

// Info is what the binary knows about its own build.
type Info struct {
	Version   string // release version; "" when neither stamped nor known to the go command
	Commit    string // vcs.revision, "" when built without VCS information
	Time      string // vcs.time (commit time, RFC 3339), "" when unknown
	Modified  bool   // vcs.modified: the work tree had uncommitted changes
	GoVersion string // the toolchain that built the binary
}

// Get reads the running binary's build information.
func Get() Info { return get(debug.ReadBuildInfo) }

// get is Get with read standing in for debug.ReadBuildInfo.
func get(read func() (*debug.BuildInfo, bool)) Info {
	i := Info{Version: Version, Commit: Commit, Time: CommitTime, Modified: Modified == "true"}
	bi, ok := read()
	if !ok {
		return i
	}
	i.GoVersion = bi.GoVersion
	if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		i.Version = strings.TrimPrefix(bi.Main.Version, "v")
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Commit = s.Value
		case "vcs.time":
			i.Time = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	return i
}

// String is the one-line form both binaries print after their name, e.g.
// "1.2.0 (commit 3ef05d1a9c2b, 2026-12-01T11:15:25Z, go1.26.8)"; a commit
// built from a dirty tree ends in "+dirty". fallback is the version shown
// when none is known.
func (i Info) String(fallback string) string {
	v := i.Version
	if v == "" {
		v = fallback
	}
	var extra []string
	if i.Commit != "" {
		c := i.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		if i.Modified {
			c += "+dirty"
		}
		extra = append(extra, "commit "+c)
		if i.Time != "" {
			extra = append(extra, i.Time)
		}
	} else {
		extra = append(extra, "commit unknown")
	}
	if i.GoVersion != "" {
		extra = append(extra, i.GoVersion)
	}
	return v + " (" + strings.Join(extra, ", ") + ")"
}
