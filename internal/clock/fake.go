package clock

import (
	"sort"
	"sync"
	"time"
)

// Fake is a Clock for tests whose time moves when Advance says so and,
// made with NewFollowingFake, also along with real time. Safe for
// concurrent use.
//
// Its timers fire in order of due time (timers due at the same time in the
// order they were made), each once the fake time reaches it: at once when
// made (or Reset) with d <= 0, during the Advance that passes it, or, on a
// following Fake, when real time gets there. A NewTimer's value is on its
// channel before Advance returns. AfterFunc functions due at creation run
// in their own goroutine; those an Advance (or real time) makes due run one
// after the other, in due order, on the goroutine that made them due: they
// have all returned when Advance returns, so they must not block (sending a
// message or closing a channel is what they are for).
type Fake struct {
	mu        sync.Mutex
	start     time.Time     // the fake time at creation
	realStart time.Time     // following only: the real time at creation; zero: not following
	advanced  time.Duration // the sum of every Advance
	timers    []*fakeTimer  // pending, by (at, seq)
	seq       uint64
	wake      *time.Timer // following only: fires at the first pending timer's real due time
}

// NewFake returns a Fake that reads start until it is advanced.
func NewFake(start time.Time) *Fake { return &Fake{start: start} }

// NewFollowingFake returns a Fake that follows real time: its time is start
// plus the real time elapsed since then plus every Advance, and its timers
// fire when real time reaches them or an Advance jumps past them. A test
// that runs real processes under a real-time schedule uses it to skip a
// long wait (a backoff, a timeout) instead of sleeping through it.
func NewFollowingFake(start time.Time) *Fake {
	return &Fake{start: start, realStart: time.Now()}
}

type fakeTimer struct {
	c       *Fake
	at      time.Time
	seq     uint64
	f       func()         // AfterFunc; nil for NewTimer
	ch      chan time.Time // NewTimer; nil for AfterFunc
	pending bool
}

// Now is the fake time (see NewFake and NewFollowingFake).
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nowLocked()
}

func (c *Fake) nowLocked() time.Time {
	d := c.advanced
	if !c.realStart.IsZero() {
		d += time.Since(c.realStart)
	}
	return c.start.Add(d)
}

// Since is Now().Sub(t).
func (c *Fake) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// AfterFunc runs f once the fake time is d past now (see Fake for where f
// runs).
func (c *Fake) AfterFunc(d time.Duration, f func()) Timer {
	t := &fakeTimer{c: c, f: f}
	t.Reset(d)
	return t
}

// NewTimer returns a timer whose channel receives the fake time once it is
// d past now.
func (c *Fake) NewTimer(d time.Duration) (Timer, <-chan time.Time) {
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t, t.ch
}

// Advance moves the fake time forward by d (d <= 0 only fires what is due)
// and fires every timer that became due, in order of due time.
func (c *Fake) Advance(d time.Duration) {
	c.mu.Lock()
	if d > 0 {
		c.advanced += d
	}
	due := c.fireLocked()
	c.rearmLocked()
	c.mu.Unlock()
	run(due)
}

// Stop cancels the timer (see Timer).
func (t *fakeTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	was := t.pending
	t.unlinkLocked()
	t.drainLocked()
	c.rearmLocked()
	return was
}

// Reset re-arms the timer d from the fake now (see Timer).
func (t *fakeTimer) Reset(d time.Duration) bool {
	c := t.c
	c.mu.Lock()
	was := t.pending
	t.unlinkLocked()
	t.drainLocked()
	now := c.nowLocked()
	if d <= 0 {
		t.fireLocked(now)
		c.rearmLocked()
		c.mu.Unlock()
		if t.f != nil {
			go t.f()
		}
		return was
	}
	c.seq++
	t.at, t.seq, t.pending = now.Add(d), c.seq, true
	i := sort.Search(len(c.timers), func(i int) bool { return t.before(c.timers[i]) })
	c.timers = append(c.timers, nil)
	copy(c.timers[i+1:], c.timers[i:])
	c.timers[i] = t
	c.rearmLocked()
	c.mu.Unlock()
	return was
}

// before orders timers by due time, then by when they were armed.
func (t *fakeTimer) before(u *fakeTimer) bool {
	if !t.at.Equal(u.at) {
		return t.at.Before(u.at)
	}
	return t.seq < u.seq
}

// unlinkLocked takes a pending timer off the list.
func (t *fakeTimer) unlinkLocked() {
	if !t.pending {
		return
	}
	t.pending = false
	for i, x := range t.c.timers {
		if x == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			return
		}
	}
}

// drainLocked empties a NewTimer's channel, so no value from before a Stop
// or Reset is received after it.
func (t *fakeTimer) drainLocked() {
	if t.ch == nil {
		return
	}
	select {
	case <-t.ch:
	default:
	}
}

// fireLocked delivers a NewTimer's value (AfterFunc callers run f
// themselves, outside the lock).
func (t *fakeTimer) fireLocked(now time.Time) {
	t.pending = false
	if t.ch != nil {
		select {
		case t.ch <- now:
		default:
		}
	}
}

// fireLocked fires every pending timer due by now, in order, and returns
// the AfterFunc functions to run (outside the lock).
func (c *Fake) fireLocked() []func() {
	now := c.nowLocked()
	n := 0
	for n < len(c.timers) && !c.timers[n].at.After(now) {
		n++
	}
	var due []func()
	for _, t := range c.timers[:n] {
		t.fireLocked(now)
		if t.f != nil {
			due = append(due, t.f)
		}
	}
	c.timers = append(c.timers[:0], c.timers[n:]...)
	return due
}

// rearmLocked points a following Fake's real timer at the first pending
// timer's due time.
func (c *Fake) rearmLocked() {
	if c.realStart.IsZero() {
		return
	}
	if len(c.timers) == 0 {
		if c.wake != nil {
			c.wake.Stop()
		}
		return
	}
	d := c.timers[0].at.Sub(c.nowLocked())
	if c.wake == nil {
		c.wake = time.AfterFunc(d, c.onWake)
	} else {
		c.wake.Reset(d)
	}
}

// onWake fires what real time has made due on a following Fake.
func (c *Fake) onWake() { c.Advance(0) }

func run(fs []func()) {
	for _, f := range fs {
		f()
	}
}
