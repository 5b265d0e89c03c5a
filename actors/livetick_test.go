package actors

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/internal/clock"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// Liveness waits until the next multiple of its interval: whenever a pool
// asks, the wait is in (0, interval] and ends on the shared grid, so pools
// that became ready at different times probe at the same instants.
func TestUntilTickFallsOnTheGrid(t *testing.T) {
	const iv = 5 * time.Second
	base := time.Unix(1_800_000_000, 0) // a multiple of iv
	for _, off := range []time.Duration{0, time.Nanosecond, 1234 * time.Millisecond, iv - time.Nanosecond, iv, 7*iv + 3*time.Millisecond} {
		now := base.Add(off)
		d := untilTick(now, iv)
		if d <= 0 || d > iv {
			t.Fatalf("at +%s: wait %s, want in (0, %s]", off, d, iv)
		}
		if at := now.Add(d); at.UnixNano()%int64(iv) != 0 {
			t.Fatalf("at +%s: next probe at %s, not on the %s grid", off, at, iv)
		}
	}
	if d := untilTick(base.Add(time.Second), 3*time.Second); base.Add(time.Second).Add(d).UnixNano()%int64(3*time.Second) != 0 {
		t.Fatalf("3 s interval: wait %s is off the grid", d)
	}
}

// requestLog is an http.RoundTripper that records the path and the clock's
// time of every request before passing it on.
type requestLog struct {
	clk  clock.Clock
	mu   sync.Mutex
	reqs []loggedRequest
}

type loggedRequest struct {
	path string
	at   time.Time
}

func (l *requestLog) RoundTrip(r *http.Request) (*http.Response, error) {
	l.mu.Lock()
	l.reqs = append(l.reqs, loggedRequest{r.URL.Path, l.clk.Now()})
	l.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

// at returns the times of the requests for path.
func (l *requestLog) at(path string) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ts []time.Time
	for _, r := range l.reqs {
		if r.path == path {
			ts = append(ts, r.at)
		}
	}
	return ts
}

// The metrics scrape (metrics_path) reads the engine once when it is ready,
// then with each liveness probe, on the liveness grid: the time jumps to
// the next grid instant only (the engine became ready off the grid, so a
// scrape an interval after the first would not be due yet), and both the
// probe and the scrape come at it, twice over.
func TestPoolMetricsScrapeFollowsTheLivenessGrid(t *testing.T) {
	const iv = time.Hour
	clk := &longTimers{Fake: clock.NewFollowingFake(time.Unix(1_800_000_000, 0).Add(17 * time.Minute))} // off the grid
	h := newHarness(t, clk)
	cfg := simPool("p1")
	cfg.MetricsPath = "/metrics"
	cfg.Liveness = cfgLiveness(iv, time.Second, 3)
	rl := &requestLog{clk: clk}
	h.pools[cfg.ID] = h.sys.Root.Spawn(NewPoolProps(cfg, PoolDeps{Registry: h.reg, Clock: clk, Logger: h.logger(),
		ProbeClient: &http.Client{Transport: rl}}))
	h.waitState("p1", StateReady)
	testutil.Eventually(t, waitLimit, "the scrape when ready", func() bool { return len(rl.at("/metrics")) == 1 })
	for i := 1; i <= 2; i++ {
		// Jump only once liveness waits for its next tick: a timer armed
		// after the jump would wait for the tick after.
		testutil.Eventually(t, waitLimit, fmt.Sprintf("liveness wait %d", i), func() bool { return clk.armed.Load() == int64(i) })
		tick := clk.Now().Add(untilTick(clk.Now(), iv))
		clk.Advance(tick.Sub(clk.Now()))
		testutil.Eventually(t, waitLimit, fmt.Sprintf("probe and scrape %d", i), func() bool {
			return len(rl.at("/health")) == i && len(rl.at("/metrics")) == i+1
		})
		for _, path := range []string{"/health", "/metrics"} {
			ts := rl.at(path)
			if at := ts[len(ts)-1]; at.Before(tick) || at.Sub(tick) > iv/2 {
				t.Fatalf("%s %d at %s, want at the grid instant %s", path, i, at, tick)
			}
		}
	}
}

// A metrics reading that shows what the status already shows leaves the
// status as it is (nothing to publish: an idle engine's readings repeat at
// every liveness tick); a changed value, a vanished queue or a new series
// is published.
func TestPoolRepeatedMetricsReadingPublishesNothing(t *testing.T) {
	a := &pool{gen: 1, proc: &engine.Process{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ser := []engine.Sample{{ExportSeries: engine.ExportSeries{Name: "llamacpp:tokens_predicted_total", Counter: true}, Value: 7}}
	reading := func(proc, wait float64, series []engine.Sample, reported bool) *engineMetrics {
		return &engineMetrics{gen: 1, q: engine.Queue{Processing: proc, Waiting: wait, Reported: reported, Series: series}}
	}
	for i, c := range []struct {
		m     *engineMetrics
		dirty bool
	}{
		{reading(0, 0, ser, true), true},
		{reading(0, 0, slices.Clone(ser), true), false},
		{reading(1, 0, ser, true), true},
		{reading(1, 0, ser, true), false},
		{reading(1, 2, ser, true), true},
		{reading(1, 2, []engine.Sample{{ExportSeries: ser[0].ExportSeries, Value: 8}}, true), true},
		{reading(0, 0, nil, false), true},
		{reading(0, 0, nil, false), false},
		{&engineMetrics{gen: 1, err: errors.New("scrape failed")}, false},
	} {
		a.dirty = false
		a.onEngineMetrics(c.m)
		if a.dirty != c.dirty {
			t.Fatalf("reading %d (%+v): status changed %v, want %v", i, c.m.q, a.dirty, c.dirty)
		}
	}
}

// longTimers is a Fake that counts the AfterFunc timers armed for more than
// a minute (here: liveness waiting for its next tick).
type longTimers struct {
	*clock.Fake
	armed atomic.Int64
}

func (c *longTimers) AfterFunc(d time.Duration, f func()) clock.Timer {
	if d > time.Minute {
		c.armed.Add(1)
	}
	return c.Fake.AfterFunc(d, f)
}
