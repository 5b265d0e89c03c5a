// This file splits the byte stream of one output pipe into lines.

package engine

import (
	"bytes"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// maxLineBytes is the longest line kept whole; a longer one is split into
// pieces of at most this size (at a UTF-8 boundary), never dropped. It is far
// above any real engine's log line (vLLM's config dump is a few KiB), below
// journald's 48 KiB LineMax even after JSON escaping, and bounds a pool's
// ring at DefaultRingSize*16 KiB.
const maxLineBytes = 16 << 10

// lineWriter is the io.Writer os/exec copies one pipe into; exec's copying
// goroutine is its only writer. Each Write marks activity; each complete
// line goes to the sink.
type lineWriter struct {
	stream   string
	sink     *Sink
	activity *atomic.Int64
	buf      []byte // the current, unterminated line
	last     atomic.Pointer[string]
}

func (w *lineWriter) Write(b []byte) (int, error) {
	n := len(b)
	if n == 0 {
		return 0, nil
	}
	w.activity.Store(time.Now().UnixNano())
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			w.buf = append(w.buf, b...)
			for len(w.buf) > maxLineBytes {
				cut := runeCut(w.buf, maxLineBytes)
				w.emit(w.buf[:cut])
				w.buf = append(w.buf[:0], w.buf[cut:]...)
			}
			break
		}
		line := b[:i]
		if len(w.buf) > 0 {
			w.buf = append(w.buf, line...)
			line = w.buf
		}
		w.emitLong(bytes.TrimSuffix(line, []byte{'\r'}))
		w.buf = w.buf[:0]
		b = b[i+1:]
	}
	return n, nil
}

// flush emits an unterminated last line; called once the pipe is closed.
func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.emitLong(bytes.TrimSuffix(w.buf, []byte{'\r'}))
		w.buf = nil
	}
}

func (w *lineWriter) emitLong(line []byte) {
	for len(line) > maxLineBytes {
		cut := runeCut(line, maxLineBytes)
		w.emit(line[:cut])
		line = line[cut:]
	}
	w.emit(line)
}

func (w *lineWriter) emit(line []byte) {
	text := string(line)
	w.last.Store(&text)
	w.sink.Write(w.stream, text)
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
