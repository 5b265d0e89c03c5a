package owndir

import (
	"errors"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Each way a directory can be untrustworthy is refused with a message that
// names the directory and says why; the daemon's own 0700/0755 dir passes.
func TestCheck(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	for _, ok := range []string{mk("private", 0o700), mk("public-read", 0o755)} {
		if err := Check("dir", ok); err != nil {
			t.Errorf("Check(%s) = %v, want nil", ok, err)
		}
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(mk("target", 0o700), link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		mk("group-writable", 0o770): "lets group or others write it",
		mk("world-writable", 0o757): "lets group or others write it",
		link:                        "not a directory",
		file:                        "not a directory",
	}
	if u, err := user.Lookup("nobody"); err == nil && os.Geteuid() == 0 {
		p := mk("nobodys", 0o700)
		uid, _ := strconv.Atoi(u.Uid)
		if err := os.Chown(p, uid, -1); err != nil {
			t.Fatal(err)
		}
		cases[p] = "owned by uid " + u.Uid
	}
	for dir, want := range cases {
		err := Check("state_dir", dir)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "state_dir "+dir) {
			t.Errorf("Check(%s) = %v, want an error naming it and saying %q", dir, err, want)
		}
	}
	if err := Check("state_dir", filepath.Join(base, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Check(missing) = %v, want one wrapping fs.ErrNotExist", err)
	}
}
