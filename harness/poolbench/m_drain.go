// Measurement "drain": how far past deadline + stop_grace a forced drain of
// an engine that ignores SIGTERM ends, and how long a clean drain takes next
// to a bare SIGTERM → exit of the same simulator.

package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
)

const (
	drainDeadline  = 300 * time.Millisecond
	stubbornGrace  = 200 * time.Millisecond
	drainPromised  = drainDeadline + stubbornGrace
	drainOvershoot = 100 // ms: the target
)

func measureDrain(ctx context.Context, p params) ([]row, error) {
	stubborn := simPool("stubborn", "--ignore-sigterm")
	stubborn.StopGrace = stubbornGrace
	clean := simPool("clean")
	b, err := startDaemon(ctx, p.self, stubborn, clean)
	if err != nil {
		return nil, err
	}
	defer b.close()
	var over, forced, cleanD dist
	for i := 0; i < p.drainRuns; i++ {
		d, err := drainRun(ctx, b, stubborn.ID, true)
		if err != nil {
			return nil, fmt.Errorf("forced run %d: %w", i, err)
		}
		forced, over = append(forced, d), append(over, d-drainPromised)
	}
	for i := 0; i < p.drainRuns; i++ {
		d, err := drainRun(ctx, b, clean.ID, false)
		if err != nil {
			return nil, fmt.Errorf("clean run %d: %w", i, err)
		}
		cleanD = append(cleanD, d)
	}
	b.close()
	var bare dist
	for i := 0; i < p.drainRuns; i++ {
		d, _, err := bareCycle(ctx, p.self)
		if err != nil {
			return nil, fmt.Errorf("bare run %d: %w", i, err)
		}
		bare = append(bare, d)
	}
	promised := ms(drainPromised)
	return []row{
		newRow("drain", "forced drain (1 lease, SIGTERM ignored) → stopped p50", ms(forced.pct(50)), "ms", promised, "deadline 300 + grace 200", nil),
		newRow("drain", "forced drain overshoot p50", ms(over.pct(50)), "ms", -1, "", atMost(drainOvershoot)),
		newRow("drain", "forced drain overshoot max", ms(over.max()), "ms", -1, "", atMost(drainOvershoot)),
		newRow("drain", "clean drain (no lease) → stopped p50", ms(cleanD.pct(50)), "ms", ms(bare.pct(50)), "bare SIGTERM→exit", nil),
		newRow("drain", "clean drain (no lease) → stopped max", ms(cleanD.max()), "ms", ms(bare.max()), "bare SIGTERM→exit", nil),
	}, nil
}

// drainRun drains a ready pool (holding one lease when withLease) with a
// 300 ms deadline, returns the time from the request to the stopped event,
// and starts the pool again.
func drainRun(ctx context.Context, b *benchDaemon, id string, withLease bool) (time.Duration, error) {
	if _, err := b.waitState(ctx, id, actors.StateReady); err != nil {
		return 0, err
	}
	if withLease {
		if err := b.expect(ctx, 201, "POST", "/v1/pools/"+id+"/leases", map[string]any{}, nil); err != nil {
			return 0, err
		}
	}
	mark := b.events.mark()
	t0 := time.Now()
	if err := b.expect(ctx, 202, "POST", "/v1/pools/"+id+"/drain", map[string]int64{"deadline_ms": drainDeadline.Milliseconds()}, nil); err != nil {
		return 0, err
	}
	ev, err := b.events.wait(ctx, mark, id, actors.StateStopped, stateWait)
	if err != nil {
		return 0, b.failure(err)
	}
	if err := b.expect(ctx, 202, "POST", "/v1/pools/"+id+"/start", nil, nil); err != nil {
		return 0, err
	}
	return ev.at.Sub(t0), nil
}
