// Measurement "ready": how long after the engine turns ready does a client
// of /v1/events learn it, next to a bare 10 ms poller on the same engine.

package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
)

// bareProbeEvery is the bare poller's period: the daemon's readiness poll
// period, so the comparison isolates what the daemon adds on top of polling.
const bareProbeEvery = 10 * time.Millisecond

func measureReady(ctx context.Context, p params) ([]row, error) {
	const id = "lag"
	b, err := startDaemon(ctx, p.self, simPool(id, "--load-time", "300ms"))
	if err != nil {
		return nil, err
	}
	defer b.close()
	var lag, bare, atMS dist
	for i := 0; i < p.readyRuns; i++ {
		r, err := readyRun(ctx, b, id)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i, err)
		}
		lag, bare, atMS = append(lag, r.lag), append(bare, r.bare), append(atMS, r.stamped)
	}
	rows := latencyRows("ready", "ready-detection lag (sim ready → SSE event)", lag, bare, "bare 10 ms poller",
		atMost(2), atMost(5))
	return append(rows, newRow("ready", "context: lag by the transition's own at_ms (ms resolution) p50",
		ms(atMS.pct(50)), "ms", -1, "", nil)), nil
}

// readyLags are one run's delays behind the simulator's own ready stamp.
type readyLags struct {
	lag     time.Duration // until the SSE event reached poolbench
	bare    time.Duration // until the bare poller saw 200
	stamped time.Duration // until the transition's at_ms (the daemon's own clock, ms)
}

// readyRun stops the pool, starts it again and measures how far behind the
// simulator's ready stamp the daemon and a bare poller noticed.
func readyRun(ctx context.Context, b *benchDaemon, id string) (readyLags, error) {
	var none readyLags
	if err := b.expect(ctx, 202, "POST", "/v1/pools/"+id+"/drain", map[string]int{"deadline_ms": 0}, nil); err != nil {
		return none, err
	}
	if _, err := b.waitState(ctx, id, actors.StateStopped); err != nil {
		return none, err
	}
	mark := b.events.mark()
	started := time.Now()
	if err := b.expect(ctx, 202, "POST", "/v1/pools/"+id+"/start", nil, nil); err != nil {
		return none, err
	}
	url, err := engineURL(ctx, b, id)
	if err != nil {
		return none, err
	}
	pctx, cancel := context.WithTimeout(ctx, stateWait)
	defer cancel()
	bareCh := make(chan time.Time, 1)
	go func() { bareCh <- pollHealth(pctx, url+"/health") }()
	ev, err := b.events.wait(ctx, mark, id, actors.StateReady, stateWait)
	if err != nil {
		return none, b.failure(err)
	}
	bareAt := <-bareCh
	if bareAt.IsZero() {
		return none, fmt.Errorf("bare poller never saw %s/health answer 200", url)
	}
	simAt, err := b.simReadyAt(ctx, id, started)
	if err != nil {
		return none, err
	}
	return readyLags{ev.at.Sub(simAt), bareAt.Sub(simAt), time.UnixMilli(ev.AtMS).Sub(simAt)}, nil
}

// engineURL polls the pool until its new engine has a URL (right after spawn).
func engineURL(ctx context.Context, b *benchDaemon, id string) (string, error) {
	for deadline := time.Now().Add(stateWait); time.Now().Before(deadline); {
		st, err := b.status(ctx, id)
		if err != nil {
			return "", err
		}
		if st.URL != nil && st.PID != nil {
			return *st.URL, nil
		}
		if err := sleep(ctx, 2*time.Millisecond); err != nil {
			return "", err
		}
	}
	return "", b.failure(fmt.Errorf("pool %s: no engine URL within %s", id, stateWait))
}

// pollHealth is the bare poller: GET url every bareProbeEvery until 200.
// It returns when the 200 arrived, or the zero time if ctx ended first.
func pollHealth(ctx context.Context, url string) time.Time {
	return pollHealthClient(ctx, url, &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableCompression: true}})
}

// pollHealthClient is pollHealth with the client to use.
func pollHealthClient(ctx context.Context, url string, client *http.Client) time.Time {
	defer client.CloseIdleConnections()
	tick := time.NewTicker(bareProbeEvery)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := client.Do(req); err == nil {
			drain(resp)
			if resp.StatusCode == 200 {
				return time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}
		case <-tick.C:
		}
	}
}
