package actors

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/internal/clock"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// gatedDialer connects at once but, once armed, holds the connection back
// from the HTTP transport until the gate opens: the engine has accepted it
// and sees a connection that never sends a request.
type gatedDialer struct {
	armed     atomic.Bool
	connected chan struct{}
	gate      chan struct{}
}

func (g *gatedDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil || !g.armed.CompareAndSwap(true, false) {
		return c, err
	}
	close(g.connected)
	<-g.gate
	return c, nil
}

// A probe cancelled while its connection is being made leaves that
// connection to net/http's idle pool, unused: the engine has accepted it and
// waits for its first request. An engine that shuts down gracefully (here
// the simulator's http.Server.Shutdown, bounded at 1 s) waits for such a
// connection. A pool that stops its engine must not leave its own
// connections open for the engine to wait on: here the liveness probe's
// connection completes only after the engine got SIGTERM, and the engine
// must still stop without giving up on its graceful shutdown.
func TestPoolStopLeavesNoProbeConnectionForTheEngineToWaitOn(t *testing.T) {
	const iv = time.Hour
	clk := &longTimers{Fake: clock.NewFollowingFake(time.Unix(1_800_000_000, 0).Add(17 * time.Minute))}
	h := newHarness(t, clk)
	cfg := simPool("p1")
	cfg.Liveness = cfgLiveness(iv, time.Minute, 3)
	cfg.Slots = 4 // no engine facts query: the liveness probe makes the pool's first probe connection
	g := &gatedDialer{connected: make(chan struct{}), gate: make(chan struct{})}
	pid := h.sys.Root.Spawn(NewPoolProps(cfg, PoolDeps{Registry: h.reg, Clock: clk, Logger: h.logger(), ProbeDial: g.dial}))
	h.pools[cfg.ID] = pid
	h.waitState("p1", StateReady)

	// The first liveness probe's connection is accepted and held back.
	testutil.Eventually(t, waitLimit, "liveness waits for its tick", func() bool { return clk.armed.Load() == 1 })
	g.armed.Store(true)
	clk.Advance(untilTick(clk.Now(), iv))
	select {
	case <-g.connected:
	case <-time.After(waitLimit):
		t.Fatal("the liveness probe never connected")
	}

	ask(h, pid, &Drain{Deadline: time.Minute})
	engineSaid := func(s string) bool {
		for _, l := range ask(h, pid, &GetLogs{Tail: 20}).Lines {
			if strings.Contains(l.Text, s) {
				return true
			}
		}
		return false
	}
	testutil.Eventually(t, waitLimit, "the engine got SIGTERM", func() bool { return engineSaid("sim-engine: shutting down") })
	close(g.gate) // the connection reaches the transport only now
	h.waitState("p1", StateStopped)
	if engineSaid("graceful shutdown gave up") {
		t.Fatalf("the engine waited for a connection of the pool's; its last lines: %+v", ask(h, pid, &GetLogs{Tail: 20}).Lines)
	}
}
