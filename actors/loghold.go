package actors

import (
	"context"
	"log/slog"
	"sync"
)

// logHold lets a pool actor put its log records aside while it does work
// that must not wait for them, and write them afterwards: an engine that
// crashed with a backoff of 0 is relaunched before the exit's records
// (engine.exited, pool.failure, pool.state, engine.stopped) are formatted and
// written. Held records keep the time they were logged at and are written in
// the order they were logged; a record logged by another goroutine of the
// pool (the relaunch, the engine's output) while the hold lasts is queued
// behind them, so the log's order is the order of the calls.
type logHold struct {
	mu   sync.Mutex
	held bool
	recs []heldRecord
}

// heldRecord is one record put aside, with the handler (carrying the
// logger's attributes) that writes it.
type heldRecord struct {
	h slog.Handler
	r slog.Record
}

// hold starts putting records aside (a hold already in force stays).
func (q *logHold) hold() {
	q.mu.Lock()
	q.held = true
	q.mu.Unlock()
}

// release writes the records put aside, in order, and ends the hold once
// none is left. Records are written without the lock held, so a goroutine
// that logs meanwhile is queued, not blocked.
func (q *logHold) release() {
	for {
		q.mu.Lock()
		recs := q.recs
		q.recs = nil
		if len(recs) == 0 {
			q.held = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		for _, hr := range recs {
			_ = hr.h.Handle(context.Background(), hr.r)
		}
	}
}

// holdHandler is the pool's slog.Handler: it passes records on to h, or
// queues them on q while q holds.
type holdHandler struct {
	h slog.Handler
	q *logHold
}

func (x holdHandler) Enabled(ctx context.Context, l slog.Level) bool { return x.h.Enabled(ctx, l) }

func (x holdHandler) Handle(ctx context.Context, r slog.Record) error {
	x.q.mu.Lock()
	if x.q.held {
		x.q.recs = append(x.q.recs, heldRecord{x.h, r.Clone()})
		x.q.mu.Unlock()
		return nil
	}
	x.q.mu.Unlock()
	return x.h.Handle(ctx, r)
}

func (x holdHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return holdHandler{x.h.WithAttrs(as), x.q}
}

func (x holdHandler) WithGroup(name string) slog.Handler {
	return holdHandler{x.h.WithGroup(name), x.q}
}
