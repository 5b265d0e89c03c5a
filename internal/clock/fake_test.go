package clock_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/internal/clock"
)

var (
	_ clock.Clock = clock.Real{}
	_ clock.Clock = (*clock.Fake)(nil)
)

// waitLimit is a safety net for waiting on a timer, never a sleep.
const waitLimit = 30 * time.Second

var epoch = time.Unix(1_700_000_000, 0)

// recorder collects the order in which AfterFunc functions ran.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) fn(name string) func() {
	return func() {
		r.mu.Lock()
		r.got = append(r.got, name)
		r.mu.Unlock()
	}
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func TestFakeNowMovesOnlyOnAdvance(t *testing.T) {
	c := clock.NewFake(epoch)
	if !c.Now().Equal(epoch) {
		t.Fatalf("Now = %v, want %v", c.Now(), epoch)
	}
	c.Advance(90 * time.Second)
	if got := c.Since(epoch); got != 90*time.Second {
		t.Fatalf("Since(start) = %s after Advance(90s)", got)
	}
	c.Advance(-time.Hour) // time never goes back
	if got := c.Since(epoch); got != 90*time.Second {
		t.Fatalf("Since(start) = %s after a negative Advance", got)
	}
}

// Advance fires what it passes, in due order (equal due times in the order
// the timers were made), each before it returns, and nothing else.
func TestFakeAdvanceFiresInOrder(t *testing.T) {
	c := clock.NewFake(epoch)
	var r recorder
	c.AfterFunc(3*time.Second, r.fn("3s"))
	c.AfterFunc(time.Second, r.fn("1s-a"))
	c.AfterFunc(2*time.Second, r.fn("2s"))
	c.AfterFunc(time.Second, r.fn("1s-b"))
	c.AfterFunc(10*time.Second, r.fn("10s"))

	c.Advance(999 * time.Millisecond)
	if got := r.list(); len(got) != 0 {
		t.Fatalf("fired %v before any was due", got)
	}
	c.Advance(2001 * time.Millisecond) // now at 3s
	want := []string{"1s-a", "1s-b", "2s", "3s"}
	if got := r.list(); !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	c.Advance(7 * time.Second)
	if got := r.list(); len(got) != 5 || got[4] != "10s" {
		t.Fatalf("fired %v, want the 10s timer last", got)
	}
}

// A stopped timer never fires; Stop reports whether it was pending.
func TestFakeStop(t *testing.T) {
	c := clock.NewFake(epoch)
	var r recorder
	a := c.AfterFunc(time.Second, r.fn("a"))
	c.AfterFunc(time.Second, r.fn("b"))
	if !a.Stop() {
		t.Fatal("Stop of a pending timer = false")
	}
	if a.Stop() {
		t.Fatal("second Stop = true")
	}
	c.Advance(time.Second)
	if got := r.list(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("fired %v, want [b]", got)
	}
	tm, ch := c.NewTimer(time.Second)
	c.Advance(time.Second)
	if tm.Stop() {
		t.Fatal("Stop after firing = true")
	}
	select {
	case v := <-ch:
		t.Fatalf("received %v after Stop: a stale value must be drained", v)
	default:
	}
}

