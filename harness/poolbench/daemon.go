// This file runs an in-process supervisor.Daemon for the measurements that
// talk to its API, and follows its /v1/events stream.

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/gpu"
	"github.com/pool-managerd/pool-managerd/supervisor"
)

// stateWait bounds every wait for a pool state: a simulator with a short
// load time is ready in well under a second, even on a loaded machine.
const stateWait = 20 * time.Second

// simPool is a pool whose engine is this binary's simulator.
func simPool(id string, simFlags ...string) config.Pool {
	cmd := append([]string{"${SELF}", "sim-engine", "--host", "${HOST}", "--port", "${PORT}", "--model", "${MODEL_REF}"}, simFlags...)
	return config.Pool{
		ID: id, Engine: "llamacpp", EngineVersion: "sim", ModelRef: "bench/" + id, Command: cmd,
		Env:            map[string]string{"GORACE": "atexit_sleep_ms=0"}, // a -race test binary would sleep 1 s at exit
		Host:           "127.0.0.1",
		StartupTimeout: stateWait, StallTimeout: stateWait, StopGrace: 5 * time.Second, DrainDeadline: 10 * time.Second,
		Readiness: config.Probe{Path: "/health", Timeout: time.Second},
		Liveness:  config.Probe{Path: "/health", Interval: 5 * time.Second, Timeout: 2 * time.Second, FailureThreshold: 3},
		Restart: config.Restart{Initial: time.Second, Multiplier: 2, Max: time.Minute, Jitter: 0.1,
			ResetAfter: 10 * time.Minute, MaxFailures: 5, Window: 10 * time.Minute},
	}
}

// benchDaemon is an in-process daemon plus a client of its API.
type benchDaemon struct {
	d      *supervisor.Daemon
	base   string
	client *http.Client
	events *hub
	stop   context.CancelFunc // ends the event stream
	logs   *tailBuffer
	once   sync.Once
	// spawned receives the time of each engine.spawned log record: when the
	// pool actor learnt its new engine runs (the crash breakdown).
	spawned chan time.Time
	// exited receives the time of each engine.exited log record: when the
	// pool actor learnt its engine ended by itself, after the engine's own
	// cleanup (reap, group and cgroup killed, cgroup empty and removed).
	exited chan time.Time
	// loaded receives the time of each forwarded engine output line that
	// says llama-server's model is loaded (llamaLoadedLine): when the daemon
	// read it.
	loaded chan time.Time
}

// startDaemon starts a daemon with pools and waits until every pool is ready.
func startDaemon(ctx context.Context, self string, pools ...config.Pool) (*benchDaemon, error) {
	cfg := &config.Config{Listen: "127.0.0.1:0", ShutdownDeadline: 5 * time.Second, Pools: pools,
		Log: config.Log{Format: "json", Level: "info"}}
	logs := &tailBuffer{max: 64 << 10}
	// The daemon formats its JSON logs as in production; only the last 64 KiB
	// are kept, to explain a failure.
	spawned := make(chan time.Time, 64)
	exited := make(chan time.Time, 64)
	loaded := make(chan time.Time, 64)
	logger := slog.New(tap{slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}), spawned, exited, loaded})
	d, err := supervisor.New(supervisor.Options{Config: cfg, Logger: logger, SelfExe: self, Guard: gpu.NoGuard{}})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if err := d.Start(ln); err != nil {
		d.Shutdown()
		return nil, err
	}
	sctx, stop := context.WithCancel(context.Background())
	b := &benchDaemon{d: d, base: "http://" + ln.Addr().String(), stop: stop, logs: logs, spawned: spawned, exited: exited, loaded: loaded,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		events: newHub()}
	if err := b.events.follow(sctx, b.base+"/v1/events"); err != nil {
		b.close()
		return nil, err
	}
	if err := b.waitRegistered(ctx, len(pools)); err != nil {
		b.close()
		return nil, err
	}
	for _, p := range pools {
		if _, err := b.waitState(ctx, p.ID, actors.StateReady); err != nil {
			b.close()
			return nil, err
		}
	}
	return b, nil
}

// waitRegistered waits until the registry lists n pools: pool actors
// register themselves asynchronously after Start.
func (b *benchDaemon) waitRegistered(ctx context.Context, n int) error {
	for deadline := time.Now().Add(stateWait); time.Now().Before(deadline); {
		var pr struct{ Pools []actors.PoolStatus }
		if err := b.expect(ctx, 200, "GET", "/v1/pools", nil, &pr); err != nil {
			return err
		}
		if len(pr.Pools) >= n {
			return nil
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
	return b.failure(fmt.Errorf("the registry does not list %d pools within %s", n, stateWait))
}

// close shuts the daemon down; every engine it started is stopped. It may
// be called more than once.
func (b *benchDaemon) close() {
	b.once.Do(func() {
		b.stop()
		b.d.Shutdown()
		b.client.CloseIdleConnections()
	})
}

// failure wraps err with the tail of the daemon's logs.
func (b *benchDaemon) failure(err error) error {
	tail := b.logs.String()
	if i := len(tail) - 2000; i > 0 {
		tail = tail[i:]
	}
	return fmt.Errorf("%w\ndaemon log tail:\n%s", err, tail)
}

// call does one API request; out (if not nil) receives the JSON answer.
func (b *benchDaemon) call(ctx context.Context, method, path string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.base+path, rd)
	if err != nil {
		return 0, err
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w (%q)", method, path, err, raw)
		}
	}
	return resp.StatusCode, nil
}

