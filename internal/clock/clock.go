// Package clock is the daemon's one time source. Every timing decision
// (timeouts, backoff, deadlines, stall and liveness judgements, rate
// limits, the VRAM wait) reads a Clock, never the time package directly, so
// the stamps a decision compares all come from the same clock and tests can
// jump time with a Fake instead of sleeping.
//
// It is modelled on tailscale's tstime.Clock and tstest.Clock: Real is the
// time package; Fake starts where it is told and moves only when advanced
// or, made with NewFollowingFake, also along with real time.
package clock

import "time"

// Clock tells the time and makes timers.
type Clock interface {
	// Now is the current time.
	Now() time.Time
	// Since is Now().Sub(t).
	Since(t time.Time) time.Duration
	// AfterFunc runs f once d has passed (at once for d <= 0) and returns a
	// Timer that can cancel it. Real runs f in its own goroutine; see Fake
	// for where a fake timer runs it.
	AfterFunc(d time.Duration, f func()) Timer
	// NewTimer returns a Timer and the channel that receives the time once d
	// has passed (at once for d <= 0). The channel has room for one value.
	// As with Go 1.23's time.Timer, once Stop or Reset returns no stale
	// value from before the call is received.
	NewTimer(d time.Duration) (Timer, <-chan time.Time)
}

// Timer is a pending AfterFunc or NewTimer. *time.Timer is one.
type Timer interface {
	// Stop cancels the timer; it reports whether the timer was still
	// pending (false: it had fired or been stopped already).
	Stop() bool
	// Reset re-arms the timer to fire d from now, whether it had fired or
	// not; it reports whether the timer was still pending.
	Reset(d time.Duration) bool
}

// Real is the wall clock: the time package.
type Real struct{}

// Now is time.Now.
func (Real) Now() time.Time { return time.Now() }

// Since is time.Since.
func (Real) Since(t time.Time) time.Duration { return time.Since(t) }

// AfterFunc is time.AfterFunc.
func (Real) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// NewTimer is time.NewTimer.
func (Real) NewTimer(d time.Duration) (Timer, <-chan time.Time) {
	t := time.NewTimer(d)
	return t, t.C
}

// OrReal is c, or Real when c is nil: what an optional Clock field
// defaults to.
func OrReal(c Clock) Clock {
	if c == nil {
		return Real{}
	}
	return c
}
