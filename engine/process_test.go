package engine_test

import (
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

func TestExitCodesAndSignals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		signal string
		str    string
	}{
		{"exit immediately", []string{"--exit-immediately", "--exit-code", "3"}, 3, "", "exit code 3"},
		{"crash with code", []string{"--crash-after", "50ms", "--exit-code", "42"}, 42, "", "exit code 42"},
		{"crash by SIGKILL", []string{"--crash-after", "50ms", "--crash-signal", "SIGKILL"}, -1, "SIGKILL", "killed by SIGKILL"},
		{"crash by SIGSEGV", []string{"--crash-after", "50ms", "--crash-signal", "segv"}, -1, "SIGSEGV", "killed by SIGSEGV"},
		{"crash by SIGABRT", []string{"--crash-after", "10ms", "--crash-after-jitter", "40ms", "--crash-signal", "6"}, -1, "SIGABRT", "killed by SIGABRT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, _ := startSim(t, nil, tc.args...)
			e := waitDone(t, p, 20*time.Second)
			if e.Code != tc.code || e.Signal != tc.signal || e.String() != tc.str {
				t.Fatalf("exit = %+v (%q), want code %d signal %q (%q)", e, e, tc.code, tc.signal, tc.str)
			}
			if e.At.Before(p.StartedAt()) {
				t.Fatalf("exit at %v before start %v", e.At, p.StartedAt())
			}
			groupGone(t, p.Pgid())
		})
	}
}

func TestOutputReachesSinkInOrder(t *testing.T) {
	t.Parallel()
	sink := engine.NewSink(nil, 100, 0, 0)
	p, port := startSim(t, sink, "--model", "m1", "--crash-after", "300ms", "--exit-code", "4", "--stderr-on-exit", "boom: last words")
	if e := waitDone(t, p, 20*time.Second); e.Code != 4 {
		t.Fatalf("exit = %v, want exit code 4", e)
	}
	lines := sink.Tail(100)
	want := []struct{ stream, prefix string }{
		{"stdout", fmt.Sprintf("sim-engine: loading model m1 port=%d", port)},
		{"stdout", "sim-engine: ready at_unix_nano="},
		{"stderr", "boom: last words"},
	}
	if len(lines) != len(want) {
		t.Fatalf("ring holds %d lines, want %d: %+v", len(lines), len(want), lines)
	}
	for i, w := range want {
		if lines[i].Stream != w.stream || !strings.HasPrefix(lines[i].Text, w.prefix) {
			t.Errorf("line %d = %s %q, want %s %q...", i, lines[i].Stream, lines[i].Text, w.stream, w.prefix)
		}
		if i > 0 && lines[i].At.Before(lines[i-1].At) {
			t.Errorf("line %d is older than line %d", i, i-1)
		}
	}
	if got := sink.LastLine("stderr"); got != "boom: last words" {
		t.Errorf("Sink.LastLine(stderr) = %q", got)
	}
	if got := p.LastLine("stderr"); got != "boom: last words" {
		t.Errorf("Process.LastLine(stderr) = %q", got)
	}
	if got := p.LastLine("stdout"); !strings.HasPrefix(got, "sim-engine: ready") {
		t.Errorf("Process.LastLine(stdout) = %q", got)
	}
	if !p.LastActivity().After(p.StartedAt()) {
		t.Errorf("LastActivity %v not after StartedAt %v", p.LastActivity(), p.StartedAt())
	}
}

func TestStopGraceful(t *testing.T) {
	t.Parallel()
	sink := engine.NewSink(nil, 100, 0, 0)
	p, _ := startSim(t, sink)
	waitLines(t, sink, "sim-engine: ready", 1)
	start := time.Now()
	e := p.Stop(30 * time.Second)
	if e.Code != 0 || e.Signal != "" {
		t.Fatalf("Stop = %v, want exit code 0", e)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("a SIGTERM-honouring engine took %v to stop", d)
	}
	if got := p.LastLine("stdout"); !strings.HasPrefix(got, "sim-engine: shutting down") {
		t.Fatalf("last stdout line %q, want the shutdown line", got)
	}
	if again := p.Stop(time.Second); again != e {
		t.Fatalf("second Stop = %v, want %v", again, e)
	}
}

