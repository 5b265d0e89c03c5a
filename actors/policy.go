package actors

import (
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// Policy decides, after each engine failure, how long to wait before the next
// start or whether to give up (the breaker). It is a pure object: it sleeps
// nowhere and reads time only from the arguments and its Clock, so it is
// table-tested without real time.
//
//   - delays grow exponentially (backoff/v4), jittered by cfg.Jitter;
//   - an engine that stayed ready for reset_after resets the delay and the
//     failure history before its failure is counted;
//   - more than max_failures failures within window opens the breaker.
type Policy struct {
	cfg        config.Restart
	b          *backoff.ExponentialBackOff
	failures   []time.Time
	readySince time.Time
}

// Decision is the policy's answer to one failure.
type Decision struct {
	Delay    time.Duration // wait this long before the next preload
	GiveUp   bool          // breaker open: go to failed
	InWindow int           // failures counted in the current window
}

// NewPolicy builds a policy for one pool.
func NewPolicy(cfg config.Restart, clk clock.Clock) *Policy {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = cfg.Initial
	b.Multiplier = cfg.Multiplier
	b.MaxInterval = cfg.Max
	b.RandomizationFactor = cfg.Jitter
	b.MaxElapsedTime = 0 // never stop on elapsed time: the breaker decides
	b.Clock = clk        // backoff.Clock is the Now half of clock.Clock
	b.Reset()
	return &Policy{cfg: cfg, b: b}
}

// Ready records that the engine became ready at now.
func (p *Policy) Ready(now time.Time) { p.readySince = now }

// NotReady records that the engine left ready without failing (drain, reload).
func (p *Policy) NotReady() { p.readySince = time.Time{} }

// Reset closes the breaker and forgets history (operator start, config change).
func (p *Policy) Reset() {
	p.failures = nil
	p.readySince = time.Time{}
	p.b.Reset()
}

// Failure records a failure at now and decides what comes next.
func (p *Policy) Failure(now time.Time) Decision {
	if !p.readySince.IsZero() && now.Sub(p.readySince) >= p.cfg.ResetAfter {
		p.failures = nil
		p.b.Reset()
	}
	p.readySince = time.Time{}
	cut := now.Add(-p.cfg.Window)
	kept := p.failures[:0]
	for _, f := range p.failures {
		if f.After(cut) {
			kept = append(kept, f)
		}
	}
	p.failures = append(kept, now)
	if len(p.failures) > p.cfg.MaxFailures {
		return Decision{GiveUp: true, InWindow: len(p.failures)}
	}
	d := p.b.NextBackOff()
	if d == backoff.Stop || d < 0 {
		d = p.cfg.Max
	}
	return Decision{Delay: d, InWindow: len(p.failures)}
}
