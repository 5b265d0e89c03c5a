// Finding the soak's own processes in /proc, and signalling them safely.
//
// Every process a soak run starts (the daemon, and through it every engine
// and every child an engine forks) carries POOLSOAK_RUN=<run id> in its
// environment: the daemon inherits it from us and engines inherit it from
// the daemon. /proc/PID/environ is fixed at exec, so the marker names the
// run's processes exactly, whatever their parent, session or process group
// became, and a reused pid is never mistaken for one of ours.

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	iproc "github.com/pool-managerd/pool-managerd/internal/proc"
)

// runEnv is the marker variable; its value is the run id.
const runEnv = "POOLSOAK_RUN"

// proc is one live process of the run.
type proc struct {
	pid, ppid, pgid int
	state           byte // R, S, T (stopped), ...
	cmd             string
}

func (p proc) String() string {
	return fmt.Sprintf("pid %d (ppid %d, pgid %d, state %c): %s", p.pid, p.ppid, p.pgid, p.state, p.cmd)
}

// scanRun lists the live (not zombie) processes marked with runID, except
// this one.
func scanRun(runID string) []proc {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	marker := []byte(runEnv + "=" + runID)
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if !marked(pid, marker) {
			continue
		}
		p, err := readProc(pid)
		if err != nil || p.state == 'Z' || p.state == 'X' {
			continue
		}
		out = append(out, p)
	}
	return out
}

// marked reports whether pid's environment holds exactly marker.
func marked(pid int, marker []byte) bool {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for _, kv := range bytes.Split(env, []byte{0}) {
		if bytes.Equal(kv, marker) {
			return true
		}
	}
	return false
}

// readProc reads state, ppid and pgid from /proc/PID/stat (internal/proc),
// and the command line for messages.
func readProc(pid int) (proc, error) {
	st, err := iproc.ReadStat(pid)
	if err != nil {
		return proc{}, err
	}
	p := proc{pid: pid, state: st.State, ppid: st.PPID, pgid: st.PGrp}
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	p.cmd = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	if len(p.cmd) > 160 {
		p.cmd = p.cmd[:160] + "…"
	}
	return p, nil
}

var errNotEngine = errors.New("not an engine leader of this run")

// signalEngine sends sig to pid if it is an engine leader of this run (its
// own group leader, marked with the run id). The process is pinned with a
// pidfd (os.FindProcess) before the check, so the signal cannot reach a
// process that reused the pid after the check. The caller owns the returned
// *os.Process (Release it).
func signalEngine(runID string, pid int, sig syscall.Signal) (*os.Process, error) {
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil, err
	}
	st, err := readProc(pid)
	if err != nil || st.pgid != pid || !marked(pid, []byte(runEnv+"="+runID)) {
		_ = p.Release()
		return nil, errNotEngine
	}
	if err := p.Signal(sig); err != nil {
		_ = p.Release()
		return nil, err
	}
	return p, nil
}

// killRun SIGKILLs every process of the run except those in keep (by pid),
// each with its process group when it leads one, and returns what it found.
// It never signals our own process group.
func killRun(runID string, keep map[int]bool) []proc {
	found := scanRun(runID)
	own := syscall.Getpgrp()
	for _, p := range found {
		if keep[p.pid] {
			continue
		}
		if p.pgid == p.pid && p.pgid != own && p.pgid > 1 {
			_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
		}
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	return found
}

// contStopped sends SIGCONT to every stopped process of the run.
func contStopped(runID string) int {
	n := 0
	for _, p := range scanRun(runID) {
		if p.state == 'T' || p.state == 't' {
			_ = syscall.Kill(p.pid, syscall.SIGCONT)
			n++
		}
	}
	return n
}
