package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// sseBlock is one blank-line-terminated block of an event stream, fields as
// sent (a block without data, e.g. the opening one, is kept too).
type sseBlock struct {
	ID, Event, Data, Retry string
	HasID                  bool
}

// sseStream is a real HTTP client of /v1/events.
type sseStream struct {
	t      *testing.T
	blocks chan sseBlock
	cancel context.CancelFunc
}

// openEvents connects to /v1/events, sending lastID as Last-Event-ID
// unless it is "".
func openEvents(t *testing.T, base, lastID string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/events", nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		t.Fatalf("GET /v1/events: HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sseStream{t: t, blocks: make(chan sseBlock, 4096), cancel: cancel}
	t.Cleanup(s.close)
	go func() {
		defer resp.Body.Close()
		defer close(s.blocks)
		sc := bufio.NewScanner(resp.Body)
		var b sseBlock
		seen := false
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				if seen {
					s.blocks <- b
				}
				b, seen = sseBlock{}, false
				continue
			}
			if strings.HasPrefix(line, ":") {
				continue
			}
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			seen = true
			switch field {
			case "id":
				b.ID, b.HasID = value, true
			case "event":
				b.Event = value
			case "data":
				b.Data = value
			case "retry":
				b.Retry = value
			}
		}
	}()
	return s
}

func (s *sseStream) close() { s.cancel() }

// next returns the next block, failing the test after waitLimit.
func (s *sseStream) next() sseBlock {
	s.t.Helper()
	select {
	case b, ok := <-s.blocks:
		if !ok {
			s.t.Fatal("the event stream ended")
		}
		return b
	case <-time.After(waitLimit):
		s.t.Fatalf("no event within %s", waitLimit)
	}
	return sseBlock{}
}

// event returns the next pool_state event as (id, transition).
func (s *sseStream) event() (string, actors.Transition) {
	s.t.Helper()
	b := s.next()
	if b.Event != "pool_state" || !b.HasID {
		s.t.Fatalf("got %+v, want a pool_state event with an id", b)
	}
	var tr actors.Transition
	if err := json.Unmarshal([]byte(b.Data), &tr); err != nil {
		s.t.Fatalf("bad pool_state data %q: %v", b.Data, err)
	}
	return b.ID, tr
}

func seqOf(t *testing.T, id string) (string, uint64) {
	t.Helper()
	run, seq, ok := actors.ParseEventID(id)
	if !ok {
		t.Fatalf("event id %q is not <run>-<seq>", id)
	}
	return run, seq
}

// waitStreams waits until n event streams are open.
func waitStreams(t *testing.T, base string, n int) {
	t.Helper()
	testutil.Eventually(t, waitLimit, fmt.Sprintf("%d event streams open", n), func() bool { return eventStreams(t, base) == n })
}

// A client that disconnects and reconnects with Last-Event-ID gets exactly
// the events it missed, in order, then the live ones: no gap, no duplicate.
func TestEventsResumeWithLastEventID(t *testing.T) {
	td := startDaemon(t, "", simPool("a"))
	td.waitState("a", actors.StateReady)

	s := openEvents(t, td.base, "")
	head := s.next()
	if head.Retry != "1000" || !head.HasID || head.Event != "" || head.Data != "" {
		t.Fatalf("the stream opened with %+v, want retry: 1000 and a bare id:", head)
	}
	run, start := seqOf(t, head.ID)
	if code, body := td.call("POST", "/v1/pools/a/drain", nil); code != 202 {
		t.Fatalf("drain: %d %v", code, body["_raw"])
	}
	var last string
	for want := start + 1; ; want++ {
		id, tr := s.event()
		if r, seq := seqOf(t, id); r != run || seq != want {
			t.Fatalf("event id %q, want %s", id, actors.EventID(run, want))
		}
		last = id
		if tr.To == actors.StateStopped {
			break
		}
	}
	s.close()
	waitStreams(t, td.base, 0)

	// Missed while away: what an internal subscriber sees, with its numbers.
	witness := make(chan actors.Transition, 256)
	actors.SendRegistry(td.sys.Root, td.reg, &actors.Subscribe{Ch: witness})
	defer actors.SendRegistry(td.sys.Root, td.reg, &actors.Unsubscribe{Ch: witness})
	if code, body := td.call("POST", "/v1/pools/a/start", nil); code != 202 {
		t.Fatalf("start: %d %v", code, body["_raw"])
	}
	var missed []actors.Transition
	for len(missed) == 0 || missed[len(missed)-1].To != actors.StateReady {
		select {
		case tr := <-witness:
			missed = append(missed, tr)
		case <-time.After(waitLimit):
			t.Fatalf("pool a not ready again; saw %+v", missed)
		}
	}
	if len(missed) < 2 {
		t.Fatalf("missed only %+v, want preload and ready", missed)
	}

	s = openEvents(t, td.base, last)
	_, lastSeq := seqOf(t, last)
	first := s.next() // retry:, and no id: it would move the client's position
	if first.Retry != "1000" || first.HasID || first.Event != "" {
		t.Fatalf("a resumed stream opened with %+v, want retry: 1000 alone", first)
	}
	for i, want := range missed {
		id, tr := s.event()
		if id != actors.EventID(run, lastSeq+uint64(i)+1) || id != actors.EventID(run, want.Seq) ||
			tr.PoolID != want.PoolID || tr.From != want.From || tr.To != want.To || tr.Reason != want.Reason || tr.AtMS != want.AtMS {
			t.Fatalf("replayed event %d: %s %+v, want %s %+v", i, id, tr, actors.EventID(run, want.Seq), want)
		}
	}
	// Then live, numbered on: the next event is the drain's, not a repeat.
	if code, body := td.call("POST", "/v1/pools/a/drain", nil); code != 202 {
		t.Fatalf("drain: %d %v", code, body["_raw"])
	}
	id, tr := s.event()
	if want := actors.EventID(run, missed[len(missed)-1].Seq+1); id != want || tr.From != actors.StateReady || tr.To != actors.StateDraining {
		t.Fatalf("after the replay got %s %+v, want %s ready -> draining", id, tr, want)
	}
}

