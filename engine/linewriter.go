// This file splits the byte stream of one output pipe into lines.

package engine

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"unicode/utf8"

	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// maxLineBytes is the longest line kept; a longer one keeps its first
// maxLineBytes (cut at a UTF-8 boundary) followed by truncMarker, and the
// rest of it, up to its newline, is dropped and counted in the sink's
// DroppedBytes. It is far above any real engine's log line (vLLM's config
// dump is a few KiB), below journald's 48 KiB LineMax even after JSON
// escaping, and bounds a pool's ring at DefaultRingSize*16 KiB.
const maxLineBytes = 16 << 10

// truncMarker ends a line that was cut at maxLineBytes.
const truncMarker = " …[line truncated at 16 KiB]"

// readBufBytes is the buffer ReadFrom reads a pipe with. Engine lines are
// short and come a few at a time; io.Copy's default 32 KiB, held by each of
// a pool's two copying goroutines while they wait on an idle engine, was
// most of an idle pool's memory.
const readBufBytes = 2 << 10

// keepBufBytes bounds the line buffer kept between lines: one that grew past
// it for a long line is let go once that line is out.
const keepBufBytes = 4 << 10

// lineWriter is the io.Writer os/exec copies one pipe into; exec's copying
// goroutine is its only writer (through ReadFrom, which io.Copy prefers).
// Each Write marks activity; each complete line goes to the sink. It holds
// at most maxLineBytes of a line.
type lineWriter struct {
	stream   string
	sink     *Sink
	clock    clock.Clock   // stamps activity
	activity *atomic.Int64 // unix nanos of the last Write, on clock
	notify   chan struct{} // gets a value per line, without blocking; nil: none
	buf      []byte        // the current, unterminated line
	skipping bool          // the current line was cut: drop up to its newline
	last     atomic.Pointer[string]
	recent   recentLines // this process's last lines on this stream (Process.RecentLines)
}

func (w *lineWriter) Write(b []byte) (int, error) {
	n := len(b)
	if n == 0 {
		return 0, nil
	}
	w.activity.Store(w.clock.Now().UnixNano())
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if w.skipping {
			if i < 0 {
				w.sink.cut(len(b))
				break
			}
			w.sink.cut(i)
			w.skipping = false
			b = b[i+1:]
			continue
		}
		if i < 0 {
			w.buf = append(w.buf, b...)
			if len(w.buf) > maxLineBytes { // emit the head now; drop the rest as it comes
				w.emitCut(w.buf)
				w.buf = w.buf[:0]
				w.skipping = true
			}
			break
		}
		line := b[:i]
		if len(w.buf) > 0 {
			w.buf = append(w.buf, line...)
			line = w.buf
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) > maxLineBytes {
			w.emitCut(line)
		} else {
			w.emit(line)
		}
		w.buf = w.buf[:0]
		if cap(w.buf) > keepBufBytes {
			w.buf = nil
		}
		b = b[i+1:]
	}
	return n, nil
}

// ReadFrom reads r until EOF with a readBufBytes buffer and writes what it
// reads; io.Copy (and so os/exec's copying goroutine) calls it instead of
// copying through a 32 KiB buffer of its own.
func (w *lineWriter) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, readBufBytes)
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			total += int64(n)
			_, _ = w.Write(buf[:n])
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// flush emits an unterminated last line; called once the pipe is closed.
func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.emit(bytes.TrimSuffix(w.buf, []byte{'\r'}))
	}
	w.buf = nil
	w.skipping = false
}

// emitCut emits the first maxLineBytes of an over-long line with the
// marker, and counts the rest as cut.
func (w *lineWriter) emitCut(line []byte) {
	cut := runeCut(line, maxLineBytes)
	w.sink.cut(len(line) - cut)
	w.emit(append(line[:cut:cut], truncMarker...))
}

func (w *lineWriter) emit(line []byte) {
	text := string(line)
	w.last.Store(&text)
	w.recent.add(text)
	w.sink.Write(w.stream, text)
	if w.notify != nil {
		select {
		case w.notify <- struct{}{}:
		default: // a value is already waiting: it stands for this line too
		}
	}
}

// lastLine is the last line emitted ("" if none).
func (w *lineWriter) lastLine() string {
	if p := w.last.Load(); p != nil {
		return *p
	}
	return ""
}

// runeCut returns where to split b so that the first part is at most limit
// bytes and, where possible, does not end inside a UTF-8 sequence.
func runeCut(b []byte, limit int) int {
	if len(b) <= limit {
		return len(b)
	}
	for cut := limit; cut > limit-utf8.UTFMax && cut > 0; cut-- {
		if utf8.RuneStart(b[cut]) {
			return cut
		}
	}
	return limit
}
