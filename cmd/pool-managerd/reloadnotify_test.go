package main

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
	"github.com/pool-managerd/pool-managerd/supervisor/sdnotify"
)

// notifySocket is a real unixgram socket standing in for systemd, named by
// NOTIFY_SOCKET for this test and the daemons it starts (so the test cannot
// be parallel). The watchdog is off: its pings would only be noise.
type notifySocket struct {
	t    *testing.T
	conn *net.UnixConn
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	return &notifySocket{t: t, conn: testutil.ListenNotify(t, "")}
}

// next returns the next datagram that is not a STATUS= line, or "" when
// none comes within wait.
func (s *notifySocket) next(wait time.Duration) string {
	s.t.Helper()
	buf := make([]byte, 4096)
	deadline := time.Now().Add(wait)
	for {
		_ = s.conn.SetReadDeadline(deadline)
		n, err := s.conn.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return ""
		}
		if err != nil {
			s.t.Fatal(err)
		}
		if got := string(buf[:n]); !strings.HasPrefix(got, "STATUS=") {
			return got
		}
	}
}

func (s *notifySocket) expect(want string) {
	s.t.Helper()
	if got := s.next(waitLimit); got != want {
		s.t.Fatalf("got datagram %q, want %q", got, want)
	}
}

// expectReloading waits for RELOADING=1 with a MONOTONIC_USEC taken after lo
// (the test's clock before it sent the SIGHUP) and before the datagram came.
func (s *notifySocket) expectReloading(lo uint64) {
	s.t.Helper()
	got := s.next(waitLimit)
	testutil.ParseReloading(s.t, got, lo, testutil.MonotonicUsec(s.t))
}

// The signal loop brackets every reload with RELOADING=1 ... READY=1, and
// READY=1 waits for the end: until apply returns, after an invalid config,
// after a read that timed out, and after the last of several merged SIGHUPs.
func TestSignalLoopNotifiesReload(t *testing.T) {
	sock := listenNotify(t)
	notify := sdnotify.New(nil)
	sigs := make(chan os.Signal, 8)
	var (
		loads    = make(chan func() (*config.Config, error), 1) // what the next read does
		applying = make(chan struct{}, 1)
		release  = make(chan struct{})
	)
	load := func() (*config.Config, error) { return (<-loads)() }
	apply := func(*config.Config) {
		applying <- struct{}{}
		<-release
	}
	logs := &testutil.SyncBuffer{}
	out := make(chan os.Signal, 1)
	go func() {
		out <- awaitStop(sigs, load, apply, notify, slog.New(slog.NewJSONHandler(logs, nil)), time.Second)
	}()
	good := func() (*config.Config, error) { return &config.Config{}, nil }

	// A good config: READY=1 only once apply has returned.
	loads <- good
	before := testutil.MonotonicUsec(t)
	sigs <- syscall.SIGHUP
	sock.expectReloading(before)
	recv(t, applying, "apply")
	if got := sock.next(300 * time.Millisecond); got != "" {
		t.Fatalf("got %q while the config was being applied, want nothing before apply returns", got)
	}
	release <- struct{}{}
	sock.expect("READY=1")

	// An invalid config: the running one is kept, and the reload is over.
	loads <- func() (*config.Config, error) { return nil, errors.New("pools[0]: bogus key") }
	before = testutil.MonotonicUsec(t)
	sigs <- syscall.SIGHUP
	sock.expectReloading(before)
	sock.expect("READY=1")

	// A read that does not finish within the timeout (1 s) is abandoned:
	// the reload is over too.
	stuck := make(chan struct{})
	defer close(stuck)
	loads <- func() (*config.Config, error) { <-stuck; return nil, errors.New("unreachable") }
	before = testutil.MonotonicUsec(t)
	sigs <- syscall.SIGHUP
	sock.expectReloading(before)
	sock.expect("READY=1")
	if !strings.Contains(logs.String(), "did not finish within") {
		t.Fatalf("READY=1 after a read that timed out, but no config.reload_failed: %s", logs.String())
	}

	// SIGHUPs during a read: one bracket, READY=1 after the merged read.
	gate := make(chan struct{})
	entered := make(chan struct{}, 2)
	blocking := func() (*config.Config, error) { entered <- struct{}{}; <-gate; return nil, errors.New("bad") }
	loads <- blocking
	before = testutil.MonotonicUsec(t)
	sigs <- syscall.SIGHUP
	sock.expectReloading(before)
	recv(t, entered, "the first read")
	sigs <- syscall.SIGHUP
	sigs <- syscall.SIGHUP
	deadline := time.Now().Add(waitLimit)
	for strings.Count(logs.String(), "config.reload_queued") < 2 && time.Now().Before(deadline) {
		time.Sleep(pollEvery)
	}
	loads <- blocking
	gate <- struct{}{} // the first read ends; the merged one starts
	recv(t, entered, "the merged read")
	if got := sock.next(300 * time.Millisecond); got != "" {
		t.Fatalf("got %q between merged reads, want nothing until the last one ends", got)
	}
	gate <- struct{}{}
	sock.expect("READY=1")

	sigs <- syscall.SIGTERM
	select {
	case <-out:
	case <-time.After(waitLimit):
		t.Fatal("SIGTERM not honoured")
	}
	if got := sock.next(300 * time.Millisecond); got != "" {
		t.Fatalf("got %q after the loop returned", got)
	}
}

// The daemon, under a real notify socket, answers a SIGHUP (what
// `systemctl reload` sends, by ExecReload= or by Type=notify-reload) with
// RELOADING=1 and MONOTONIC_USEC, then READY=1: for a good config once it
// is applied, and for a bad one once it has been refused.
func TestSIGHUPNotifiesSystemd(t *testing.T) {
	sock := listenNotify(t)
	cfg := tempConfig(t, configYAML(simHead, simPool("keep", nil)))
	d := startDaemon(t, "-config", cfg)
	sock.expect("READY=1") // start-up
	d.waitPools("keep ready", allReady("keep"))

	writeFile(t, cfg, configYAML(simHead, simPool("keep", nil), simPool("added", nil)))
	before := testutil.MonotonicUsec(t)
	d.signal(syscall.SIGHUP)
	sock.expectReloading(before)
	sock.expect("READY=1")
	d.waitLog("config.reloaded")
	d.waitPools("keep and added ready", allReady("added", "keep"))

	writeFile(t, cfg, "pools: [{id: keep, bogus: 1}]\n")
	before = testutil.MonotonicUsec(t)
	d.signal(syscall.SIGHUP)
	sock.expectReloading(before)
	sock.expect("READY=1")
	if r := d.waitLog("config.reload_failed"); !strings.Contains(r.str("err"), "bogus") {
		t.Errorf("config.reload_failed does not name the bad key: %s", r.Raw)
	}
	if p, _, err := d.pool("added"); err != nil || p.State != "ready" {
		t.Errorf("after the bad config, added = %+v (%v), want still ready", p, err)
	}
	d.stop()
	sock.expect("STOPPING=1")
}
