package actors

import (
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/internal/clock"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// The test binary doubles as the engine simulator (os/exec's helper-process
// trick): a child started with POOL_MANAGERD_SIM=1 runs sim.Main instead of
// the tests, so every test engine is a real process.
func TestMain(m *testing.M) {
	testutil.RunSimIfChild()
	os.Exit(m.Run())
}

// waitLimit is a safety net for waiting on events, never a sleep.
const waitLimit = 30 * time.Second

type harness struct {
	t      *testing.T
	sys    *actor.ActorSystem
	reg    *actor.PID
	clock  clock.Clock
	events chan Transition
	logs   *testutil.SyncBuffer
	pools  map[string]*actor.PID
	queued map[string][]Transition // transitions read for other pools, not yet waited for
}

// newHarness starts a registry and the pools spawned later on clk (nil:
// clock.Real). A test that spawns engines and jumps time gives it a
// clock.NewFollowingFake: engines start, print and answer in real time,
// which such a clock follows.
func newHarness(t *testing.T, clk clock.Clock) *harness {
	t.Helper()
	clk = clock.OrReal(clk)
	logs := &testutil.SyncBuffer{}
	var w io.Writer = logs
	if testing.Verbose() {
		w = io.MultiWriter(logs, os.Stderr)
	}
	logger := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
	h := &harness{t: t, sys: sys, clock: clk, events: make(chan Transition, subscriberBuffer), logs: logs, pools: map[string]*actor.PID{}, queued: map[string][]Transition{}}
	h.reg = sys.Root.Spawn(NewRegistryProps(clk, logger))
	SendRegistry(sys.Root, h.reg, &Subscribe{Ch: h.events})
	t.Cleanup(func() {
		for _, pid := range h.pools {
			_ = sys.Root.StopFuture(pid).Wait()
		}
		sys.Shutdown()
	})
	return h
}

func (h *harness) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (h *harness) spawn(cfg config.Pool) *actor.PID {
	h.t.Helper()
	pid := h.sys.Root.Spawn(NewPoolProps(cfg, PoolDeps{Registry: h.reg, Clock: h.clock, Logger: h.logger()}))
	h.pools[cfg.ID] = pid
	return pid
}

// simPool is a pool whose engine is this test binary running the simulator.
func simPool(id string, flags ...string) config.Pool {
	cmd := append([]string{os.Args[0], "--host", "${HOST}", "--port", "${PORT}", "--model", "${MODEL_REF}",
		"--parallel", "1000"}, flags...) // /props total_slots: the sim must not bound leases where a test means no limit
	return config.Pool{
		ID: id, Engine: "llamacpp", EngineVersion: "v1", ModelRef: "test/model-a",
		Command: cmd, Env: testutil.SimEnv(), Host: "127.0.0.1",
		StartupTimeout: 20 * time.Second, StallTimeout: 0, StopGrace: 2 * time.Second, DrainDeadline: 10 * time.Second,
		Readiness: config.Probe{Path: "/health", Timeout: time.Second},
		Liveness:  config.Probe{Path: "/health", Interval: time.Hour, Timeout: time.Second, FailureThreshold: 3},
		Restart: config.Restart{Initial: 10 * time.Millisecond, Multiplier: 2, Max: time.Second, Jitter: 0.1,
			ResetAfter: time.Hour, MaxFailures: 5, Window: time.Hour},
	}
}

// waitState waits for the pool's transition into want (an event, not a poll)
// and returns the pool's status right after.
func (h *harness) waitState(id string, want State) PoolStatus {
	h.t.Helper()
	for len(h.queued[id]) > 0 {
		tr := h.queued[id][0]
		h.queued[id] = h.queued[id][1:]
		if tr.To == want {
			return h.get(id)
		}
	}
	deadline := time.After(waitLimit)
	for {
		select {
		case tr, ok := <-h.events:
			if !ok {
				h.t.Fatal("event subscription dropped")
			}
			if tr.PoolID != id {
				h.queued[tr.PoolID] = append(h.queued[tr.PoolID], tr)
				continue
			}
			if tr.To == want {
				return h.get(id)
			}
		case <-deadline:
			h.t.Fatalf("pool %s never reached %s; now %+v\nlogs:\n%s", id, want, h.get(id), h.logs.String())
		}
	}
}

func (h *harness) get(id string) PoolStatus {
	h.t.Helper()
	r, err := Ask(h.sys.Root, h.reg, &GetPool{PoolID: id}, 5*time.Second)
	if err != nil {
		h.t.Fatalf("GetPool: %v", err)
	}
	return r.Status
}

// ask sends q to pid and returns its reply, failing the test on any error.
func ask[R any](h *harness, pid *actor.PID, q Question[R]) R {
	h.t.Helper()
	r, err := Ask(h.sys.Root, pid, q, 10*time.Second)
	if err != nil {
		h.t.Fatalf("request %T: %v", q, err)
	}
	return r
}

func cfgLiveness(interval, timeout time.Duration, threshold int) config.Probe {
	return config.Probe{Path: "/health", Interval: interval, Timeout: timeout, FailureThreshold: threshold}
}
