package engine_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// logBuffer is a goroutine-safe io.Writer for a slog handler.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records decodes the JSON log records written so far.
func (b *logBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("bad log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestSinkForwardsToLogger(t *testing.T) {
	var logs logBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil)).With("pool_id", "p1")
	sink := engine.NewSink(logger, 10, 0, 0)
	sink.Write("stdout", "hello")
	sink.Write("stderr", "warn: x")
	recs := logs.records(t)
	if len(recs) != 2 {
		t.Fatalf("got %d records, want 2: %v", len(recs), recs)
	}
	for i, want := range []struct{ stream, line string }{{"stdout", "hello"}, {"stderr", "warn: x"}} {
		r := recs[i]
		if r["msg"] != "engine output" || r["pool_id"] != "p1" || r["stream"] != want.stream || r["line"] != want.line {
			t.Errorf("record %d = %v", i, r)
		}
	}
}

// The rate limit drops what exceeds the burst, counts it, keeps every line
// in the ring, and reports the drops in one record once tokens come back.
// The sink runs on a fake clock, so no token comes back mid-flood (on a
// busy machine a real clock refilled some, and a drop report came between
// the lines).
func TestSinkRateLimit(t *testing.T) {
	var logs logBuffer
	sink := engine.NewSink(slog.New(slog.NewJSONHandler(&logs, nil)), 1000, 100, 5)
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	sink.SetClock(clk)
	var onDrop atomic.Uint64
	sink.SetOnDrop(func(lines, _ int) { onDrop.Add(uint64(lines)) })
	const n, burst = 300, 5
	for i := range n {
		sink.Write("stdout", fmt.Sprintf("line %d", i))
	}
	if dropped := sink.Dropped(); dropped != n-burst {
		t.Fatalf("Dropped = %d of %d lines with burst %d, want %d", dropped, n, burst, n-burst)
	}
	if onDrop.Load() != n-burst {
		t.Fatalf("OnDrop counted %d lines, want %d", onDrop.Load(), n-burst)
	}
	count := func(msg string) (int, map[string]any) {
		k, last := 0, map[string]any(nil)
		for _, r := range logs.records(t) {
			if r["msg"] == msg {
				k, last = k+1, r
			}
		}
		return k, last
	}
	if logged, _ := count("engine output"); logged != burst {
		t.Fatalf("logged %d lines of the flood, want the burst of %d", logged, burst)
	}
	if k, _ := count("engine output dropped"); k != 0 {
		t.Fatalf("%d drop reports before any token came back, want none", k)
	}
	tail := sink.Tail(n)
	if len(tail) != n {
		t.Fatalf("ring holds %d lines, want all %d", len(tail), n)
	}
	for i, l := range tail {
		if l.Text != fmt.Sprintf("line %d", i) {
			t.Fatalf("ring line %d = %q", i, l.Text)
		}
	}

	// Once tokens come back, one record reports how many were dropped, and
	// the next line is logged again.
	clk.Advance(time.Second)
	sink.Write("stdout", "after the flood")
	k, summary := count("engine output dropped")
	if k != 1 {
		t.Fatalf("%d drop reports after the refill, want 1", k)
	}
	if got, ok := summary["dropped"].(float64); !ok || got != n-burst {
		t.Fatalf("summary = %v, want dropped = %d", summary, n-burst)
	}
	if logged, last := count("engine output"); logged != burst+1 || last["line"] != "after the flood" {
		t.Fatalf("after the refill: %d lines logged, last %v; want %d, the last \"after the flood\"", logged, last, burst+1)
	}
}

func TestSinkRingWrapsAndTails(t *testing.T) {
	sink := engine.NewSink(nil, 3, 0, 0)
	if got := sink.Tail(5); len(got) != 0 {
		t.Fatalf("empty Tail = %v", got)
	}
	for i := range 5 {
		sink.Write("stdout", fmt.Sprint(i))
	}
	sink.Write("stderr", "e")
	var texts []string
	for _, l := range sink.Tail(10) {
		texts = append(texts, l.Text)
	}
	if got := strings.Join(texts, ","); got != "3,4,e" {
		t.Fatalf("Tail(10) = %s, want 3,4,e", got)
	}
	if got := sink.Tail(1); len(got) != 1 || got[0].Text != "e" || got[0].Stream != "stderr" {
		t.Fatalf("Tail(1) = %v", got)
	}
	if sink.LastLine("stdout") != "4" || sink.LastLine("stderr") != "e" || sink.LastLine("other") != "" {
		t.Fatal("LastLine wrong")
	}
	var nilSink *engine.Sink
	nilSink.Write("stdout", "x") // must not panic
	if nilSink.Tail(3) == nil || nilSink.Dropped() != 0 {
		t.Fatal("nil sink")
	}
}

func TestSinkConcurrent(t *testing.T) {
	sink := engine.NewSink(nil, 50, 10, 10)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				sink.Write("stdout", fmt.Sprintf("%d-%d", g, i))
				_ = sink.Tail(5)
				_ = sink.LastLine("stdout")
			}
		})
	}
	wg.Wait()
	if len(sink.Tail(100)) != 50 || sink.Dropped() == 0 {
		t.Fatalf("tail %d dropped %d", len(sink.Tail(100)), sink.Dropped())
	}
}

