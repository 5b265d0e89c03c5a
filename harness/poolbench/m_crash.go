// Measurement "crash": SIGKILL a ready pool's engine and time until the API
// shows a new engine pid, next to a bare Wait+exec respawn of the same binary.

package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
)

// respawnPoll is how often the API is polled for the new pid once the pool
// is preloading again: the resolution of the measurement.
const respawnPoll = 500 * time.Microsecond

func measureCrash(ctx context.Context, p params) ([]row, error) {
	const id = "crash"
	pool := simPool(id)
	// Restart at once, and never open the breaker: every run is one failure.
	pool.Restart.Initial, pool.Restart.Max, pool.Restart.Jitter = 0, 0, 0
	pool.Restart.MaxFailures = 1 << 30
	b, err := startDaemon(ctx, p.self, pool)
	if err != nil {
		return nil, err
	}
	defer b.close()
	// The daemon's runs and the bare ones alternate, so a change in the
	// (shared) machine's load falls on both alike. A bare run starts once
	// the pool is ready again: the idle daemon costs it nothing (its only
	// timer is the 5 s liveness probe).
	var respawn, backoff, exited, spawned dist
	var start, first, reaped, bare dist
	for i := 0; i < p.crashRuns; i++ {
		r, err := crashRun(ctx, b, id)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i, err)
		}
		respawn, backoff, spawned = append(respawn, r.visible), append(backoff, r.preload), append(spawned, r.spawned)
		exited = append(exited, r.exited)
		if _, err := b.waitState(ctx, id, actors.StateReady); err != nil { // no probes during the bare run
			return nil, fmt.Errorf("run %d: %w", i, err)
		}
		br, err := bareRespawn(ctx, p.self)
		if err != nil {
			return nil, fmt.Errorf("bare run %d: %w", i, err)
		}
		start, first, reaped, bare = append(start, br.start), append(first, br.firstLine), append(reaped, br.reaped), append(bare, br.respawn)
	}
	b.close()
	const base = "bare SIGKILL→Wait→exec"
	rows := []row{
		newRow("crash", "crash → new pid in API p50", ms(respawn.pct(50)), "ms", ms(bare.pct(50)), base, ratioAtMost(1.3)),
		newRow("crash", "crash → engine.spawned log record p50", ms(spawned.pct(50)), "ms", ms(bare.pct(50)), base, ratioAtMost(1.3)),
		newRow("crash", "crash → new pid in API p99", ms(respawn.pct(99)), "ms", ms(bare.pct(99)), base, nil),
		newRow("crash", "crash → new pid in API max", ms(respawn.max()), "ms", ms(bare.max()), base, nil),
		newRow("crash", "context: crash → engine.exited log record p50", ms(exited.pct(50)), "ms", ms(reaped.pct(50)), "bare SIGKILL→Wait returned", nil),
		newRow("crash", "context: crash → SSE backoff→preload event p50", ms(backoff.pct(50)), "ms", -1, "", nil),
		newRow("crash", "context: bare exec Start() p50", ms(start.pct(50)), "ms", -1, "", nil),
		newRow("crash", "context: bare exec → first stdout line p50", ms(first.pct(50)), "ms", -1, "", nil),
	}
	return rows, nil
}

// crashTimes are one crash's delays after the SIGKILL.
type crashTimes struct {
	visible time.Duration // the API shows a different pid
	preload time.Duration // the event stream said preload again
	exited  time.Duration // the pool actor logged engine.exited: the engine's own cleanup is done
	spawned time.Duration // the pool actor logged engine.spawned
}

// crashRun kills the pool's engine and times its replacement.
func crashRun(ctx context.Context, b *benchDaemon, id string) (crashTimes, error) {
	var none crashTimes
	if _, err := b.waitState(ctx, id, actors.StateReady); err != nil {
		return none, err
	}
	st, err := b.status(ctx, id)
	if err != nil {
		return none, err
	}
	if st.PID == nil {
		return none, fmt.Errorf("pool %s is ready without a pid", id)
	}
	old := *st.PID
	for len(b.spawned) > 0 { // forget earlier spawns
		<-b.spawned
	}
	for len(b.exited) > 0 {
		<-b.exited
	}
	mark := b.events.mark()
	killed := time.Now()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		return none, fmt.Errorf("kill engine %d: %w", old, err)
	}
	// Waiting for the preload event and the spawn first keeps the poll loop
	// (which competes for the same two cores) short.
	ev, err := b.events.wait(ctx, mark, id, actors.StatePreload, stateWait)
	if err != nil {
		return none, b.failure(err)
	}
	t := crashTimes{preload: ev.at.Sub(killed)}
	// The spawn is timed by the daemon's own log record, waited for without
	// polling so it does not compete with the spawn for the CPU.
	select {
	case at := <-b.spawned:
		t.spawned = at.Sub(killed)
	case <-time.After(stateWait):
		return none, b.failure(fmt.Errorf("pool %s: no engine.spawned log record", id))
	}
	select { // logged before the spawn: already there
	case at := <-b.exited:
		t.exited = at.Sub(killed)
	case <-time.After(stateWait):
		return none, b.failure(fmt.Errorf("pool %s: no engine.exited log record", id))
	}
	for deadline := time.Now().Add(stateWait); time.Now().Before(deadline); {
		st, err := b.status(ctx, id)
		if err != nil {
			return none, err
		}
		if st.PID != nil && *st.PID != old {
			t.visible = time.Since(killed)
			return t, nil
		}
		if err := sleep(ctx, respawnPoll); err != nil {
			return none, err
		}
	}
	return none, b.failure(fmt.Errorf("pool %s: no new engine within %s of killing %d", id, stateWait, old))
}

// bareTimes are one bare respawn's durations.
type bareTimes struct {
	start     time.Duration // the first Start
	firstLine time.Duration // the first start to its first stdout line
	reaped    time.Duration // kill → Wait returned (reaped, stdout drained)
	respawn   time.Duration // kill → next Start returned
}

// bareRespawn is what a minimal supervisor does: start a simulator, wait
// until it is ready, SIGKILL it, Wait for it (reaped, stdout drained) and
// exec the next.
func bareRespawn(ctx context.Context, self string) (bareTimes, error) {
	var t bareTimes
	if err := ctx.Err(); err != nil {
		return t, err
	}
	s, err := startBareSim(self, "--load-time", "0")
	if err != nil {
		return t, err
	}
	t.start = s.started.Sub(s.startedAt)
	if _, err := s.waitReady(stateWait); err != nil {
		_, _ = s.signalAndWait(syscall.SIGKILL, stateWait)
		return t, err
	}
	t.firstLine = s.out.firstAt.Sub(s.startedAt)
	killed := time.Now()
	reaped, err := s.signalAndWait(syscall.SIGKILL, stateWait)
	if err != nil {
		return t, err
	}
	t.reaped = reaped.Sub(killed)
	next, err := startBareSim(self, "--load-time", "0")
	if err != nil {
		return t, err
	}
	t.respawn = next.started.Sub(killed)
	_, err = next.signalAndWait(syscall.SIGKILL, stateWait)
	return t, err
}
