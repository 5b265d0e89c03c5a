// Package actors holds the pool actor (one per pool, the only writer of that
// pool's state, owner of its engine process), the registry actor (the read
// model every query uses, and the owner of leases), the restart policy, and
// the messages between them. It knows nothing of HTTP.
//
// Pool states (docs/contract.md §3):
//
//	           start / config add
//	stopped ───────────────────────► preload ──(readiness 200)──► ready
//	   ▲                               │  ▲                         │
//	   │ drain done                    │  │ backoff elapsed         │ unexpected exit,
//	   │                               ▼  │                         │ liveness failures,
//	draining ◄──── drain / reload ─── (any) ──(failure)──► backoff ◄┘ critical GPU XID
//	                                              │
//	                                              └─(breaker: > max_failures in window)──► failed
//
// Nothing inside Receive blocks: spawning, probing and stopping run in
// goroutines that report back with messages stamped with a generation number;
// a message from an older generation is stale and ignored. Timers are
// scheduled messages (never protoactor's ReceiveTimeout) with a token, so a
// cancelled timer that fires late is ignored too.
//
// Time is PoolDeps.Clock (and the registry's clock): every timer, deadline,
// backoff and stamp of a pool comes from it, and it is handed on to the
// pool's engines and output sink, so a judgement such as the stall check
// compares stamps of one clock. Tests pass a clock.Fake and advance it.
package actors