func TestSimSpamIsRateLimited(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	sink := engine.NewSink(slog.New(slog.NewJSONHandler(&logs, nil)), 1000, 50, 20)
	p, _ := startSim(t, sink, "--spam", "2000")
	waitFor(t, 10*time.Second, "a full ring and dropped spam", func() bool {
		return sink.Dropped() > 100 && len(sink.Tail(1000)) == 1000
	})
	if e := p.Stop(5 * time.Second); e.Code != 0 {
		t.Fatalf("Stop = %v", e)
	}
	// Every line was either logged or counted as dropped, and every drop
	// was reported (the last ones when the engine ended).
	var spamLines int
	for _, l := range sink.Tail(1000) {
		var n int
		if _, err := fmt.Sscanf(l.Text, "sim-engine: spam line %d:", &n); err == nil {
			spamLines = max(spamLines, n)
		}
	}
	total := uint64(spamLines) + 3 // loading, ready, shutting down
	var logged, reported uint64
	for _, r := range logs.records(t) {
		switch r["msg"] {
		case "engine output":
			logged++
		case "engine output dropped":
			reported += uint64(r["dropped"].(float64))
		}
	}
	if logged+sink.Dropped() != total || reported != sink.Dropped() {
		t.Fatalf("logged %d + dropped %d != %d lines written; %d drops reported", logged, sink.Dropped(), total, reported)
	}
}

// The limiter bounds bytes as well as lines: lines well within the line
// rate but long are dropped once the byte budget is spent, and counted.
func TestSinkByteLimit(t *testing.T) {
	var logs logBuffer
	sink := engine.NewSink(slog.New(slog.NewJSONHandler(&logs, nil)), 1000, 1000, 1000)
	sink.SetByteLimit(1000, 10_000)
	var lines, bytes atomic.Uint64
	sink.SetOnDrop(func(l, b int) { lines.Add(uint64(l)); bytes.Add(uint64(b)) })
	line := strings.Repeat("x", 1000)
	for range 100 {
		sink.Write("stdout", line)
	}
	var logged int
	for _, r := range logs.records(t) {
		if r["msg"] == "engine output" {
			logged++
		}
	}
	if logged > 12 || logged < 9 {
		t.Fatalf("logged %d lines of 1000 bytes with a 10000-byte burst", logged)
	}
	if d := sink.Dropped(); d != uint64(100-logged) || lines.Load() != d {
		t.Fatalf("Dropped = %d, OnDrop lines %d; want %d", d, lines.Load(), 100-logged)
	}
	if d := sink.DroppedBytes(); d != uint64(1000*(100-logged)) || bytes.Load() != d {
		t.Fatalf("DroppedBytes = %d, OnDrop bytes %d; want %d", d, bytes.Load(), 1000*(100-logged))
	}
	if len(sink.Tail(1000)) != 100 {
		t.Fatal("the ring lost lines")
	}
}

// A real process writing long lines as fast as it can: the log gets at
// most the byte burst plus the byte rate over the run, each ring line is
// at most the line limit, and every dropped line and byte is counted and
// reported.
func TestLongLineFloodIsBounded(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	sink := engine.NewSink(slog.New(slog.NewJSONHandler(&logs, nil)), 1000, 200, 400) // the line rate and burst actors pass
	start := time.Now()
	p, err := engine.Start(engine.Spec{PoolID: t.Name(), Sink: sink,
		Argv: []string{"sh", "-c", `exec yes "$(printf '%*s' 100000 '' | tr ' ' x)"`}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(0) })
	waitFor(t, 30*time.Second, "20 MB of long lines", func() bool { return sink.DroppedBytes() > 20<<20 })
	p.Stop(5 * time.Second)
	elapsed := time.Since(start)
	var logged, reportedLines, reportedBytes uint64
	for _, r := range logs.records(t) {
		switch r["msg"] {
		case "engine output":
			logged += uint64(len(r["line"].(string)))
		case "engine output dropped":
			reportedLines += uint64(r["dropped"].(float64))
			reportedBytes += uint64(r["dropped_bytes"].(float64))
		}
	}
	bound := uint64(engine.DefaultLogByteBurst) + uint64(elapsed.Seconds()*engine.DefaultLogBytesPerSec) + 32<<10
	if logged > bound {
		t.Fatalf("logged %d bytes of engine output in %s, bound %d", logged, elapsed, bound)
	}
	for _, l := range sink.Tail(1000) {
		if len(l.Text) > 17<<10 {
			t.Fatalf("a ring line of %d bytes", len(l.Text))
		}
	}
	if reportedLines != sink.Dropped() || reportedBytes != sink.DroppedBytes() {
		t.Fatalf("reported %d lines / %d bytes dropped, counted %d / %d", reportedLines, reportedBytes, sink.Dropped(), sink.DroppedBytes())
	}
	t.Logf("%s: logged %d bytes, dropped %d lines and %d bytes", elapsed, logged, sink.Dropped(), sink.DroppedBytes())
}

// The rate limits refill on the sink's clock: a burst spent, nothing more
// is forwarded until that clock moves on, and one second of it brings back
// one second's worth.
func TestSinkRefillsOnItsClock(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	sink := engine.NewSink(nil, 100, 10, 10)
	sink.SetClock(clk)
	for i := range 15 {
		sink.Write("stdout", fmt.Sprint(i))
	}
	if d := sink.Dropped(); d != 5 {
		t.Fatalf("dropped %d of 15 lines with a burst of 10 and a frozen clock, want 5", d)
	}
	clk.Advance(time.Second)
	for i := range 15 {
		sink.Write("stdout", fmt.Sprint(i))
	}
	if d := sink.Dropped(); d != 10 {
		t.Fatalf("dropped %d in all after one second of the sink's clock at 10 lines/s, want 10", d)
	}
	if at := sink.Tail(1)[0].At; !at.Equal(clk.Now()) {
		t.Fatalf("line stamped %v, want the sink's clock %v", at, clk.Now())
	}
}
