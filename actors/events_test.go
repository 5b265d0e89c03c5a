package actors

import (
	"fmt"
	"testing"
)

// The backlog keeps the last EventBacklog transitions across the ring's
// wrap, and a resume gets exactly those after its id, or why not.
func TestEventLogResume(t *testing.T) {
	var l eventLog
	if missed, reset := l.since(""); missed != nil || reset != "" {
		t.Fatalf("no Last-Event-ID: %v %q", missed, reset)
	}
	total := EventBacklog + 300
	for i := 1; i <= total; i++ {
		if got := l.add(Transition{PoolID: fmt.Sprint(i)}); got.Seq != uint64(i) {
			t.Fatalf("event %d numbered %d", i, got.Seq)
		}
	}
	oldest := uint64(total - EventBacklog + 1)
	for _, after := range []uint64{oldest - 1, oldest, uint64(total) - 1, uint64(total)} {
		missed, reset := l.since(EventID(l.run, after))
		if reset != "" || len(missed) != int(uint64(total)-after) {
			t.Fatalf("after %d: %d events, reset %q; want %d", after, len(missed), reset, uint64(total)-after)
		}
		for i, m := range missed {
			if want := after + uint64(i) + 1; m.Seq != want || m.PoolID != fmt.Sprint(want) {
				t.Fatalf("after %d: event %d is %+v, want seq %d", after, i, m, want)
			}
		}
	}
	for id, want := range map[string]string{
		EventID(l.run, oldest-2):          ResetExpired,
		EventID(l.run, 0):                 ResetExpired,
		EventID(l.run, uint64(total)+1):   ResetUnknown,
		EventID(l.run+"0", uint64(total)): ResetOtherRun,
		"garbage":                         ResetUnknown,
		l.run + "-":                       ResetUnknown,
		"-5":                              ResetUnknown,
	} {
		if missed, reset := l.since(id); reset != want || missed != nil {
			t.Errorf("since(%q) = %d events, reset %q; want reset %q", id, len(missed), reset, want)
		}
	}
}

// A daemon run that has published nothing yet: its "<run>-0" resumes with
// nothing missed.
func TestEventLogEmpty(t *testing.T) {
	var l eventLog
	l.since("")
	if missed, reset := l.since(EventID(l.run, 0)); missed != nil || reset != "" {
		t.Fatalf("since(run-0) on an empty log: %v %q", missed, reset)
	}
	if len(l.run) != 8 {
		t.Fatalf("run id %q, want 8 hex digits", l.run)
	}
}
