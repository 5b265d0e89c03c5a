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

	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// The ring size NewSink uses when given none, and the byte budget every
// rate-limited sink applies on top of its line rate.
const (
	DefaultRingSize = 1000 // the logs endpoint serves at most 1000 lines

	// The byte budget bites only on long lines: a few hundred lines of
	// model loading are some tens of KiB, a vLLM config dump a few KiB.
	DefaultLogBytesPerSec = 64 << 10  // bytes of output per second forwarded, sustained
	DefaultLogByteBurst   = 512 << 10 // bytes forwarded at once
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
//
// Forwarding to the logger is limited by two token buckets, one of lines
// and one of bytes: a line is forwarded only when both allow it, so neither
// many short lines nor a few long ones flood the journal. Lines longer than
// 16 KiB are cut there before they reach the sink (see lineWriter).
type Sink struct {
	logger       *slog.Logger
	lines, bytes bucket
	clock        clock.Clock // stamps lines and refills the buckets
	dropped      atomic.Uint64
	droppedBytes atomic.Uint64

	mu              sync.Mutex
	ring            []Line // grows to size as lines come, then wraps; next is where the next line goes
	size            int    // the most lines kept
	next            int
	last            map[string]string
	refilledAt      time.Time
	unreported      uint64 // lines dropped since the last forwarded line
	unreportedBytes uint64 // bytes dropped (or cut from long lines) since then
	onDrop          func(lines, bytes int)
}

// bucket is a token bucket: rate tokens per second up to burst; rate <= 0
// is no limit.
type bucket struct {
	rate, burst, tokens float64
}

func newBucket(rate, burst int) bucket {
	if burst <= 0 {
		burst = max(rate, 1)
	}
	return bucket{rate: float64(rate), burst: float64(burst), tokens: float64(burst)}
}

func (b *bucket) refill(secs float64) {
	b.tokens = min(b.burst, b.tokens+secs*b.rate)
}

func (b *bucket) has(n float64) bool { return b.rate <= 0 || b.tokens >= n }

func (b *bucket) spend(n float64) {
	if b.rate > 0 {
		b.tokens -= n
	}
}

// NewSink makes a sink that keeps the last ringSize lines (<= 0: the default)
// and forwards lines to logger (which should carry pool_id; nil discards) at
// ratePerSec sustained with bursts of burst lines, and at most
// DefaultLogBytesPerSec bytes with bursts of DefaultLogByteBurst (see
// SetByteLimit). ratePerSec <= 0 forwards everything; burst <= 0 means one
// second's worth.
func NewSink(logger *slog.Logger, ringSize int, ratePerSec int, burst int) *Sink {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if ringSize <= 0 {
		ringSize = DefaultRingSize
	}
	s := &Sink{
		logger: logger,
		lines:  newBucket(ratePerSec, burst),
		clock:  clock.Real{},
		size:   ringSize,
		last:   make(map[string]string, 2),
	}
	if ratePerSec > 0 {
		s.bytes = newBucket(DefaultLogBytesPerSec, DefaultLogByteBurst)
	}
	return s
}

// SetClock makes c the sink's clock (clock.Real until then): it stamps
// each Line.At and refills the rate limits. Call it before the first
// Write; nil is clock.Real.
func (s *Sink) SetClock(c clock.Clock) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.clock = clock.OrReal(c)
	s.mu.Unlock()
}

// SetByteLimit sets the byte bucket: perSec bytes per second sustained,
// bursts of burst bytes (<= 0: one second's worth); perSec <= 0 lifts the
// byte limit. The bucket starts full.
func (s *Sink) SetByteLimit(perSec, burst int) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.bytes = newBucket(perSec, burst)
	s.mu.Unlock()
}

