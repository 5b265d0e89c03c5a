// Package sdnotify speaks systemd's sd_notify protocol for a Type=notify
// service: READY=1 once the API listens, STATUS= with a pool summary,
// STOPPING=1 on shutdown, and WATCHDOG=1 only while the actor system answers
// (docs/contract.md §5). Without NOTIFY_SOCKET every method is a no-op, so the daemon
// runs the same way outside systemd.
//
// The environment is read once, in New, and left alone: the engine package
// strips NOTIFY_SOCKET and WATCHDOG_* from the children's environment itself.
package sdnotify

import (
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends state datagrams to systemd. Its methods are safe for
// concurrent use, on a Notifier built without NOTIFY_SOCKET, and on a nil
// *Notifier (all no-ops).
type Notifier struct {
	logger    *slog.Logger
	addr      *net.UnixAddr // nil: not under systemd, every method is a no-op
	watchdog  time.Duration // WATCHDOG_USEC; 0: watchdog off
	newTicker func(time.Duration) (<-chan time.Time, func())

	mu         sync.Mutex // orders datagrams and guards the fields below
	lastStatus string
	sentStatus bool
	failing    bool // the last send failed: further failures log at DEBUG only
}

// Option adjusts a Notifier built by New.
type Option func(*Notifier)

// WithTicker replaces the watchdog's interval ticker (a time.Ticker by
// default), so tests drive the watchdog loop without waiting on real time.
// The returned func stops the ticker.
func WithTicker(f func(time.Duration) (<-chan time.Time, func())) Option {
	return func(n *Notifier) { n.newTicker = f }
}

// New reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the
// environment. A NOTIFY_SOCKET starting with '@' is an abstract socket; Go's
// net package maps the '@' to the leading NUL byte the kernel expects.
func New(logger *slog.Logger, opts ...Option) *Notifier {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{logger: logger, newTicker: realTicker}
	if sock := os.Getenv("NOTIFY_SOCKET"); sock != "" {
		n.addr = &net.UnixAddr{Name: sock, Net: "unixgram"}
		// A WATCHDOG_PID naming another process (we were exec'd by a
		// wrapper that owns the watchdog) reads as "off".
		wd, err := daemon.SdWatchdogEnabled(false)
		if err != nil {
			logger.Warn("systemd watchdog settings ignored", "err", err)
		}
		n.watchdog = wd
	}
	for _, o := range opts {
		o(n)
	}
	return n
}

func realTicker(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// Enabled reports whether the daemon runs under a notify socket.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// WatchdogInterval is WATCHDOG_USEC, or 0 when systemd expects no pings.
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// Ready tells systemd that start-up is done (the API listens). It also ends
// a reload announced with Reloading.
func (n *Notifier) Ready() { n.send(daemon.SdNotifyReady) }

// Stopping tells systemd that shutdown (pool drain) has begun.
func (n *Notifier) Stopping() { n.send(daemon.SdNotifyStopping) }

// Reloading tells systemd that a config reload (SIGHUP) has begun; call
// Ready when it is done, applied or refused. It is one datagram,
// "RELOADING=1\nMONOTONIC_USEC=<CLOCK_MONOTONIC now, in µs>": with
// Type=notify-reload (systemd ≥ 253) systemd sends the SIGHUP itself and
// waits for RELOADING=1 then READY=1; MONOTONIC_USEC, taken as the datagram
// is built, lets it tell this reload's answer from an earlier one's
// (sd_notify(3)). Older systemd ignores the field.
func (n *Notifier) Reloading() {
	n.send(daemon.SdNotifyReloading + "\n" + strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"))
}

// Status sets the one-line status shown by `systemctl status`. It is sent
// only when it differs from the last line sent, so callers may call it on
// every state change without flooding PID 1. Newlines become spaces: a
// newline would start a new assignment, and a pool's last_error must never
// be able to smuggle in READY=1 or WATCHDOG=1.
func (n *Notifier) Status(line string) {
	if n == nil || n.addr == nil {
		return
	}
	line = strings.NewReplacer("\r", " ", "\n", " ").Replace(line)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sentStatus && line == n.lastStatus {
		return
	}
	if n.sendLocked("STATUS=" + line) {
		n.lastStatus, n.sentStatus = line, true
	}
}

func (n *Notifier) send(state string) {
	if n == nil || n.addr == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sendLocked(state)
}

// sendLocked writes one datagram; a fresh connection per message is what
// sd_notify(3) does too, and keeps nothing open across systemd restarts.
// A stale NOTIFY_SOCKET would fail every send: the first failure is a
// warning, the next ones are DEBUG until a send succeeds again, which is
// logged once.
func (n *Notifier) sendLocked(state string) bool {
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err == nil {
		_, err = conn.Write([]byte(state))
		conn.Close()
	}
	if err != nil {
		if n.failing {
			n.logger.Debug("sd_notify failed", "state", state, "err", err)
		} else {
			n.logger.Warn("sd_notify failed", "state", state, "err", err)
		}
		n.failing = true
		return false
	}
	if n.failing {
		n.failing = false
		n.logger.Info("sd_notify recovered", "state", state)
	}
	return true
}