// NewTimer's channel gets the fake time when an Advance reaches it; Reset
// re-arms from the new now; d <= 0 fires at once.
func TestFakeNewTimer(t *testing.T) {
	c := clock.NewFake(epoch)
	tm, ch := c.NewTimer(5 * time.Second)
	c.Advance(4 * time.Second)
	select {
	case <-ch:
		t.Fatal("fired a second early")
	default:
	}
	c.Advance(time.Second)
	select {
	case v := <-ch:
		if !v.Equal(epoch.Add(5 * time.Second)) {
			t.Fatalf("received %v, want %v", v, epoch.Add(5*time.Second))
		}
	default:
		t.Fatal("not fired when due")
	}
	if tm.Reset(2 * time.Second) {
		t.Fatal("Reset of a fired timer reported it pending")
	}
	c.Advance(time.Second)
	if !tm.Reset(2 * time.Second) { // from 6s: due at 8s now
		t.Fatal("Reset of a pending timer reported it not pending")
	}
	c.Advance(time.Second)
	select {
	case <-ch:
		t.Fatal("fired at the first Reset's due time")
	default:
	}
	c.Advance(time.Second)
	select {
	case <-ch:
	default:
		t.Fatal("not fired at the second Reset's due time")
	}

	_, now := c.NewTimer(0)
	select {
	case <-now:
	default:
		t.Fatal("NewTimer(0) did not fire at once")
	}
	done := make(chan struct{})
	c.AfterFunc(0, func() { close(done) })
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatal("AfterFunc(0) never ran")
	}
}

// A following Fake moves with real time and fires timers when real time
// reaches them; an Advance still jumps ahead.
func TestFakeFollowsRealTime(t *testing.T) {
	c := clock.NewFollowingFake(epoch)
	_, ch := c.NewTimer(20 * time.Millisecond)
	fired := make(chan struct{})
	c.AfterFunc(30*time.Millisecond, func() { close(fired) })
	select {
	case v := <-ch:
		if v.Before(epoch.Add(20 * time.Millisecond)) {
			t.Fatalf("fired at %v, before its due time", v)
		}
	case <-time.After(waitLimit):
		t.Fatal("NewTimer never fired in real time")
	}
	select {
	case <-fired:
	case <-time.After(waitLimit):
		t.Fatal("AfterFunc never ran in real time")
	}
	if c.Since(epoch) < 30*time.Millisecond {
		t.Fatalf("Since(start) = %s after 30ms of real time", c.Since(epoch))
	}

	before := c.Now()
	_, hour := c.NewTimer(time.Hour)
	c.Advance(time.Hour)
	select {
	case <-hour:
	default:
		t.Fatal("an hour's timer not fired by Advance(1h)")
	}
	if got := c.Since(before); got < time.Hour {
		t.Fatalf("Since = %s after Advance(1h)", got)
	}

	// A timer re-armed by an Advance's jump still fires on real time.
	tm, ch2 := c.NewTimer(time.Hour)
	c.Advance(time.Hour - 10*time.Millisecond)
	select {
	case <-ch2:
	case <-time.After(waitLimit):
		t.Fatal("the last 10ms of an advanced timer never passed in real time")
	}
	if tm.Stop() {
		t.Fatal("Stop after firing = true")
	}
}

// Timers made and stopped from many goroutines while others advance keep
// the fake consistent (run with -race).
func TestFakeConcurrent(t *testing.T) {
	c := clock.NewFollowingFake(epoch)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				d := time.Duration(i*j%7) * time.Millisecond
				if j%2 == 0 {
					tm, ch := c.NewTimer(d)
					if j%3 == 0 {
						tm.Stop()
						continue
					}
					c.Advance(time.Millisecond)
					select {
					case <-ch:
					case <-time.After(waitLimit):
						t.Error("timer never fired")
						return
					}
				} else {
					done := make(chan struct{})
					c.AfterFunc(d, func() { close(done) })
					c.Advance(d)
					select {
					case <-done:
					case <-time.After(waitLimit):
						t.Error("AfterFunc never ran")
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestReal(t *testing.T) {
	var c clock.Clock = clock.Real{}
	start := c.Now()
	_, ch := c.NewTimer(time.Millisecond)
	select {
	case <-ch:
	case <-time.After(waitLimit):
		t.Fatal("Real.NewTimer never fired")
	}
	if c.Since(start) < time.Millisecond {
		t.Fatalf("Since = %s after a 1ms timer", c.Since(start))
	}
	if _, ok := clock.OrReal(nil).(clock.Real); !ok {
		t.Fatal("OrReal(nil) is not Real")
	}
}
