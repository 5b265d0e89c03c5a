// Package owndir holds the one rule for a directory the daemon trusts with
// files other processes act on (the pid records of state_dir, the generated
// API token): it is a real directory (not a symlink), owned by the daemon's
// effective uid, and neither its group nor others may write to it, since
// whoever can write there can replace what the daemon reads or hands out.
package owndir

import (
	"fmt"
	"os"
	"syscall"
)

// Check applies the rule to dir; what names it in the error ("state_dir",
// "the API token's directory"). A missing dir is an error that wraps
// fs.ErrNotExist, so a caller for whom absence is fine can tell it apart.
func Check(what, dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%s %s: not a directory (%s)", what, dir, fi.Mode().Type())
	case !ok:
		return fmt.Errorf("%s %s: no owner information", what, dir)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s %s: owned by uid %d, not the daemon's uid %d", what, dir, st.Uid, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s %s: mode %04o lets group or others write it; chmod go-w %s", what, dir, fi.Mode().Perm(), dir)
	}
	return nil
}
