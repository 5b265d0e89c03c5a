package ctl

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// maxEventLine bounds one SSE line; an event is one small JSON object.
const maxEventLine = 1 << 20

// sseEvent is one dispatched Server-Sent Event.
type sseEvent struct {
	Type string // "message" when the stream names none
	Data string // data lines joined with "\n"
	ID   string
}

// readSSE parses a text/event-stream as the WHATWG spec says (lines end in
// \n, \r\n or \r; ':' starts a comment, which daemons send as keep-alives; a
// blank line dispatches; an event without data is dropped) and calls fn for
// each event. It returns fn's error, or the reader's (nil at EOF). When
// lastID is not nil it is kept at the stream's last event id, also one set
// by an id: line of an event without data (the daemon's opening line).
func readSSE(r io.Reader, lastID *string, fn func(sseEvent) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxEventLine)
	sc.Split(scanSSELines)
	var ev sseEvent
	var data []string
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if data != nil {
				ev.Data = strings.Join(data, "\n")
				if ev.Type == "" {
					ev.Type = "message"
				}
				if err := fn(ev); err != nil {
					return err
				}
			}
			ev, data = sseEvent{ID: ev.ID}, nil // the last event id persists
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.Type = value
		case "data":
			data = append(data, value)
		case "id":
			if !strings.ContainsRune(value, 0) { // the spec ignores such an id
				ev.ID = value
				if lastID != nil {
					*lastID = value
				}
			}
		} // "retry" and unknown fields: ignored, as the spec says
	}
	// An event not ended by a blank line is incomplete: the spec drops it.
	return sc.Err()
}

