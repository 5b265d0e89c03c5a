package actors

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
)

// EventBacklog is how many of the latest transitions the registry keeps, so
// an event-stream client that reconnects with Last-Event-ID gets what it
// missed. At a few hundred bytes each this is well under a megabyte.
const EventBacklog = 1024

// Why a resume cannot replay the missed events (SubscribeReply.Reset). The
// client must re-read the pools; what follows the reset is live.
const (
	ResetOtherRun = "other_run" // the id is from another run of the daemon (it restarted)
	ResetExpired  = "expired"   // events after the id have left the backlog
	ResetUnknown  = "unknown"   // not an id this daemon gives out (malformed, or ahead of it)
)

// eventLog numbers the transitions the registry publishes and keeps the
// latest EventBacklog of them. Only the registry actor touches it, so a
// resume (backlog then live) and the fan-out never interleave.
type eventLog struct {
	run  string       // changes with every registry start: ids of an old run are stale
	seq  uint64       // the last number given out; 0 before the first event
	ring []Transition // the backlog, oldest at ring[head] once full
	head int
}

// newEventLog starts an empty backlog with a fresh random run id, so ids
// of a previous daemon run are recognised as another run's.
func newEventLog() eventLog {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return eventLog{run: hex.EncodeToString(b[:]), ring: make([]Transition, 0, EventBacklog)}
}

// add numbers t, keeps it in the backlog and returns it numbered.
func (l *eventLog) add(t Transition) Transition {
	if l.ring == nil {
		*l = newEventLog()
	}
	l.seq++
	t.Seq = l.seq
	if len(l.ring) < EventBacklog {
		l.ring = append(l.ring, t)
	} else {
		l.ring[l.head] = t
		l.head = (l.head + 1) % EventBacklog
	}
	return t
}

// since answers a resume from lastID (a Last-Event-ID; "" for none): the
// events after it, oldest first, or why they cannot be given.
func (l *eventLog) since(lastID string) (missed []Transition, reset string) {
	if l.ring == nil {
		*l = newEventLog()
	}
	if lastID == "" {
		return nil, ""
	}
	run, seq, ok := ParseEventID(lastID)
	switch {
	case !ok:
		return nil, ResetUnknown
	case run != l.run:
		return nil, ResetOtherRun
	case seq > l.seq:
		return nil, ResetUnknown
	case seq == l.seq:
		return nil, ""
	}
	oldest := l.seq - uint64(len(l.ring)) + 1 // the backlog holds oldest..seq
	if seq+1 < oldest {
		return nil, ResetExpired
	}
	n := int(l.seq - seq)
	missed = make([]Transition, 0, n)
	for i := len(l.ring) - n; i < len(l.ring); i++ {
		missed = append(missed, l.ring[(l.head+i)%len(l.ring)])
	}
	return missed, ""
}

// EventID is the SSE id of event seq of run: "<run>-<seq>", run being 8 hex
// digits that change at every daemon start and seq counting from 1. Clients
// should treat it as opaque and send it back in Last-Event-ID.
func EventID(run string, seq uint64) string { return run + "-" + strconv.FormatUint(seq, 10) }

// ParseEventID splits an EventID; false when id is not one.
func ParseEventID(id string) (run string, seq uint64, ok bool) {
	run, num, found := strings.Cut(id, "-")
	if !found || run == "" {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return "", 0, false
	}
	return run, seq, true
}

// SubscribeEvents is Subscribe for an event stream that may resume: the
// registry answers SubscribeReply with the events after LastEventID (a
// client's Last-Event-ID, "" for none) from its backlog, or why it cannot,
// and registers Ch for every later transition, in one step, so the client
// gets each event exactly once. Ch is removed with Unsubscribe.
type SubscribeEvents struct {
	Ch          chan Transition
	LastEventID string
}

// SubscribeReply answers SubscribeEvents.
type SubscribeReply struct {
	Run    string       // this run's id prefix: EventID(Run, t.Seq) is t's id
	Last   uint64       // the last event published before Ch was registered
	Missed []Transition // the events after LastEventID, oldest first
	Reset  string       // "" or Reset*: the missed events cannot be replayed
}
