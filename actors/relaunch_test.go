package actors

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// gateHandler writes JSON records to a buffer, but its Handle of the record
// named gate blocks until open is closed (or twice waitLimit passes).
type gateHandler struct {
	slog.Handler
	gate string
	open chan struct{}
}

func (g gateHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == g.gate {
		select {
		case <-g.open:
		case <-time.After(2 * waitLimit): // longer than any wait of the test
		}
	}
	return g.Handler.Handle(ctx, r)
}

func (g gateHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return gateHandler{g.Handler.WithAttrs(as), g.gate, g.open}
}

// With a backoff of 0 the replacement of a crashed engine is launched before
// the exit's log records are written: while writing engine.exited blocks,
// the new engine process starts. The records are all there afterwards, in
// the order they were logged, and the transitions are unchanged.
func TestPoolZeroBackoffRelaunchDoesNotWaitForTheExitsLogs(t *testing.T) {
	h := newHarness(t, nil)
	marks := filepath.Join(t.TempDir(), "starts")
	cfg := simPool("p1")
	// Each start of the engine appends a line to marks, then execs the sim.
	cfg.Command = append([]string{"/bin/sh", "-c", `echo start >> "$0"; exec "$@"`, marks}, cfg.Command...)
	cfg.Restart.Initial, cfg.Restart.Max, cfg.Restart.Jitter = 0, 0, 0
	open := make(chan struct{})
	logs := &testutil.SyncBuffer{}
	logger := slog.New(gateHandler{slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}), "engine.exited", open})
	h.pools[cfg.ID] = h.sys.Root.Spawn(NewPoolProps(cfg, PoolDeps{Registry: h.reg, Clock: h.clock, Logger: logger}))
	st := h.waitState("p1", StateReady)
	old := *st.PID
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	starts := func() int {
		b, _ := os.ReadFile(marks)
		return strings.Count(string(b), "start\n")
	}
	deadline := time.Now().Add(waitLimit)
	for starts() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	n := starts()
	close(open)
	if n < 2 {
		t.Fatalf("no new engine started while engine.exited was being written (starts: %d)", n)
	}
	h.waitState("p1", StateBackoff)
	h.waitState("p1", StatePreload)
	st = h.waitState("p1", StateReady)
	if st.PID == nil || *st.PID == old || st.RestartCount != 1 {
		t.Fatalf("after the crash: pid %v (old %d), restart_count %d", st.PID, old, st.RestartCount)
	}
	// The exit's records, in the order they were logged, with ascending times.
	want := []string{"engine.exited", "pool.failure", "pool.state:backoff", "engine.stopped", "pool.state:preload", "engine.spawned", "pool.state:ready"}
	var got []string
	var last time.Time
	seen := false
	for _, line := range strings.Split(logs.String(), "\n") {
		var r struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
			To   string    `json:"to"`
		}
		if json.Unmarshal([]byte(line), &r) != nil {
			continue
		}
		if r.Msg == "engine.exited" {
			seen = true
		}
		if !seen {
			continue
		}
		if r.Time.Before(last) {
			t.Fatalf("record %s at %s is written after one of %s", r.Msg, r.Time, last)
		}
		last = r.Time
		name := r.Msg
		if r.Msg == "pool.state" {
			name += ":" + r.To
		}
		for _, w := range want {
			if w == name {
				got = append(got, name)
			}
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("records after the crash: %v, want %v\nlogs:\n%s", got, want, logs.String())
	}
}

// An adopted engine's pid reaches the registry before engine.spawned is
// written: while writing that record blocks, the registry shows the pid.
func TestPoolSpawnedPIDIsPublishedBeforeItsLogRecord(t *testing.T) {
	h := newHarness(t, nil)
	cfg := simPool("p1")
	open := make(chan struct{})
	logger := slog.New(gateHandler{slog.NewJSONHandler(&testutil.SyncBuffer{}, nil), "engine.spawned", open})
	h.pools[cfg.ID] = h.sys.Root.Spawn(NewPoolProps(cfg, PoolDeps{Registry: h.reg, Clock: h.clock, Logger: logger}))
	deadline := time.Now().Add(waitLimit)
	for h.get("p1").PID == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	st := h.get("p1")
	close(open)
	if st.PID == nil {
		t.Fatal("the registry showed no pid while engine.spawned was being written")
	}
	h.waitState("p1", StateReady)
}
