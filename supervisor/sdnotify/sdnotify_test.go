package sdnotify

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// listen is testutil.ListenNotify: a real unixgram socket standing in for
// systemd, NOTIFY_SOCKET pointing at it.
func listen(t *testing.T, watchdogUsec string) *net.UnixConn {
	t.Helper()
	return testutil.ListenNotify(t, watchdogUsec)
}

// recv returns the next datagram, or "" when none arrives within wait.
func recv(t *testing.T, conn *net.UnixConn, wait time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(wait))
	n, err := conn.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func expect(t *testing.T, conn *net.UnixConn, want string) {
	t.Helper()
	if got := recv(t, conn, 5*time.Second); got != want {
		t.Fatalf("got datagram %q, want %q", got, want)
	}
}

// manualTicker lets the test decide when the watchdog loop wakes up.
func manualTicker() (chan time.Time, Option) {
	ch := make(chan time.Time)
	return ch, WithTicker(func(time.Duration) (<-chan time.Time, func()) { return ch, func() {} })
}

func TestLifecycleAndWedgedWatchdog(t *testing.T) {
	conn := listen(t, "100000") // 100 ms: pings every 50 ms, 50 ms ping timeout
	tick, opt := manualTicker()
	var logs testutil.SyncBuffer
	n := New(slog.New(slog.NewTextHandler(&logs, nil)), opt)
	if !n.Enabled() || n.WatchdogInterval() != 100*time.Millisecond {
		t.Fatalf("Enabled=%v WatchdogInterval=%v", n.Enabled(), n.WatchdogInterval())
	}

	n.Ready()
	n.Status("a")
	n.Status("a") // deduplicated
	n.Status("b")
	expect(t, conn, "READY=1")
	expect(t, conn, "STATUS=a")
	expect(t, conn, "STATUS=b")

	var wedged atomic.Bool
	var sawDeadline atomic.Bool
	ping := func(ctx context.Context) error {
		_, ok := ctx.Deadline()
		sawDeadline.Store(ok)
		if wedged.Load() {
			<-ctx.Done() // a wedged registry: no answer until the timeout
			return ctx.Err()
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.RunWatchdog(ctx, ping); close(done) }()

	for range 3 {
		tick <- time.Now()
		expect(t, conn, "WATCHDOG=1")
	}
	if !sawDeadline.Load() {
		t.Error("ping context has no deadline")
	}

	wedged.Store(true)
	for range 3 {
		tick <- time.Now() // each send waits until the previous ping timed out
	}
	if got := recv(t, conn, 300*time.Millisecond); got != "" {
		t.Fatalf("got %q while the ping was failing, want nothing", got)
	}

	if !strings.Contains(logs.String(), "watchdog ping failed") {
		t.Errorf("no warning logged for failed pings; logs:\n%s", logs.String())
	}

	wedged.Store(false) // the actor system answers again: pings resume
	tick <- time.Now()
	expect(t, conn, "WATCHDOG=1")

	cancel()
	<-done
	n.Stopping()
	expect(t, conn, "STOPPING=1")
}

func TestWatchdogRealTicker(t *testing.T) {
	conn := listen(t, "100000")
	n := New(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.RunWatchdog(ctx, func(context.Context) error { return nil }); close(done) }()
	expect(t, conn, "WATCHDOG=1")
	expect(t, conn, "WATCHDOG=1")
	cancel()
	<-done
}

func TestWatchdogPingIgnoringContext(t *testing.T) {
	conn := listen(t, "100000")
	tick, opt := manualTicker()
	n := New(nil, opt)
	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		n.RunWatchdog(ctx, func(context.Context) error { <-release; return nil })
		close(done)
	}()
	tick <- time.Now()
	tick <- time.Now() // accepted: the stuck ping did not take the loop with it
	if got := recv(t, conn, 200*time.Millisecond); got != "" {
		t.Fatalf("got %q from a stuck ping, want nothing", got)
	}
	cancel()
	<-done
}

