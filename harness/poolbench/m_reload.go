// Measurement "reload": a reload with wait:true of a pool whose engine loads
// in 0 ms, minus what the engine itself takes to stop and to start (measured
// on bare simulators), is the daemon's own part.

package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
)

func measureReload(ctx context.Context, p params) ([]row, error) {
	const id = "reload"
	b, err := startDaemon(ctx, p.self, simPool(id, "--load-time", "0"))
	if err != nil {
		return nil, err
	}
	defer b.close()
	var total dist
	for i := 0; i < p.reloadRuns; i++ {
		if _, err := b.waitState(ctx, id, actors.StateReady); err != nil {
			return nil, err
		}
		var res struct {
			Result string `json:"result"`
		}
		t0 := time.Now()
		body := map[string]any{"new_model_ref": fmt.Sprintf("bench/reload-%d", i), "wait": true}
		if err := b.expect(ctx, 200, "POST", "/v1/pools/"+id+"/reload", body, &res); err != nil {
			return nil, b.failure(fmt.Errorf("run %d: %w", i, err))
		}
		total = append(total, time.Since(t0))
		if res.Result != "succeeded" {
			return nil, fmt.Errorf("run %d: reload %s", i, res.Result)
		}
	}
	b.close()
	var stop, boot dist
	for i := 0; i < p.reloadRuns; i++ {
		s, r, err := bareCycle(ctx, p.self)
		if err != nil {
			return nil, fmt.Errorf("bare run %d: %w", i, err)
		}
		stop, boot = append(stop, s), append(boot, r)
	}
	engine := stop.pct(50) + boot.pct(50)
	return []row{
		newRow("reload", "reload wait:true → 200 p50", ms(total.pct(50)), "ms", ms(engine), "bare stop + exec→ready p50", nil),
		newRow("reload", "reload daemon overhead p50 (total − engine)", ms(total.pct(50)-engine), "ms", -1, "", nil),
		newRow("reload", "reload daemon overhead max (total − engine)", ms(total.max()-engine), "ms", -1, "", nil),
		newRow("reload", "context: bare SIGTERM → reaped p50", ms(stop.pct(50)), "ms", -1, "", nil),
		newRow("reload", "context: bare exec → sim ready stamp p50", ms(boot.pct(50)), "ms", -1, "", nil),
	}, nil
}

// bareCycle starts a simulator with --load-time 0 and returns how long it
// took from exec to its own ready stamp, and SIGTERM → reaped.
func bareCycle(ctx context.Context, self string) (stop, boot time.Duration, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	s, err := startBareSim(self, "--load-time", "0")
	if err != nil {
		return 0, 0, err
	}
	readyAt, err := s.waitReady(stateWait)
	if err != nil {
		_, _ = s.signalAndWait(syscall.SIGKILL, stateWait)
		return 0, 0, err
	}
	t0 := time.Now()
	end, err := s.signalAndWait(syscall.SIGTERM, stateWait)
	return end.Sub(t0), readyAt.Sub(s.startedAt), err
}
