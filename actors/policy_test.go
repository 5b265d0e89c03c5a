package actors

import (
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

func testRestart() config.Restart {
	return config.Restart{Initial: time.Second, Multiplier: 2, Max: 8 * time.Second, Jitter: 0.1,
		ResetAfter: time.Minute, MaxFailures: 5, Window: 10 * time.Minute}
}

func within(d, want time.Duration, jitter float64) bool {
	lo := time.Duration(float64(want) * (1 - jitter))
	hi := time.Duration(float64(want)*(1+jitter)) + 1
	return d >= lo && d <= hi
}

func TestPolicyDelaysGrowWithJitterAndCap(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	cfg := testRestart()
	cfg.MaxFailures = 100
	p := NewPolicy(cfg, clk)
	want := []time.Duration{1, 2, 4, 8, 8, 8}
	distinct := map[time.Duration]bool{}
	for i, w := range want {
		clk.Advance(time.Second)
		d := p.Failure(clk.Now())
		if d.GiveUp {
			t.Fatalf("failure %d: gave up", i)
		}
		if !within(d.Delay, w*time.Second, cfg.Jitter) {
			t.Fatalf("failure %d: delay %v, want %v ±10%%", i, d.Delay, w*time.Second)
		}
		distinct[d.Delay] = true
	}
	if len(distinct) < 4 {
		t.Fatalf("delays not jittered/growing: %v", distinct)
	}
}

func TestPolicyJitterVaries(t *testing.T) {
	seen := map[time.Duration]bool{}
	for i := 0; i < 20; i++ {
		clk := clock.NewFake(time.Unix(0, 0))
		p := NewPolicy(testRestart(), clk)
		seen[p.Failure(clk.Now()).Delay] = true
	}
	if len(seen) < 2 {
		t.Fatalf("20 first delays were all identical (%v): no jitter", seen)
	}
}

func TestPolicyBreaker(t *testing.T) {
	tests := []struct {
		name     string
		gaps     []time.Duration // time before each failure
		giveUpAt int             // index of the failure that opens the breaker, -1 never
	}{
		{"six quick failures open it", []time.Duration{0, 1, 1, 1, 1, 1}, 5},
		{"failures spread beyond the window do not", []time.Duration{0, 3 * time.Minute, 3 * time.Minute, 3 * time.Minute, 3 * time.Minute, 3 * time.Minute, 3 * time.Minute}, -1},
		{"exactly max_failures does not", []time.Duration{0, 1, 1, 1, 1}, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(time.Unix(0, 0))
			p := NewPolicy(testRestart(), clk)
			for i, g := range tc.gaps {
				clk.Advance(g)
				d := p.Failure(clk.Now())
				if d.GiveUp != (i == tc.giveUpAt) {
					t.Fatalf("failure %d: GiveUp=%v (in window %d)", i, d.GiveUp, d.InWindow)
				}
				if d.GiveUp {
					return
				}
			}
		})
	}
}

func TestPolicyResetAfterStableUptime(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	cfg := testRestart()
	p := NewPolicy(cfg, clk)
	for i := 0; i < 3; i++ {
		p.Failure(clk.Now())
	}
	// Ready for less than reset_after: the delay keeps growing.
	p.Ready(clk.Now())
	clk.Advance(cfg.ResetAfter / 2)
	if d := p.Failure(clk.Now()); !within(d.Delay, 8*time.Second, cfg.Jitter) || d.InWindow != 4 {
		t.Fatalf("short uptime: got %+v, want 8s and 4 in window", d)
	}
	// Ready for reset_after: back to the initial delay, history forgotten.
	p.Ready(clk.Now())
	clk.Advance(cfg.ResetAfter)
	if d := p.Failure(clk.Now()); !within(d.Delay, cfg.Initial, cfg.Jitter) || d.InWindow != 1 {
		t.Fatalf("stable uptime: got %+v, want initial delay and 1 in window", d)
	}
}

func TestPolicyZeroInitial(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	cfg := testRestart()
	cfg.Initial = 0
	p := NewPolicy(cfg, clk)
	if d := p.Failure(clk.Now()); d.Delay != 0 {
		t.Fatalf("initial 0: first delay %v", d.Delay)
	}
}

func TestPolicyResetClosesBreaker(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	p := NewPolicy(testRestart(), clk)
	for i := 0; i < 6; i++ {
		p.Failure(clk.Now())
	}
	p.Reset()
	if d := p.Failure(clk.Now()); d.GiveUp || d.InWindow != 1 {
		t.Fatalf("after Reset: %+v", d)
	}
}
