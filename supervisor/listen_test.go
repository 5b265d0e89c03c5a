package supervisor

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/gpu"
)

// The API also serves on a unix socket ("listen: unix:/path"), replacing a
// stale socket file left by a crashed daemon.
func TestListenUnixSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "pmd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "api.sock")
	if err := os.WriteFile(path, nil, 0o600); err != nil { // stale leftover
		t.Fatal(err)
	}
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
	defer d.Shutdown()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	resp, err := c.Get("http://unix/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"status":"ok"`) {
		t.Fatalf("healthz over unix socket: %d %s", resp.StatusCode, b)
	}
	if _, err := Listen("256.0.0.1:1"); err == nil {
		t.Fatal("a bad address was accepted")
	}
}
