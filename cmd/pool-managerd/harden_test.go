// End-to-end tests of the daemon against a hostile or careless host: the
// unix socket's path, config files that are not files, floods of log
// material, and event-stream clients that never read.

package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// sockDir is a short temporary directory for unix sockets.
func sockDir(t *testing.T) string { return testutil.ShortTempDir(t, "pmd") }

// spawnUnixDaemon starts the binary with args, its API on the unix socket
// sock (POOL_MANAGERD_ADDR), without waiting for it.
func spawnUnixDaemon(t *testing.T, sock string, args ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, base: "http://unix", stdout: &testutil.SyncBuffer{}, stderr: &testutil.SyncBuffer{}, done: make(chan struct{}),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}
	d.cmd = exec.Command(os.Args[0], args...)
	d.cmd.Env = daemonEnv("POOL_MANAGERD_ADDR=unix:" + sock)
	d.cmd.Stdout, d.cmd.Stderr = d.stdout, d.stderr
	d.cmd.WaitDelay = 2 * time.Second
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		if !d.exited() {
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("daemon %v stdout:\n%s\nstderr:\n%s", args, d.stdout.String(), d.stderr.String())
		}
	})
	return d
}

// A regular file at the socket path is never removed: the daemon refuses
// to start (exit 1), naming the path.
func TestUnixSocketPathHoldsRegularFile(t *testing.T) {
	t.Parallel()
	dir := sockDir(t)
	sock := filepath.Join(dir, "api.sock")
	if err := os.WriteFile(sock, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := tempConfig(t, configYAML(simHead+"state_dir: "+dir+"\n", simPool("p", nil)))
	code, stdout, stderr := runMain(t, []string{"POOL_MANAGERD_ADDR=unix:" + sock}, "-config", cfg)
	if code != 1 {
		t.Fatalf("exit code = %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if out := stdout + stderr; !strings.Contains(out, sock) || !strings.Contains(out, "not a socket") {
		t.Fatalf("no message naming %s as not a socket:\n%s", sock, out)
	}
	if b, err := os.ReadFile(sock); err != nil || string(b) != "precious\n" {
		t.Fatalf("the file at the socket path was touched: %q, %v", b, err)
	}
}

// A second daemon on the socket of a running one refuses to start (exit 1)
// before it touches anything: the first keeps its socket and its engine,
// also after the second has exited.
func TestUnixSocketSecondDaemonRefused(t *testing.T) {
	t.Parallel()
	dir := sockDir(t)
	sock := filepath.Join(dir, "api.sock")
	cfg := tempConfig(t, configYAML(simHead+"state_dir: "+dir+"\n", simPool("p", nil)))
	first := spawnUnixDaemon(t, sock, "-config", cfg)
	if err := first.waitAPI(); err != nil {
		t.Fatal(err)
	}
	pid := first.waitPools("p ready", allReady("p"))[0].pid()

	code, stdout, stderr := runMain(t, []string{"POOL_MANAGERD_ADDR=unix:" + sock}, "-config", cfg)
	if code != 1 {
		t.Fatalf("second daemon: exit code = %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if out := stdout + stderr; !strings.Contains(out, sock) || !strings.Contains(out, "another process answers") {
		t.Fatalf("second daemon: no message naming %s as taken:\n%s", sock, out)
	}
	p, _, err := first.pool("p")
	if err != nil || p.pid() != pid || gone(pid) {
		t.Fatalf("after the second daemon, the first's pool = %+v (%v), want engine %d still running", p, err, pid)
	}
	first.stop()
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("the first daemon left its socket: %v", err)
	}
}

// A stale socket (a daemon killed with SIGKILL) is replaced.
func TestUnixSocketStaleReplaced(t *testing.T) {
	t.Parallel()
	dir := sockDir(t)
	sock := filepath.Join(dir, "api.sock")
	cfg := tempConfig(t, configYAML(simHead+"state_dir: "+dir+"\n", simPool("p", nil)))
	first := spawnUnixDaemon(t, sock, "-config", cfg)
	if err := first.waitAPI(); err != nil {
		t.Fatal(err)
	}
	_ = first.cmd.Process.Kill()
	<-first.done
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("no stale socket after SIGKILL: %v", err)
	}
	second := spawnUnixDaemon(t, sock, "-config", cfg)
	if err := second.waitAPI(); err != nil {
		t.Fatal(fmt.Errorf("daemon on a stale socket: %w", err))
	}
	second.stop()
}

// mkfifo makes a named pipe at path.
func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

// -check-config refuses what is not a regular file, at once, instead of
// blocking on a pipe nobody writes or reading /dev/zero forever.
func TestCheckConfigRefusesNonRegularFiles(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "config.yaml")
	mkfifo(t, fifo)
	for _, path := range []string{fifo, "/dev/zero", t.TempDir()} {
		start := time.Now()
		code, _, stderr := runMain(t, nil, "-check-config", path)
		if code == 0 || !strings.Contains(stderr, path) || !strings.Contains(stderr, "not a regular file") {
			t.Errorf("-check-config %s: exit %d, stderr %q; want non-zero and a message naming it as not a regular file", path, code, stderr)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("-check-config %s took %s", path, took)
		}
	}
}

