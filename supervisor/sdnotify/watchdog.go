package sdnotify

import (
	"context"
	"time"
)

// RunWatchdog pings systemd's watchdog until ctx ends. Every WATCHDOG_USEC/2
// it calls ping with a timeout of that same half interval and sends
// WATCHDOG=1 only when ping returns nil: a wedged actor system stops the
// pings, and systemd restarts the daemon after WatchdogSec. A ping that
// succeeds at the very edge of its timeout still keeps the gap between two
// WATCHDOG=1 below WATCHDOG_USEC.
//
// It returns at once when the watchdog is off (no socket, no WATCHDOG_USEC,
// or WATCHDOG_PID names another process). Run it in its own goroutine.
func (n *Notifier) RunWatchdog(ctx context.Context, ping func(context.Context) error) {
	if n == nil || n.addr == nil || n.watchdog <= 0 {
		return
	}
	interval := n.watchdog / 2
	tick, stop := n.newTicker(interval)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		if err := pingOnce(ctx, ping, interval); err != nil {
			if ctx.Err() != nil {
				return // shutting down, not wedged
			}
			n.logger.Warn("watchdog ping failed, not notifying systemd", "err", err, "timeout", interval)
			continue
		}
		if ctx.Err() != nil {
			return // stopped while pinging: no WATCHDOG=1 after the caller moved on
		}
		n.send("WATCHDOG=1")
	}
}

// pingOnce bounds ping by timeout even when ping ignores its context: the
// watchdog loop must stay responsive to ctx, and a ping stuck past its
// timeout counts as a failure (its goroutine is left to finish on its own).
func pingOnce(ctx context.Context, ping func(context.Context) error, timeout time.Duration) error {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ping(pctx) }()
	select {
	case err := <-done:
		return err
	case <-pctx.Done():
		return pctx.Err()
	}
}