func TestStopIgnoringSigtermIsKilledAfterGrace(t *testing.T) {
	t.Parallel()
	sink := engine.NewSink(nil, 100, 0, 0)
	p, _ := startSim(t, sink, "--ignore-sigterm")
	waitLines(t, sink, "sim-engine: ready", 1)
	const grace = 400 * time.Millisecond
	results := make([]engine.Exit, 4)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { results[i] = p.Stop(grace) })
	}
	p.Kill() // must not disturb the stops; may only shorten them
	wg.Wait()
	for i, e := range results {
		if e.Signal != "SIGKILL" || e.Code != -1 {
			t.Fatalf("Stop %d = %v, want killed by SIGKILL", i, e)
		}
	}

	// Without the extra Kill, Stop waits the grace out before SIGKILL.
	p2, _ := startSim(t, sink, "--ignore-sigterm")
	waitFor(t, 10*time.Second, "second engine ready", func() bool {
		return strings.HasPrefix(p2.LastLine("stdout"), "sim-engine: ready")
	})
	start := time.Now()
	e := p2.Stop(grace)
	if e.Signal != "SIGKILL" {
		t.Fatalf("Stop = %v, want killed by SIGKILL", e)
	}
	if d := time.Since(start); d < grace-50*time.Millisecond {
		t.Fatalf("Stop returned after %v, before the %v grace", d, grace)
	}
	if got := p2.LastLine("stdout"); !strings.Contains(got, "ignoring") {
		t.Fatalf("last stdout line %q: SIGTERM was not sent before SIGKILL", got)
	}
}

// childPids reads the pids the simulator printed for its forked children.
func childPids(t *testing.T, sink *engine.Sink, n int) []int {
	t.Helper()
	var pids []int
	for _, l := range waitLines(t, sink, "sim-engine: child pid=", n) {
		var pid int
		var escaped bool
		if _, err := fmt.Sscanf(l, "sim-engine: child pid=%d escaped=%t", &pid, &escaped); err != nil {
			t.Fatalf("bad child line %q: %v", l, err)
		}
		pids = append(pids, pid)
	}
	return pids
}

func TestStopKillsForkedChildren(t *testing.T) {
	t.Parallel()
	sink := engine.NewSink(nil, 100, 0, 0)
	p, _ := startSim(t, sink, "--fork-children", "3", "--child-life", "1m")
	pids := childPids(t, sink, 3)
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("child %d not running before Stop: %v", pid, err)
		}
	}
	// The leader honours SIGTERM and exits 0; its children ignore SIGTERM and
	// hold the pipes: only the group SIGKILL lets Done close.
	e := p.Stop(5 * time.Second)
	if e.Code != 0 {
		t.Fatalf("Stop = %v, want exit code 0", e)
	}
	groupGone(t, p.Pgid())
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
			t.Fatalf("child %d still exists after Stop (kill: %v)", pid, err)
		}
	}
}

func TestCrashKillsForkedChildren(t *testing.T) {
	t.Parallel()
	sink := engine.NewSink(nil, 100, 0, 0)
	p, _ := startSim(t, sink, "--fork-children", "2", "--child-life", "1m", "--crash-after", "300ms", "--exit-code", "9")
	pids := childPids(t, sink, 2)
	if e := waitDone(t, p, 20*time.Second); e.Code != 9 {
		t.Fatalf("exit = %v, want exit code 9", e)
	}
	groupGone(t, p.Pgid())
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
			t.Fatalf("child %d outlived its crashed engine (kill: %v)", pid, err)
		}
	}
}

// TestWaitDelayBackstop: a plain Start has no containment beyond the
// process group, so a child that left the group keeps the pipes open; Done
// must still close, once WaitDelay gives up on the pipes. (Launch kills such
// a child: TestLaunchKillsEscapedPipeHolder.)
func TestWaitDelayBackstop(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	sink := engine.NewSink(slog.New(slog.NewJSONHandler(&logs, nil)), 100, 0, 0)
	p, _ := startSim(t, sink, "--fork-escaped-child", "--child-life", "1m")
	escaped := childPids(t, sink, 1)[0]
	t.Cleanup(func() {
		_ = syscall.Kill(escaped, syscall.SIGKILL)
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(escaped, &ws, 0, nil) // re-parented to us, the subreaper
	})
	start := time.Now()
	p.Kill()
	e := waitDone(t, p, 20*time.Second)
	if e.Signal != "SIGKILL" {
		t.Fatalf("exit = %v, want killed by SIGKILL", e)
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("Done after %v: the escaped child did not hold the pipes, the test proves nothing", d)
	}
	warned := false
	for _, r := range logs.records(t) {
		warned = warned || strings.Contains(fmt.Sprint(r["msg"]), "pipes still held open")
	}
	if !warned {
		t.Fatal("no warning logged about the pipes held open")
	}
}