// scanSSELines splits on \n, \r\n or a lone \r.
func scanSSELines(data []byte, atEOF bool) (int, []byte, error) {
	for i, b := range data {
		switch b {
		case '\n':
			return i + 1, data[:i], nil
		case '\r':
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			if !atEOF {
				return 0, nil, nil // a \n may follow in the next read
			}
			return i + 1, data[:i], nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// transition is a pool_state event's data (docs/contract.md §4).
type transition struct {
	PoolID string `json:"pool_id"`
	From   string `json:"from"`
	To     string `json:"to"`
	Reason string `json:"reason"`
	AtMS   int64  `json:"at_ms"`
}

// eventsRetry is how long runEvents waits before it reconnects.
const eventsRetry = time.Second

// runEvents follows /v1/events until interrupted. When the stream ends (the
// daemon restarted, or it dropped a client that fell behind), it reconnects
// with the last event id it saw, so the daemon replays what was missed; when
// the daemon cannot (an `event: reset`: another run, or too old), it says so
// on stderr and prints every pool's current state again. --no-reconnect
// makes the end of the stream an error (exit 1) instead, for a wrapper that
// reconnects itself. The first connection failing is always an error, so a
// wrong --addr fails at once.
func runEvents(c *cli, args []string) error {
	fs := c.flags()
	only := fs.String("pool", "", "only this pool's events")
	noReconnect := fs.Bool("no-reconnect", false, "exit 1 when the event stream ends instead of reconnecting")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	cl, err := c.connect()
	if err != nil {
		return err
	}
	var lastID string
	var badEvent error
	handle := func(ev sseEvent) error {
		if ev.Type == "reset" {
			var r struct{ Message string }
			_ = json.Unmarshal([]byte(ev.Data), &r)
			fmt.Fprintf(c.stderr, "poolctl: events were missed: %s\n", firstNonEmpty(r.Message, ev.Data))
			if c.g.json {
				printJSONLine(c.stdout, ev.Data)
			}
			return c.printCurrentStates(cl, *only)
		}
		var t transition
		if err := json.Unmarshal([]byte(ev.Data), &t); err != nil && ev.Type == "pool_state" {
			badEvent = fmt.Errorf("bad pool_state event %q: %w", ev.Data, err)
			return badEvent
		}
		switch {
		case *only != "" && t.PoolID != *only:
		case c.g.json:
			printJSONLine(c.stdout, ev.Data)
		case ev.Type == "pool_state":
			fmt.Fprintf(c.stdout, "%s %s %s -> %s (%s)\n", fmtTime(t.AtMS), t.PoolID, t.From, t.To, t.Reason)
		} // other event types are for newer clients
		return nil
	}
	connected, away := false, false
	for {
		var hdr http.Header
		if lastID != "" {
			hdr = http.Header{"Last-Event-Id": {lastID}}
		}
		resp, cancel, err := cl.openWith(c.ctx, "GET", "/v1/events", nil, true, hdr)
		if c.ctx.Err() != nil {
			return nil // interrupted: the normal way to stop following
		}
		var ae *apiError
		if err != nil && (!connected || errors.As(err, &ae)) {
			return err // a wrong address, token or pool: retrying will not help
		}
		if err != nil {
			if !away {
				fmt.Fprintf(c.stderr, "poolctl: the daemon does not answer (%v); retrying every %v\n", err, eventsRetry)
				away = true
			}
			if !c.sleep(eventsRetry) {
				return nil
			}
			continue
		}
		if away {
			fmt.Fprintf(c.stderr, "poolctl: reconnected; resuming after event %s\n", lastID)
			away = false
		}
		if !connected {
			// The stream is open (so nothing that happens from now on is
			// missed): print where every pool stands, so a quiet daemon does
			// not look dead, and an unknown --pool fails at once instead of
			// waiting forever.
			if err := c.printCurrentStates(cl, *only); err != nil {
				cancel()
				resp.Body.Close()
				if c.ctx.Err() != nil {
					return nil
				}
				return err
			}
			connected = true
		}
		err = readSSE(resp.Body, &lastID, handle)
		cancel()
		resp.Body.Close()
		switch {
		case c.ctx.Err() != nil:
			return nil // interrupted: the normal way to stop following
		case badEvent != nil:
			return badEvent
		case *noReconnect && err != nil:
			return cl.wrapErr(c.ctx, err)
		case *noReconnect:
			return errors.New("event stream closed by the daemon")
		}
		var ae2 *apiError
		if errors.As(err, &ae2) { // printCurrentStates after a reset failed
			return err
		}
		why := "closed by the daemon"
		if err != nil {
			why = err.Error()
		}
		fmt.Fprintf(c.stderr, "poolctl: event stream ended (%s); reconnecting\n", why)
		if !c.sleep(eventsRetry) {
			return nil
		}
	}
}

// printJSONLine prints an event's data as one line of compact JSON, even
// when the data spanned lines.
func printJSONLine(w io.Writer, data string) {
	var b bytes.Buffer
	if json.Compact(&b, []byte(data)) != nil {
		b.Reset()
		b.WriteString(data)
	}
	fmt.Fprintln(w, b.String())
}

// sleep waits d or until the command is interrupted; false: interrupted.
func (c *cli) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// printCurrentStates prints one line per pool (or only the pool named) with
// its state and since when: "TIME POOL is STATE (current state)", or with
// --json a pool_state-shaped object whose from is "" and reason is
// "current state". An unknown pool is the daemon's 404 POOL_NOT_FOUND.
func (c *cli) printCurrentStates(cl *client, only string) error {
	type current struct {
		PoolID       string `json:"pool_id"`
		State        string `json:"state"`
		StateSinceMS int64  `json:"state_since_ms"`
	}
	var pools []current
	if only != "" {
		body, _, err := cl.call(c.ctx, "GET", poolPath(only), nil, false)
		if err != nil {
			return err
		}
		var p current
		if err := json.Unmarshal(body, &p); err != nil {
			return fmt.Errorf("decoding pool %s: %w", only, err)
		}
		pools = append(pools, p)
	} else {
		body, _, err := cl.call(c.ctx, "GET", "/v1/pools", nil, false)
		if err != nil {
			return err
		}
		var ans struct{ Pools []current }
		if err := json.Unmarshal(body, &ans); err != nil {
			return fmt.Errorf("decoding pools: %w", err)
		}
		pools = ans.Pools
	}
	for _, p := range pools {
		if c.g.json {
			b, _ := json.Marshal(transition{PoolID: p.PoolID, To: p.State, Reason: "current state", AtMS: p.StateSinceMS})
			fmt.Fprintln(c.stdout, string(b))
			continue
		}
		fmt.Fprintf(c.stdout, "%s %s is %s (current state)\n", fmtTime(p.StateSinceMS), p.PoolID, p.State)
	}
	return nil
}