// A config over the size bound is refused by name.
func TestCheckConfigRefusesHugeFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("# "+strings.Repeat("x", 5<<20)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runMain(t, nil, "-check-config", path)
	if code == 0 || !strings.Contains(stderr, "larger than") {
		t.Fatalf("-check-config on 5 MiB: exit %d, stderr %q", code, stderr)
	}
}

// A SIGHUP whose config path has become a named pipe does not deafen the
// daemon: the reload is refused (the running config kept), and a SIGTERM
// that follows is honoured.
func TestSIGTERMHonouredAfterSIGHUPOnFIFO(t *testing.T) {
	t.Parallel()
	cfg := tempConfig(t, configYAML(simHead, simPool("p", nil)))
	d := startDaemon(t, "-config", cfg)
	pid := d.waitPools("p ready", allReady("p"))[0].pid()
	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	mkfifo(t, cfg)
	d.signal(syscall.SIGHUP)
	r := d.waitLog("config.reload_failed")
	if !strings.Contains(r.str("err"), "not a regular file") {
		t.Errorf("config.reload_failed does not say why: %s", r.Raw)
	}
	if p, _, err := d.pool("p"); err != nil || p.pid() != pid {
		t.Errorf("after a refused reload, p = %+v (%v), want engine %d", p, err, pid)
	}
	d.signal(syscall.SIGHUP) // and again: still answered
	d.signal(syscall.SIGTERM)
	if code, _ := d.waitExit(exitLimit); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
	waitGone(t, waitLimit, pid)
}

// Requests with 1 MiB paths, sent without the token, cannot flood the log:
// the request-derived fields of api.request are cut to a fixed length.
func TestHugePathsDoNotFloodTheLog(t *testing.T) {
	t.Parallel()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := tempConfig(t, configYAML(simHead+"auth: {token_file: "+tokenFile+"}\n", simPool("p", nil)))
	d := startDaemon(t, "-config", cfg)
	before := len(d.stdout.String())
	path := "/v1/pools/" + strings.Repeat("a", 1<<20)
	const n = 20
	for range n {
		code, err := d.do("GET", path, "", nil)
		if err != nil || code != 401 {
			t.Fatalf("GET with a 1 MiB path = HTTP %d (%v), want 401", code, err)
		}
	}
	var logged []record
	deadline := time.Now().Add(waitLimit)
	for len(logged) < n && time.Now().Before(deadline) {
		logged = find(d.records(), "api.request", "code", float64(401))
		time.Sleep(pollEvery)
	}
	if len(logged) != n {
		t.Fatalf("%d api.request records with code 401, want %d", len(logged), n)
	}
	if grew := len(d.stdout.String()) - before; grew > 64<<10 {
		t.Fatalf("the log grew %d bytes for %d requests with 1 MiB paths, want < 64 KiB", grew, n)
	}
	if p := logged[0].str("path"); !strings.HasPrefix(p, "/v1/pools/aaaa") || !strings.Contains(p, "truncated") {
		t.Fatalf("logged path = %.300q, want its start and a truncation marker", p)
	}
	d.stop()
}