// TestLaunchKillsEscapedPipeHolder: under Launch (marker containment, no
// cgroup) the child that left the group is killed with its engine, so it
// neither survives nor holds the output pipes until WaitDelay gives up.
func TestLaunchKillsEscapedPipeHolder(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	sink := engine.NewSink(slog.New(slog.NewJSONHandler(&logs, nil)), 100, 0, 0)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := engine.Launch(engine.LaunchSpec{PoolID: "pipeholder", Sink: sink,
		Command: []string{self, "--port", "${PORT}", "--fork-escaped-child", "--child-life", "1m"},
		Env:     map[string]string{simEnv: "1", "GORACE": "atexit_sleep_ms=0"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(0) })
	escaped := childPids(t, sink, 1)[0]
	p.Kill()
	if e := waitDone(t, p, 20*time.Second); e.Signal != "SIGKILL" {
		t.Fatalf("exit = %v, want killed by SIGKILL", e)
	}
	var st syscall.WaitStatus
	_, _ = syscall.Wait4(escaped, &st, syscall.WNOHANG, nil) // a zombie of ours, the subreaper, at most
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", escaped)); err == nil && !strings.Contains(string(b), ") Z") {
		t.Fatalf("escaped child %d outlived its engine: %s", escaped, b)
	}
	for _, r := range logs.records(t) {
		if strings.Contains(fmt.Sprint(r["msg"]), "pipes still held open") {
			t.Fatal("the escaped child held the pipes: it was not killed with its engine")
		}
	}
}

// TestStartAsOtherUser runs a process with the Credential LookupCredential
// gives for "nobody" and checks the ids it reports.
func TestStartAsOtherUser(t *testing.T) {
	t.Parallel()
	nobody, err := user.Lookup("nobody")
	if os.Geteuid() != 0 || err != nil {
		t.Skip("needs root and a nobody user")
	}
	cred, err := engine.LookupCredential("nobody")
	if err != nil || cred == nil {
		t.Fatalf("LookupCredential(nobody) = %v, %v", cred, err)
	}
	sink := engine.NewSink(nil, 10, 0, 0)
	p, err := engine.Start(engine.Spec{Argv: []string{"/bin/sh", "-c", "id -u; id -g"}, Env: []string{"PATH=/usr/bin:/bin"},
		Dir: "/", Credential: cred, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	if e := waitDone(t, p, 10*time.Second); e.Code != 0 {
		t.Fatalf("exit = %v, stderr %q", e, p.LastLine("stderr"))
	}
	tail := sink.Tail(2)
	if len(tail) != 2 || tail[0].Text != nobody.Uid || tail[1].Text != nobody.Gid {
		t.Fatalf("child reported %+v, want uid %s gid %s", tail, nobody.Uid, nobody.Gid)
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	if _, err := engine.Start(engine.Spec{}); err == nil {
		t.Error("Start with empty argv: no error")
	}
	if _, err := engine.Start(engine.Spec{Argv: []string{"/nonexistent/llama-server"}}); err == nil {
		t.Error("Start of a missing binary: no error")
	}
	if _, err := engine.Start(engine.Spec{Argv: []string{"no-such-engine-binary-xyz"}}); err == nil {
		t.Error("Start of a binary not in PATH: no error")
	}
}

// StartedAt, LastActivity and Exit.At are on the Spec's clock, so a caller
// judging them (the pool's stall check) compares like with like.
func TestProcessStampsOnItsClock(t *testing.T) {
	t.Parallel()
	start := time.Unix(1_700_000_000, 0)
	clk := clock.NewFake(start)
	p, _ := startSimSpec(t, engine.Spec{Clock: clk})
	if !p.StartedAt().Equal(start) {
		t.Fatalf("StartedAt = %v, want the fake clock's %v", p.StartedAt(), start)
	}
	clk.Advance(time.Hour) // the engine prints before or after this, and ends after it
	e := p.Stop(0)
	if !e.At.Equal(start.Add(time.Hour)) {
		t.Errorf("Exit.At = %v, want the fake clock's %v", e.At, start.Add(time.Hour))
	}
	if la := p.LastActivity(); !la.Equal(start) && !la.Equal(start.Add(time.Hour)) {
		t.Errorf("LastActivity = %v, want a time on the fake clock (%v or %v)", la, start, start.Add(time.Hour))
	}
}
