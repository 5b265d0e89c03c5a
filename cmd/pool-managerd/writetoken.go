// The generated write token: a daemon running as root that listens on TCP
// without a configured token would let any local user drain, reload and
// start pools (and so run engines as root). Instead it generates a token at
// start, writes it where only root can read it, and requires it for every
// mutating request (supervisor.Options.WriteToken); reads stay open.

package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/ctl"
	"github.com/pool-managerd/pool-managerd/internal/owndir"
)

// writeTokenName is the file's name inside writeTokenDir.
const writeTokenName = "api.token"

// needsWriteToken reports whether the daemon must generate a write token:
// it runs as root (euid 0), listens on TCP, and has no token. A unix socket
// is authorized by its mode and group (0660) instead.
func needsWriteToken(cfg *config.Config, token string) bool {
	return token == "" && os.Geteuid() == 0 && !strings.HasPrefix(cfg.Listen, "unix:")
}

// writeTokenDir is where the token goes: $RUNTIME_DIRECTORY (its first
// entry; systemd sets it for RuntimeDirectory=), else the directory of
// ctl.DefaultTokenFile, where poolctl looks.
func writeTokenDir() string {
	if dirs := os.Getenv("RUNTIME_DIRECTORY"); dirs != "" {
		if d, _, _ := strings.Cut(dirs, ":"); filepath.IsAbs(d) {
			return d
		}
	}
	return filepath.Dir(ctl.DefaultTokenFile)
}

// writeToken is a generated token and the file it was written to. The
// daemon holds an exclusive flock on the file's directory while it runs:
// one daemon per directory, since a second one would replace the file and
// poolctl would then send the first daemon the wrong token.
type writeToken struct {
	Token, Path string
	dir         *os.File // the flocked directory
}

// generateWriteToken makes a random 256-bit token and writes it, mode 0600,
// to dir/api.token (atomically: a reader sees the old file or the new one).
// dir is created 0755 when missing; one that is not the daemon's own, or
// that others may write to, is refused, since they could swap the file. A
// directory another running daemon holds is refused too.
func generateWriteToken(dir string) (*writeToken, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("generate the API token: %w", err)
	}
	token := hex.EncodeToString(b[:])
	path := filepath.Join(dir, writeTokenName)
	var held *os.File
	fail := func(err error) (*writeToken, error) {
		if held != nil {
			held.Close() // and so the lock
		}
		return nil, fmt.Errorf("running as root without an API token, the daemon writes one to %s for mutating requests, but: %w "+
			"(set POOL_MANAGERD_TOKEN or auth.token_file, or listen on a unix socket)", path, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	if err := owndir.Check("the token's directory", dir); err != nil {
		return fail(err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fail(err)
	}
	held = d
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			err = errors.New("another pool-managerd running on this host writes its token there; give this one its own RUNTIME_DIRECTORY")
		}
		return fail(err)
	}
	f, err := os.CreateTemp(dir, "."+writeTokenName+"-*")
	if err != nil {
		return fail(err)
	}
	defer os.Remove(f.Name()) // after the rename there is nothing left to remove
	if _, err := f.WriteString(token + "\n"); err != nil {
		f.Close()
		return fail(err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fail(err)
	}
	return &writeToken{Token: token, Path: path, dir: d}, nil
}

// remove removes the token file at exit (unless it no longer holds this
// token) and lets go of the directory.
func (w *writeToken) remove() {
	if b, err := os.ReadFile(w.Path); err == nil && strings.TrimSpace(string(b)) == w.Token {
		_ = os.Remove(w.Path)
	}
	w.dir.Close()
}
