package engine

import (
	"fmt"
	"io"
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

// readSizes is a reader that records the size of every Read it is asked for.
type readSizes struct {
	r     io.Reader
	sizes []int
}

func (s *readSizes) Read(p []byte) (int, error) {
	s.sizes = append(s.sizes, len(p))
	return s.r.Read(p)
}

// io.Copy into a lineWriter (as os/exec's copying goroutine does) reads
// with the writer's small buffer, not io.Copy's 32 KiB, and lines split
// across reads arrive whole.
func TestLineWriterReadsWithSmallBuffer(t *testing.T) {
	sink := NewSink(nil, 1000, 0, 0)
	var act atomic.Int64
	w := &lineWriter{stream: StreamStdout, sink: sink, clock: clock.Real{}, activity: &act}
	var want []string
	var in strings.Builder
	for i := range 500 {
		l := fmt.Sprintf("line %d %s", i, strings.Repeat("x", i%97))
		want = append(want, l)
		in.WriteString(l + "\n")
	}
	src := &readSizes{r: strings.NewReader(in.String())}
	n, err := io.Copy(w, src)
	if err != nil || n != int64(in.Len()) {
		t.Fatalf("io.Copy = %d, %v; want %d, nil", n, err, in.Len())
	}
	for _, sz := range src.sizes {
		if sz > readBufBytes {
			t.Fatalf("read with a %d-byte buffer, want <= %d", sz, readBufBytes)
		}
	}
	var got []string
	for _, l := range sink.Tail(1000) {
		got = append(got, l.Text)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got %d lines, want %d, or they differ", len(got), len(want))
	}
}

// After a long line is out, its buffer is not kept for the next short ones.
func TestLineWriterLetsGoOfLongLineBuffer(t *testing.T) {
	sink := NewSink(nil, 10, 0, 0)
	var act atomic.Int64
	w := &lineWriter{stream: StreamStdout, sink: sink, clock: clock.Real{}, activity: &act}
	long := strings.Repeat("y", 3*keepBufBytes)
	for i := 0; i < len(long); i += 1000 { // an unterminated line, in pieces
		_, _ = w.Write([]byte(long[i:min(i+1000, len(long))]))
	}
	_, _ = w.Write([]byte("\nshort\n"))
	if cap(w.buf) > keepBufBytes {
		t.Fatalf("line buffer keeps %d bytes after the long line", cap(w.buf))
	}
	if tail := sink.Tail(2); len(tail) != 2 || tail[0].Text != long || tail[1].Text != "short" {
		t.Fatalf("lines = %d", len(tail))
	}
}
