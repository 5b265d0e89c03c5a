package testutil

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// ShortTempDir is a temporary directory with a short path (under $TMPDIR,
// named prefix…), removed when the test ends. A unix socket's path must fit
// in sun_path's 108 bytes, which t.TempDir's long names can exceed.
func ShortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// ListenNotify opens a real unixgram socket standing in for systemd's
// notify socket and points NOTIFY_SOCKET at it for this test (so the test
// cannot be parallel), with WATCHDOG_USEC set to watchdogUsec ("" = no
// watchdog) and WATCHDOG_PID cleared: tests run under systemd-run must not
// pick up the real ones.
func ListenNotify(t *testing.T, watchdogUsec string) *net.UnixConn {
	t.Helper()
	path := filepath.Join(ShortTempDir(t, "pmdn"), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", watchdogUsec)
	t.Setenv("WATCHDOG_PID", "")
	return conn
}