// A Last-Event-ID the daemon cannot resume from (another run's, garbage, or
// ahead of it) gets one `event: reset` carrying the current id, then live
// events.
func TestEventsResetOnUnknownID(t *testing.T) {
	td := startDaemon(t, "", simPool("a"))
	td.waitState("a", actors.StateReady)
	head := openEvents(t, td.base, "").next()
	run, cur := seqOf(t, head.ID)

	for lastID, reason := range map[string]string{
		actors.EventID(run+"0", cur):                     actors.ResetOtherRun,
		"not-an-id":                                      actors.ResetUnknown,
		actors.EventID(run, cur+100):                     actors.ResetUnknown,
		strings.Repeat("x", 100) + "-" + strconv.Itoa(1): actors.ResetOtherRun,
	} {
		s := openEvents(t, td.base, lastID)
		if b := s.next(); b.Retry != "1000" {
			t.Fatalf("Last-Event-ID %q: stream opened with %+v", lastID, b)
		}
		b := s.next()
		var data struct {
			Reason      string `json:"reason"`
			Message     string `json:"message"`
			LastEventID string `json:"last_event_id"`
		}
		if err := json.Unmarshal([]byte(b.Data), &data); err != nil || b.Event != "reset" {
			t.Fatalf("Last-Event-ID %q: got %+v (%v), want event: reset", lastID, b, err)
		}
		if b.ID != actors.EventID(run, cur) || data.Reason != reason || data.LastEventID != lastID ||
			!strings.Contains(data.Message, "GET /v1/pools") {
			t.Fatalf("Last-Event-ID %q: reset %+v %+v, want id %s, reason %s, a pointer to GET /v1/pools",
				lastID, b, data, actors.EventID(run, cur), reason)
		}
		s.close()
	}

	// Live events follow a reset.
	s := openEvents(t, td.base, actors.EventID(run+"0", cur))
	s.next()
	if b := s.next(); b.Event != "reset" {
		t.Fatalf("got %+v, want the reset", b)
	}
	if code, body := td.call("POST", "/v1/pools/a/drain", nil); code != 202 {
		t.Fatalf("drain: %d %v", code, body["_raw"])
	}
	if id, tr := s.event(); id != actors.EventID(run, cur+1) || tr.To != actors.StateDraining {
		t.Fatalf("after the reset got %s %+v, want %s to draining", id, tr, actors.EventID(run, cur+1))
	}
}

// Under a steady flow of events (a pool that fails and retries every 5 ms),
// a client that resumes from a recent id gets every later event once, in
// order; one that comes back after more than the backlog got published
// gets a reset saying they expired.
func TestEventsResumeUnderLoadAndExpiry(t *testing.T) {
	td := startDaemon(t, "", flappingPool("f"))
	s := openEvents(t, td.base, "")
	run, _ := seqOf(t, s.next().ID)
	var last string
	for range 20 {
		last, _ = s.event()
	}
	s.close()
	waitStreams(t, td.base, 0)
	time.Sleep(50 * time.Millisecond) // let some events go by unseen

	s = openEvents(t, td.base, last)
	s.next()
	_, want := seqOf(t, last)
	for range 200 {
		id, _ := s.event()
		want++
		if id != actors.EventID(run, want) {
			t.Fatalf("resumed event id %s, want %s", id, actors.EventID(run, want))
		}
	}
	s.close()

	// Wait until more than the backlog has gone by since last.
	_, lastSeq := seqOf(t, last)
	deadline := time.Now().Add(2 * waitLimit)
	for {
		probe := openEvents(t, td.base, "")
		_, cur := seqOf(t, probe.next().ID)
		probe.close()
		if cur > lastSeq+actors.EventBacklog+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d events published since %s", cur-lastSeq, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s = openEvents(t, td.base, last)
	s.next()
	b := s.next()
	if b.Event != "reset" || !strings.Contains(b.Data, `"reason":"expired"`) {
		t.Fatalf("resuming from %s after more than %d events: got %+v, want a reset (expired)", last, actors.EventBacklog, b)
	}
	if id, _ := s.event(); id == "" {
		t.Fatal("no live event after the reset")
	}
}
