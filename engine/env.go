// This file prepares what a child process inherits: environment, port, user.

package engine

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// CleanEnv returns base without the variables that belong to the daemon's
// own relationship with systemd (NOTIFY_SOCKET, WATCHDOG_*, LISTEN_*, and
// JOURNAL_STREAM, since the child's stderr is our pipe and not the journal)
// and without the API token (POOL_MANAGERD_TOKEN), plus extra; extra wins over base, later base entries over earlier ones, and
// entries without "=" are dropped. The result is sorted by name.
func CleanEnv(base []string, extra map[string]string) []string {
	m := make(map[string]string, len(base)+len(extra))
	for _, kv := range base {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || daemonOnly(k) {
			continue
		}
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// daemonOnly reports whether an inherited variable must not reach an engine:
// a child that sees NOTIFY_SOCKET or WATCHDOG_USEC could talk to systemd as
// us, and the API's admin token must never reach engines, which may run model
// code (as another user, too). POOL_MANAGERD_ADDR is harmless and kept.
func daemonOnly(name string) bool {
	return name == "NOTIFY_SOCKET" || name == "JOURNAL_STREAM" || name == "POOL_MANAGERD_TOKEN" ||
		strings.HasPrefix(name, "WATCHDOG_") || strings.HasPrefix(name, "LISTEN_")
}

// FreePort returns a TCP port that was free on host a moment ago ("" means
// 127.0.0.1) and that Launch has not handed out to an engine of this
// process that is still starting or running (see pickPort). Another process
// may take it before the engine binds it; the pool treats that like any
// other failed start.
func FreePort(host string) (int, error) {
	if host == "" {
		host = "127.0.0.1"
	}
	return freePort(host, listenPort(host))
}

// LookupCredential resolves username to the uid, gid and supplementary
// groups an engine should run with. It returns nil, nil when username is the
// daemon's own user (nothing to switch), and an error when switching is
// needed but the daemon is not root.
//
// Its errors do not name the user: every caller already says
// `user "NAME": ` in front of them (e.g. `user "llm": unknown user`).
func LookupCredential(username string) (*syscall.Credential, error) {
	u, err := user.Lookup(username)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return nil, errors.New("unknown user")
		}
		return nil, fmt.Errorf("look up: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("uid %q: %w", u.Uid, err)
	}
	if int(uid) == os.Geteuid() {
		return nil, nil
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("running engines as another user needs root; the daemon runs as uid %d", os.Geteuid())
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("gid %q: %w", u.Gid, err)
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("groups: %w", err)
	}
	groups := make([]uint32, 0, len(ids))
	for _, id := range ids {
		g, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("group id %q: %w", id, err)
		}
		groups = append(groups, uint32(g))
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}, nil
}