// expect does one request and fails unless it answers want.
func (b *benchDaemon) expect(ctx context.Context, want int, method, path string, body, out any) error {
	code, err := b.call(ctx, method, path, body, out)
	if err == nil && code != want {
		err = fmt.Errorf("%s %s: HTTP %d, want %d", method, path, code, want)
	}
	return err
}

func (b *benchDaemon) status(ctx context.Context, id string) (actors.PoolStatus, error) {
	var st actors.PoolStatus
	err := b.expect(ctx, 200, "GET", "/v1/pools/"+id, nil, &st)
	return st, err
}

// waitState returns when pool id is in state want, and when that was seen.
func (b *benchDaemon) waitState(ctx context.Context, id string, want actors.State) (time.Time, error) {
	mark := b.events.mark()
	st, err := b.status(ctx, id)
	if err != nil {
		return time.Time{}, err
	}
	if st.State == want {
		return time.Now(), nil
	}
	ev, err := b.events.wait(ctx, mark, id, want, stateWait)
	if err != nil {
		st, _ = b.status(ctx, id)
		return time.Time{}, b.failure(fmt.Errorf("pool %s: %w (state now %s, last_error %v)", id, err, st.State, deref(st.LastError)))
	}
	return ev.at, nil
}

// simReadyAt reads the simulator's own "ready at_unix_nano" stamp from the
// pool's log ring: the newest one after since. The engine may flip /health
// before its line reaches the daemon, so this retries briefly.
func (b *benchDaemon) simReadyAt(ctx context.Context, id string, since time.Time) (time.Time, error) {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		var lr struct {
			Lines []struct{ Text string } `json:"lines"`
		}
		if err := b.expect(ctx, 200, "GET", "/v1/pools/"+id+"/logs?tail=50", nil, &lr); err != nil {
			return time.Time{}, err
		}
		for i := len(lr.Lines) - 1; i >= 0; i-- {
			if t, ok := parseReady(lr.Lines[i].Text); ok && t.After(since) {
				return t, nil
			}
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return time.Time{}, err
		}
	}
	return time.Time{}, fmt.Errorf("pool %s: no simulator ready line after %s in its logs", id, since.Format(time.RFC3339Nano))
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// ---- the event stream ----

// event is one pool_state event and when poolbench received it.
type event struct {
	at time.Time
	actors.Transition
}

// hub keeps every event of one /v1/events stream, so a waiter can look for a
// transition that happened after a mark without racing the request it made.
type hub struct {
	mu   sync.Mutex
	evs  []event
	wake chan struct{} // closed and replaced on each event
	err  error         // the stream ended
}

func newHub() *hub { return &hub{wake: make(chan struct{})} }

// follow connects to url and feeds events in the background until ctx ends.
// It returns once the stream is established, so no later event is missed.
func (h *hub) follow(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		return fmt.Errorf("GET /v1/events: HTTP %d", resp.StatusCode)
	}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			ev := event{at: time.Now()}
			if json.Unmarshal([]byte(data), &ev.Transition) == nil {
				h.add(ev, nil)
			}
		}
		h.add(event{}, fmt.Errorf("event stream ended: %v", sc.Err()))
	}()
	return nil
}

func (h *hub) add(ev event, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.err = err
	} else {
		h.evs = append(h.evs, ev)
	}
	close(h.wake)
	h.wake = make(chan struct{})
}

// mark is the position of the next event.
func (h *hub) mark() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.evs)
}

// wait returns the first event at or after mark that moves pool id to state to.
func (h *hub) wait(ctx context.Context, mark int, id string, to actors.State, limit time.Duration) (event, error) {
	timeout := time.After(limit)
	for {
		h.mu.Lock()
		for ; mark < len(h.evs); mark++ {
			if ev := h.evs[mark]; ev.PoolID == id && ev.To == to {
				h.mu.Unlock()
				return ev, nil
			}
		}
		wake, err := h.wake, h.err
		h.mu.Unlock()
		if err != nil {
			return event{}, err
		}
		select {
		case <-wake:
		case <-timeout:
			return event{}, fmt.Errorf("no transition to %s within %s", to, limit)
		case <-ctx.Done():
			return event{}, ctx.Err()
		}
	}
}

// tap passes every record on and sends the time of engine.spawned and
// engine.exited records to spawned and exited, and of engine output records
// whose line contains llamaLoadedLine to loaded (dropping them when nobody
// reads).
type tap struct {
	slog.Handler
	spawned chan time.Time // engine.spawned
	exited  chan time.Time // engine.exited
	loaded  chan time.Time
}

func (t tap) Handle(ctx context.Context, r slog.Record) error {
	send := func(ch chan time.Time) {
		select {
		case ch <- r.Time:
		default:
		}
	}
	switch r.Message {
	case "engine.spawned":
		send(t.spawned)
	case "engine.exited":
		send(t.exited)
	}
	if r.Message == "engine output" && t.loaded != nil {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "line" && strings.Contains(a.Value.String(), llamaLoadedLine) {
				send(t.loaded)
				return false
			}
			return true
		})
	}
	return t.Handler.Handle(ctx, r)
}

func (t tap) WithAttrs(a []slog.Attr) slog.Handler {
	return tap{t.Handler.WithAttrs(a), t.spawned, t.exited, t.loaded}
}
func (t tap) WithGroup(n string) slog.Handler {
	return tap{t.Handler.WithGroup(n), t.spawned, t.exited, t.loaded}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 2*t.max { // trim in halves: amortized O(1) per byte
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b[max(0, len(t.b)-t.max):])
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
