package engine

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// Lines are split on \n (a \r before it dropped); every Write stamps the
// activity, and the sink the lines, on the process's clock.
func TestLineWriterSplitsLines(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	sink := NewSink(nil, 100, 0, 0)
	sink.SetClock(clk)
	var act atomic.Int64
	w := &lineWriter{stream: StreamStdout, sink: sink, clock: clk, activity: &act}
	for _, chunk := range []string{"one\ntw", "o\r\n", "", "\nthree", " and more"} {
		if n, err := w.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", chunk, n, err)
		}
	}
	w.flush()
	var got []string
	for _, l := range sink.Tail(10) {
		got = append(got, l.Text)
	}
	if strings.Join(got, "|") != "one|two||three and more" {
		t.Fatalf("lines = %q", got)
	}
	if act.Load() != clk.Now().UnixNano() || w.lastLine() != "three and more" {
		t.Fatalf("activity %d (want the clock's %d), last line %q", act.Load(), clk.Now().UnixNano(), w.lastLine())
	}
	clk.Advance(time.Minute)
	if _, err := w.Write([]byte("four\n")); err != nil {
		t.Fatal(err)
	}
	if got := time.Unix(0, act.Load()); !got.Equal(clk.Now()) {
		t.Fatalf("activity %v after Advance, want the clock's %v", got, clk.Now())
	}
	if l := sink.Tail(1)[0]; !l.At.Equal(clk.Now()) {
		t.Fatalf("line stamped %v, want the sink's clock %v", l.At, clk.Now())
	}
}

// A line longer than maxLineBytes keeps its first maxLineBytes (cut at a
// UTF-8 boundary) and a marker; the rest, up to its newline, is dropped and
// counted. The buffer never holds more than one line's worth.
func TestLineWriterTruncatesLongLines(t *testing.T) {
	sink := NewSink(nil, 100, 0, 0)
	var act atomic.Int64
	w := &lineWriter{stream: StreamStderr, sink: sink, clock: clock.Real{}, activity: &act}
	long := strings.Repeat("é", maxLineBytes) // 2 bytes per rune: 2*maxLineBytes bytes
	for i := 0; i < len(long); i += 1000 {    // arrives in chunks, as from a pipe
		_, _ = w.Write([]byte(long[i:min(i+1000, len(long))]))
		if cap(w.buf) > 2*maxLineBytes {
			t.Fatalf("line buffer grew to %d bytes", cap(w.buf))
		}
	}
	_, _ = w.Write([]byte("\nshort\n" + long + "\n"))
	w.flush()
	lines := sink.Tail(10)
	if len(lines) != 3 || lines[1].Text != "short" {
		t.Fatalf("got %d lines, want 3 (long, short, long)", len(lines))
	}
	for _, i := range []int{0, 2} {
		text := lines[i].Text
		head, marker, ok := strings.Cut(text, truncMarker)
		if !ok || marker != "" || len(head) > maxLineBytes || len(head) < maxLineBytes-utf8.UTFMax || !strings.HasPrefix(long, head) || !utf8.ValidString(text) {
			t.Fatalf("line %d: %d bytes, marker %v, valid UTF-8 %v", i, len(text), ok, utf8.ValidString(text))
		}
	}
	want := uint64(2 * (len(long) - len(strings.TrimSuffix(lines[0].Text, truncMarker))))
	if got := sink.DroppedBytes(); got != want {
		t.Fatalf("DroppedBytes = %d, want %d (what was cut)", got, want)
	}
}
