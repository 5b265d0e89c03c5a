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

func TestSinkRateLimit(t *testing.T) {
	var logs logBuffer
	sink := engine.NewSink(slog.New(slog.NewJSONHandler(&logs, nil)), 1000, 100, 5)
	var onDrop atomic.Uint64
	sink.SetOnDrop(func() { onDrop.Add(1) })
	const n = 300
	for i := range n {
		sink.Write("stdout", fmt.Sprintf("line %d", i))
	}
	dropped := sink.Dropped()
	if dropped == 0 || dropped >= n {
		t.Fatalf("Dropped = %d of %d lines with burst 5", dropped, n)
	}
	if onDrop.Load() != dropped {
		t.Fatalf("OnDrop ran %d times, Dropped = %d", onDrop.Load(), dropped)
	}
	logged := len(logs.records(t))
	if uint64(logged)+dropped != n {
		t.Fatalf("logged %d + dropped %d != %d written", logged, dropped, n)
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

	// Once tokens come back, one record reports how many were dropped.
	var summary map[string]any
	waitFor(t, 5*time.Second, "the drop summary record", func() bool {
		sink.Write("stdout", "after the flood")
		for _, r := range logs.records(t) {
			if r["msg"] == "engine output dropped" {
				summary = r
				return true
			}
		}
		return false
	})
	if got, ok := summary["dropped"].(float64); !ok || got < float64(dropped) {
		t.Fatalf("summary = %v, want dropped >= %d", summary, dropped)
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
