// This file starts, watches and cleans up the processes poolbench runs
// itself (bare simulators, the out-of-process daemon), and reads /proc.

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/internal/proc"
)

// runEnv marks every process this run starts, directly or through a daemon
// (engines inherit the daemon's environment), so the final sweep finds
// leftovers by their environment and never touches anyone else's process.
const runEnv = "POOLBENCH_RUN"

// tracked are the process groups poolbench started itself; killTracked
// SIGKILLs whatever is left of them on every exit path.
var tracked struct {
	sync.Mutex
	pgids map[int]bool
}

func track(pgid int) {
	tracked.Lock()
	defer tracked.Unlock()
	if tracked.pgids == nil {
		tracked.pgids = map[int]bool{}
	}
	tracked.pgids[pgid] = true
}

func untrack(pgid int) {
	tracked.Lock()
	defer tracked.Unlock()
	delete(tracked.pgids, pgid)
}

func killTracked() {
	tracked.Lock()
	defer tracked.Unlock()
	for pgid := range tracked.pgids {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		delete(tracked.pgids, pgid)
	}
}

// startOwned starts cmd in its own process group, with Pdeathsig so it dies
// if poolbench is killed, and tracks the group for clean-up.
func startOwned(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	track(cmd.Process.Pid)
	return nil
}

// bareSim is a simulator started without any daemon: the baseline for what
// the daemon does with its engines.
type bareSim struct {
	cmd       *exec.Cmd
	out       *lineWatch
	startedAt time.Time     // just before exec
	started   time.Time     // Start returned
	waited    chan struct{} // closed once Wait returned: reaped and stdout drained
}

// startBareSim execs `self sim-engine --port N args...`.
func startBareSim(self string, args ...string) (*bareSim, error) {
	port, err := engine.FreePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	argv := append([]string{"sim-engine", "--host", "127.0.0.1", "--port", strconv.Itoa(port)}, args...)
	s := &bareSim{cmd: exec.Command(self, argv...), out: newLineWatch(), waited: make(chan struct{})}
	s.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	s.cmd.Stdout = s.out // not an *os.File: Wait returns once the pipe is drained, as the daemon's does
	s.startedAt = time.Now()
	if err := startOwned(s.cmd); err != nil {
		return nil, err
	}
	s.started = time.Now()
	go func() {
		_ = s.cmd.Wait()
		untrack(s.cmd.Process.Pid)
		close(s.waited)
	}()
	return s, nil
}

// signalAndWait sends sig and returns when the process was reaped and its
// stdout drained; past limit it SIGKILLs the group.
func (s *bareSim) signalAndWait(sig syscall.Signal, limit time.Duration) (time.Time, error) {
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.waited:
		return time.Now(), nil
	case <-time.After(limit):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.waited
		return time.Now(), fmt.Errorf("bare simulator pid %d did not exit within %s of %s", s.cmd.Process.Pid, limit, sig)
	}
}

// errExitedEarly: the simulator ended before it was ready (for instance
// because another process took its port between FreePort and its listen).
var errExitedEarly = errors.New("bare simulator exited before it was ready")

// waitReady waits for the simulator's "ready at_unix_nano=" line and
// returns the simulator's own timestamp.
func (s *bareSim) waitReady(limit time.Duration) (time.Time, error) {
	select {
	case <-s.out.ready:
		return s.out.readyAt, nil
	case <-s.waited:
		return time.Time{}, errExitedEarly
	case <-time.After(limit):
		return time.Time{}, fmt.Errorf("bare simulator pid %d not ready within %s", s.cmd.Process.Pid, limit)
	}
}

// lineWatch timestamps a simulator's first stdout line and parses its ready line.
type lineWatch struct {
	mu       sync.Mutex
	buf      []byte
	firstAt  time.Time // read only after ready is closed (the ready line comes later)
	ready    chan struct{}
	readyAt  time.Time // the simulator's own stamp in its ready line
	readAt   time.Time // when the ready line was read: when a supervisor could know
	sawFirst bool
	sawReady bool
}

func newLineWatch() *lineWatch {
	return &lineWatch{ready: make(chan struct{})}
}

func (w *lineWatch) Write(p []byte) (int, error) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if !w.sawFirst {
			w.sawFirst, w.firstAt = true, now
		}
		if t, ok := parseReady(line); ok && !w.sawReady {
			w.sawReady, w.readyAt, w.readAt = true, t, now
			close(w.ready)
		}
	}
	if len(w.buf) > 64<<10 { // a line that never ends: keep memory bounded
		w.buf = w.buf[:0]
	}
	return len(p), nil
}

// readyMarker is what the simulator prints when /health turns 200.
const readyMarker = "sim-engine: ready at_unix_nano="

func parseReady(line string) (time.Time, bool) {
	i := strings.Index(line, readyMarker)
	if i < 0 {
		return time.Time{}, false
	}
	f := strings.Fields(line[i+len(readyMarker):])
	if len(f) == 0 {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// ---- /proc ----

// procStatus reads a "Key:   N kB" field of /proc/PID/status, in bytes.
func procStatus(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			f := strings.Fields(v)
			n, err := strconv.ParseInt(f[0], 10, 64)
			return n * 1024, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, key)
}

// procStat returns the state, parent pid and utime+stime (clock ticks) of
// pid, from the project's one /proc/PID/stat reader (internal/proc).
func procStat(pid int) (state byte, ppid int, ticks int64, err error) {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return 0, 0, 0, err
	}
	return st.State, st.PPID, int64(st.UTime + st.STime), nil
}

// cpuTime is the CPU time pid's threads have used. It sums the nanosecond
// run times of /proc/PID/task/*/schedstat: an idle daemon uses less than one
// clock tick (10 ms) per second, below what utime+stime can show. Without
// schedstat it falls back to utime+stime.
func cpuTime(pid int) (time.Duration, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var sum time.Duration
	for _, t := range tasks {
		b, rerr := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if rerr != nil {
			err = rerr
			break
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			err = fmt.Errorf("empty schedstat of task %s", t.Name())
			break
		}
		n, perr := strconv.ParseInt(f[0], 10, 64)
		if perr != nil {
			err = perr
			break
		}
		sum += time.Duration(n)
	}
	if err == nil && len(tasks) > 0 {
		return sum, nil
	}
	_, _, ticks, err := procStat(pid)
	return time.Duration(ticks) * time.Second / clockTicks, err
}

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat: fixed at
// 100 by the Linux ABI on every architecture Go supports (no cgo sysconf needed).
const clockTicks = 100

// allPids lists the numeric entries of /proc.
func allPids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// childrenOf lists the live (non-zombie) children of pid.
func childrenOf(pid int) []int {
	var out []int
	for _, p := range allPids() {
		if st, pp, _, err := procStat(p); err == nil && pp == pid && st != 'Z' {
			out = append(out, p)
		}
	}
	return out
}

// leftovers lists live processes other than us that carry this run's marker.
func leftovers(runID string) []int {
	want := []byte(runEnv + "=" + runID)
	var out []int
	for _, p := range allPids() {
		if p == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p))
		if err != nil || !containsEntry(env, want) {
			continue
		}
		if st, _, _, err := procStat(p); err == nil && st != 'Z' {
			out = append(out, p)
		}
	}
	return out
}

func containsEntry(environ, entry []byte) bool {
	for _, e := range bytes.Split(environ, []byte{0}) {
		if bytes.Equal(e, entry) {
			return true
		}
	}
	return false
}

// sweep SIGKILLs every leftover of this run, by pid, and says how many there were.
func sweep(runID string) int {
	pids := leftovers(runID)
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	return len(pids)
}
