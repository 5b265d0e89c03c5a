package supervisor

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/gpu"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// sockDir is a short temporary directory for unix sockets.
func sockDir(t *testing.T) string { return testutil.ShortTempDir(t, "pmd") }

// staleSocket leaves a socket file at path that nobody listens on, as a
// daemon killed with SIGKILL leaves it.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no stale socket at %s: %v", path, err)
	}
}

func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
}

// The API also serves on a unix socket ("listen: unix:/path"), replacing a
// stale socket left by a crashed daemon.
func TestListenUnixSocket(t *testing.T) {
	path := filepath.Join(sockDir(t), "api.sock")
	staleSocket(t, path)
	ln, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Config: &config.Config{Listen: "unix:" + path, ShutdownDeadline: time.Second}, SelfExe: os.Args[0], Guard: gpu.NoGuard{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ln); err != nil {
		t.Fatal(err)
	}
	resp, err := unixClient(path).Get("http://unix/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"status":"ok"`) {
		t.Fatalf("healthz over unix socket: %d %s", resp.StatusCode, b)
	}
	d.Shutdown()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("the daemon's own socket is still there after shutdown: %v", err)
	}
	if _, err := Listen("256.0.0.1:1"); err == nil {
		t.Fatal("a bad address was accepted")
	}
}

// Whatever is at the path and is not a socket is never removed.
func TestListenUnixRefusesNonSocket(t *testing.T) {
	dir := sockDir(t)
	file := filepath.Join(dir, "api.sock")
	if err := os.WriteFile(file, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen("unix:" + file); err == nil {
		ln.Close()
		t.Fatal("Listen took the path of a regular file")
	} else if !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("error = %v, want one naming %s and saying it is not a socket", err, file)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "precious\n" {
		t.Fatalf("the regular file was touched: %q, %v", b, err)
	}
	sub := filepath.Join(dir, "adir")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("unix:" + sub); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen on a directory: %v", err)
	}
	if _, err := os.Stat(sub); err != nil {
		t.Fatalf("the directory was removed: %v", err)
	}
}

// A socket somebody answers on is live: Listen refuses it, and the first
// listener keeps serving.
func TestListenUnixRefusesLiveSocket(t *testing.T) {
	path := filepath.Join(sockDir(t), "api.sock")
	first, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	go func() {
		for {
			c, err := first.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if ln, err := Listen("unix:" + path); err == nil {
		ln.Close()
		t.Fatal("a second Listen took over a live socket")
	} else if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "answers") {
		t.Fatalf("error = %v, want one naming %s and saying another process answers", err, path)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the first socket no longer answers: %v", err)
	}
	c.Close()
}

// A listener unlinks on close only the socket it created: once its path
// has been taken by another listener's socket, closing it leaves that one.
func TestListenUnixUnlinksOnlyItsOwnSocket(t *testing.T) {
	path := filepath.Join(sockDir(t), "api.sock")
	first, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil { // an operator (or a bug) removed it
		t.Fatal(err)
	}
	second, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	var before syscall.Stat_t
	if err := syscall.Stat(path, &before); err != nil {
		t.Fatal(err)
	}
	first.Close()
	var after syscall.Stat_t
	if err := syscall.Stat(path, &after); err != nil {
		t.Fatalf("closing the first listener removed the second one's socket: %v", err)
	}
	if before.Ino != after.Ino {
		t.Fatalf("socket inode changed %d -> %d", before.Ino, after.Ino)
	}
	second.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("closing the second listener left its socket: %v", err)
	}
}
