package engine

import (
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf8"
)

func TestLineWriterSplitsLines(t *testing.T) {
	sink := NewSink(nil, 100, 0, 0)
	var act atomic.Int64
	w := &lineWriter{stream: StreamStdout, sink: sink, activity: &act}
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
	if act.Load() == 0 || w.lastLine() != "three and more" {
		t.Fatalf("activity %d, last line %q", act.Load(), w.lastLine())
	}
}

func TestLineWriterSplitsLongLines(t *testing.T) {
	sink := NewSink(nil, 100, 0, 0)
	var act atomic.Int64
	w := &lineWriter{stream: StreamStderr, sink: sink, activity: &act}
	long := strings.Repeat("é", maxLineBytes) // 2 bytes per rune: 2*maxLineBytes bytes
	for i := 0; i < len(long); i += 1000 {    // arrives in chunks, as from a pipe
		_, _ = w.Write([]byte(long[i:min(i+1000, len(long))]))
	}
	_, _ = w.Write([]byte("\nshort\n"))
	lines := sink.Tail(10)
	var joined strings.Builder
	for _, l := range lines[:len(lines)-1] {
		if len(l.Text) > maxLineBytes || !utf8.ValidString(l.Text) {
			t.Fatalf("piece of %d bytes, valid UTF-8 %v", len(l.Text), utf8.ValidString(l.Text))
		}
		joined.WriteString(l.Text)
	}
	if joined.String() != long || len(lines) < 3 || lines[len(lines)-1].Text != "short" {
		t.Fatalf("long line not split losslessly: %d pieces", len(lines))
	}
}