func TestWatchdogOff(t *testing.T) {
	for name, env := range map[string][2]string{
		"no WATCHDOG_USEC":   {"", ""},
		"other WATCHDOG_PID": {"100000", strconv.Itoa(os.Getpid() + 1)},
		"bad WATCHDOG_USEC":  {"soon", ""},
		"WATCHDOG_PID is us": {"100000", strconv.Itoa(os.Getpid())},
	} {
		t.Run(name, func(t *testing.T) {
			listen(t, env[0])
			t.Setenv("WATCHDOG_PID", env[1])
			n := New(nil)
			wantOn := name == "WATCHDOG_PID is us"
			if on := n.WatchdogInterval() > 0; on != wantOn {
				t.Fatalf("watchdog on = %v, want %v", on, wantOn)
			}
			if !wantOn {
				n.RunWatchdog(context.Background(), nil) // must return at once
			}
		})
	}
}

func TestStatusNewlinesCannotInject(t *testing.T) {
	conn := listen(t, "")
	n := New(nil)
	n.Status("llama: exit\nREADY=1")
	expect(t, conn, "STATUS=llama: exit READY=1")
}

func TestReloading(t *testing.T) {
	conn := listen(t, "")
	n := New(nil)
	before := testutil.MonotonicUsec(t)
	n.Reloading()
	after := testutil.MonotonicUsec(t)
	testutil.ParseReloading(t, recv(t, conn, 5*time.Second), before, after)
	n.Ready()
	expect(t, conn, "READY=1")
}

// A nil *Notifier is a silent one, so callers need not check.
func TestNilNotifierIsNoop(t *testing.T) {
	var n *Notifier
	n.Ready()
	n.Reloading()
	n.Status("x")
	n.Stopping()
	n.RunWatchdog(context.Background(), func(context.Context) error { t.Error("ping called"); return nil })
	if n.Enabled() || n.WatchdogInterval() != 0 {
		t.Fatal("a nil Notifier claims to be enabled")
	}
}

func TestAbstractSocket(t *testing.T) {
	name := "@pool-managerd-test-" + strconv.Itoa(os.Getpid())
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", name)
	New(nil).Ready()
	expect(t, conn, "READY=1")
}

func TestNoSocketIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "100000")
	n := New(nil)
	if n.Enabled() || n.WatchdogInterval() != 0 {
		t.Fatalf("Enabled=%v WatchdogInterval=%v, want off", n.Enabled(), n.WatchdogInterval())
	}
	n.Ready()
	n.Status("x")
	n.Reloading()
	n.Ready()
	n.Stopping()
	called := false
	n.RunWatchdog(context.Background(), func(context.Context) error { called = true; return nil })
	if called {
		t.Fatal("ping called without a notify socket")
	}
}

func TestSocketGoneIsLoggedNotFatal(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "missing.sock"))
	n := New(nil)
	n.Status("a") // fails: not remembered, so a retry of "a" is not deduplicated
	if n.sentStatus {
		t.Fatal("a failed STATUS= was remembered as sent")
	}
	n.Ready()
}

// A stale NOTIFY_SOCKET fails every send: one warning, then DEBUG only, and
// one record when sends work again.
func TestSendFailureLoggedOnceUntilRecovery(t *testing.T) {
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "notify.sock")
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "")
	var logs testutil.SyncBuffer
	n := New(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	count := func(level, msg string) int {
		return strings.Count(logs.String(), "level="+level+" msg="+msg)
	}
	for i := range 5 {
		n.Status("s" + strconv.Itoa(i))
	}
	n.Ready()
	if w, d := count("WARN", `"sd_notify failed"`), count("DEBUG", `"sd_notify failed"`); w != 1 || d != 5 {
		t.Fatalf("6 failed sends logged %d WARN and %d DEBUG, want 1 and 5:\n%s", w, d, logs.String())
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	n.Status("back")
	expect(t, conn, "STATUS=back")
	n.Ready()
	expect(t, conn, "READY=1")
	if c := count("INFO", `"sd_notify recovered"`); c != 1 {
		t.Fatalf("recovery logged %d times, want 1:\n%s", c, logs.String())
	}
	conn.Close()
	os.Remove(path)
	n.Status("gone again") // a new outage warns again
	if w := count("WARN", `"sd_notify failed"`); w != 2 {
		t.Fatalf("a second outage logged %d WARN in all, want 2:\n%s", w, logs.String())
	}
}
