// This file keeps a pool's engine output: a ring of the last lines for the
// logs endpoint, and rate-limited forwarding to the daemon's slog logger so a
// noisy engine cannot flood the journal.

package engine

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults a caller may pass to NewSink.
const (
	DefaultRingSize = 1000 // the logs endpoint serves at most 1000 lines
	DefaultLogRate  = 100  // lines per second forwarded to the logger, sustained
	DefaultLogBurst = 500  // a model load prints a few hundred lines at once
)

// The two output streams, as Line.Stream and the log's "stream" field name them.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// Log messages of forwarded output.
const (
	logMsgOutput  = "engine output"
	logMsgDropped = "engine output dropped"
)

// Line is one line of engine output. Its JSON is {at_ms, stream, text}.
type Line struct {
	At     time.Time
	Stream string
	Text   string
}

type lineJSON struct {
	AtMs   int64  `json:"at_ms"`
	Stream string `json:"stream"`
	Text   string `json:"text"`
}

// MarshalJSON writes At as unix milliseconds.
func (l Line) MarshalJSON() ([]byte, error) {
	return json.Marshal(lineJSON{AtMs: l.At.UnixMilli(), Stream: l.Stream, Text: l.Text})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (l *Line) UnmarshalJSON(b []byte) error {
	var j lineJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*l = Line{At: time.UnixMilli(j.AtMs), Stream: j.Stream, Text: j.Text}
	return nil
}

// Sink is one pool's output sink; it outlives engine restarts, so the ring
// shows the lines that led up to a crash. Safe for concurrent use; a nil
// *Sink discards everything.
type Sink struct {
	logger  *slog.Logger
	rate    float64 // tokens per second; <= 0: no limit
	burst   float64
	now     func() time.Time
	dropped atomic.Uint64

	mu         sync.Mutex
	ring       []Line // fixed size; next is where the next line goes
	next       int
	count      int
	last       map[string]string
	tokens     float64
	refilledAt time.Time
	unreported uint64 // drops since the last forwarded line
	onDrop     func()
}

// NewSink makes a sink that keeps the last ringSize lines (<= 0: the default)
// and forwards lines to logger (which should carry pool_id; nil discards) at
// ratePerSec sustained with bursts of burst lines. ratePerSec <= 0 forwards
// everything; burst <= 0 means one second's worth.
func NewSink(logger *slog.Logger, ringSize int, ratePerSec int, burst int) *Sink {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if ringSize <= 0 {
		ringSize = DefaultRingSize
	}
	if burst <= 0 {
		burst = max(ratePerSec, 1)
	}
	return &Sink{
		logger: logger,
		rate:   float64(ratePerSec),
		burst:  float64(burst),
		now:    time.Now,
		ring:   make([]Line, ringSize),
		last:   make(map[string]string, 2),
		tokens: float64(burst),
	}
}

// Write records one line (without its newline): always into the ring, and
// into the log when the rate limit allows.
func (s *Sink) Write(stream, text string) {
	if s == nil {
		return
	}
	now := s.now()
	s.mu.Lock()
	s.ring[s.next] = Line{At: now, Stream: stream, Text: text}
	s.next = (s.next + 1) % len(s.ring)
	s.count = min(s.count+1, len(s.ring))
	s.last[stream] = text
	allowed := s.take(now)
	var unreported uint64
	var onDrop func()
	if allowed {
		unreported, s.unreported = s.unreported, 0
	} else {
		s.unreported++
		onDrop = s.onDrop
	}
	s.mu.Unlock()

	if !allowed {
		s.dropped.Add(1)
		if onDrop != nil {
			onDrop()
		}
		return
	}
	ctx := context.Background()
	if unreported > 0 {
		s.logger.LogAttrs(ctx, slog.LevelWarn, logMsgDropped, slog.Uint64("dropped", unreported))
	}
	s.logger.LogAttrs(ctx, slog.LevelInfo, logMsgOutput, slog.String("stream", stream), slog.String("line", text))
}

// take spends a token of the bucket, refilled at s.rate up to s.burst.
// Called with s.mu held.
func (s *Sink) take(now time.Time) bool {
	if s.rate <= 0 {
		return true
	}
	if !s.refilledAt.IsZero() {
		s.tokens = min(s.burst, s.tokens+now.Sub(s.refilledAt).Seconds()*s.rate)
	}
	s.refilledAt = now
	if s.tokens < 1 {
		return false
	}
	s.tokens--
	return true
}

// reportDrops logs the drops not yet reported, so a flood that ends with the
// engine still shows up in the log. Called when an engine process ends.
func (s *Sink) reportDrops() {
	if s == nil {
		return
	}
	s.mu.Lock()
	n := s.unreported
	s.unreported = 0
	s.mu.Unlock()
	if n > 0 {
		s.logger.LogAttrs(context.Background(), slog.LevelWarn, logMsgDropped, slog.Uint64("dropped", n))
	}
}

// Tail returns the last n lines, oldest first (fewer when fewer were kept).
func (s *Sink) Tail(n int) []Line {
	if s == nil || n <= 0 {
		return []Line{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n = min(n, s.count)
	out := make([]Line, n)
	size := len(s.ring)
	for i := range n {
		out[i] = s.ring[(s.next-n+i+size)%size]
	}
	return out
}

// LastLine is the last line written on stream ("" if none), across engine
// restarts; Process.LastLine is the same for one process.
func (s *Sink) LastLine(stream string) string {
	if s == nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[stream]
}

// Dropped counts lines not forwarded to the logger because of the rate
// limit; they are still in the ring.
func (s *Sink) Dropped() uint64 {
	if s == nil {
		return 0
	}
	return s.dropped.Load()
}

// SetOnDrop sets a callback run once per dropped line (for a metric), outside
// the sink's lock; it must not block.
func (s *Sink) SetOnDrop(f func()) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.onDrop = f
	s.mu.Unlock()
}