// Write records one line (without its newline): always into the ring, and
// into the log when the rate limit allows.
func (s *Sink) Write(stream, text string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	now := s.clock.Now()
	s.keep(Line{At: now, Stream: stream, Text: text})
	s.last[stream] = text
	allowed := s.take(now, len(text))
	var unreported, unreportedBytes uint64
	var onDrop func(int, int)
	if allowed {
		unreported, s.unreported = s.unreported, 0
		unreportedBytes, s.unreportedBytes = s.unreportedBytes, 0
	} else {
		s.unreported++
		s.unreportedBytes += uint64(len(text))
		onDrop = s.onDrop
	}
	s.mu.Unlock()

	if !allowed {
		s.dropped.Add(1)
		s.droppedBytes.Add(uint64(len(text)))
		if onDrop != nil {
			onDrop(1, len(text))
		}
		return
	}
	ctx := context.Background()
	if unreported > 0 || unreportedBytes > 0 {
		s.logger.LogAttrs(ctx, slog.LevelWarn, logMsgDropped, slog.Uint64("dropped", unreported), slog.Uint64("dropped_bytes", unreportedBytes))
	}
	s.logger.LogAttrs(ctx, slog.LevelInfo, logMsgOutput, slog.String("stream", stream), slog.String("line", text))
}

// keep puts l into the ring. The ring starts empty and grows (doubling, up
// to size) while fewer than size lines were written, so an idle pool's
// engine that printed a few lines holds a few lines' worth, not size.
// Called with s.mu held.
func (s *Sink) keep(l Line) {
	if len(s.ring) < s.size {
		if len(s.ring) == cap(s.ring) {
			grown := make([]Line, len(s.ring), min(s.size, max(2*cap(s.ring), ringMinCap)))
			copy(grown, s.ring)
			s.ring = grown
		}
		s.ring = append(s.ring, l)
		s.next = len(s.ring) % s.size
		return
	}
	s.ring[s.next] = l
	s.next = (s.next + 1) % s.size
}

// ringMinCap is the ring's first allocation, in lines.
const ringMinCap = 16

// take spends a line token and n byte tokens when both buckets hold enough,
// after refilling them. Called with s.mu held.
func (s *Sink) take(now time.Time, n int) bool {
	if !s.refilledAt.IsZero() {
		secs := now.Sub(s.refilledAt).Seconds()
		s.lines.refill(secs)
		s.bytes.refill(secs)
	}
	s.refilledAt = now
	if !s.lines.has(1) || !s.bytes.has(float64(n)) {
		return false
	}
	s.lines.spend(1)
	s.bytes.spend(float64(n))
	return true
}

// cut counts n bytes of an over-long line that were left out of the ring
// and the log (see lineWriter); they are reported with the next drop
// report.
func (s *Sink) cut(n int) {
	if s == nil || n <= 0 {
		return
	}
	s.mu.Lock()
	s.unreportedBytes += uint64(n)
	onDrop := s.onDrop
	s.mu.Unlock()
	s.droppedBytes.Add(uint64(n))
	if onDrop != nil {
		onDrop(0, n)
	}
}

// reportDrops logs the drops not yet reported, so a flood that ends with the
// engine still shows up in the log. Called when an engine process ends.
func (s *Sink) reportDrops() {
	if s == nil {
		return
	}
	s.mu.Lock()
	n, b := s.unreported, s.unreportedBytes
	s.unreported, s.unreportedBytes = 0, 0
	s.mu.Unlock()
	if n > 0 || b > 0 {
		s.logger.LogAttrs(context.Background(), slog.LevelWarn, logMsgDropped, slog.Uint64("dropped", n), slog.Uint64("dropped_bytes", b))
	}
}

// Tail returns the last n lines, oldest first (fewer when fewer were kept).
func (s *Sink) Tail(n int) []Line {
	if s == nil || n <= 0 {
		return []Line{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Until the ring is full, next == len(s.ring): the same arithmetic
	// holds with the ring's current length as its size.
	size := len(s.ring)
	n = min(n, size)
	out := make([]Line, n)
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
// limits; they are still in the ring.
func (s *Sink) Dropped() uint64 {
	if s == nil {
		return 0
	}
	return s.dropped.Load()
}

// DroppedBytes counts bytes of output the logger never got: those of the
// lines Dropped counts, and the parts of over-long lines that were cut
// (those are in neither the ring nor the log).
func (s *Sink) DroppedBytes() uint64 {
	if s == nil {
		return 0
	}
	return s.droppedBytes.Load()
}

// SetOnDrop sets a callback (for metrics) run outside the sink's lock, once
// per dropped line with (1, its bytes) and once per cut of an over-long line
// with (0, bytes cut); it must not block.
func (s *Sink) SetOnDrop(f func(lines, bytes int)) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.onDrop = f
	s.mu.Unlock()
}
