package engine

import (
	"strconv"
	"testing"
)

// The ring holds what was written, not its full size: a sink that got a few
// lines has allocated a few lines' worth. While it grows and after it wraps,
// Tail returns the last lines in order, and it never holds more than its size.
func TestSinkRingGrowsAsLinesCome(t *testing.T) {
	const size = 100
	s := NewSink(nil, size, 0, 0)
	for i := range 3 {
		s.Write(StreamStdout, strconv.Itoa(i))
	}
	if c := cap(s.ring); c > ringMinCap {
		t.Fatalf("3 lines into a ring of %d: cap %d, want <= %d", size, c, ringMinCap)
	}
	for written := 3; written <= 2*size+7; written++ {
		for _, n := range []int{1, 7, size, 2 * size} {
			tail := s.Tail(n)
			want := min(n, written, size)
			if len(tail) != want {
				t.Fatalf("after %d lines: Tail(%d) has %d lines, want %d", written, n, len(tail), want)
			}
			for i, l := range tail {
				if w := strconv.Itoa(written - want + i); l.Text != w {
					t.Fatalf("after %d lines: Tail(%d)[%d] = %q, want %q", written, n, i, l.Text, w)
				}
			}
		}
		if cap(s.ring) > size {
			t.Fatalf("after %d lines: cap %d > size %d", written, cap(s.ring), size)
		}
		s.Write(StreamStdout, strconv.Itoa(written))
	}
}
