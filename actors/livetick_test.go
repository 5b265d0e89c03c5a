package actors

import (
	"testing"
	"time"
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
