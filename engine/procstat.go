// This file reads an engine's scheduling state and CPU time from /proc, the
// evidence liveness uses to tell a busy engine from a frozen one without
// asking the engine (whose HTTP threads may all be taken).

package engine

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture the daemon runs on.
const clockTicks = 100

// ProcStat is one reading of /proc/PID/stat.
type ProcStat struct {
	// State is the one-letter scheduling state: R running, S sleeping,
	// D uninterruptible, T stopped (SIGSTOP), t traced, Z zombie, ...
	State byte
	// CPU is user plus system time of all the process's threads so far.
	CPU time.Duration
}

// Stopped reports a process stopped by a signal or a tracer: it runs no
// code at all until SIGCONT.
func (s ProcStat) Stopped() bool { return s.State == 'T' || s.State == 't' }

// ReadProcStat reads /proc/PID/stat.
func ReadProcStat(pid int) (ProcStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ProcStat{}, err
	}
	return parseProcStat(b)
}

// parseProcStat parses "pid (comm) state ppid ... utime stime ...". comm may
// hold spaces and parentheses, so fields are counted after its last ')'.
func parseProcStat(b []byte) (ProcStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return ProcStat{}, fmt.Errorf("proc stat: malformed %q", b)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 || len(f[0]) != 1 {
		return ProcStat{}, fmt.Errorf("proc stat: malformed %q", b)
	}
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return ProcStat{}, fmt.Errorf("proc stat: malformed times in %q", b)
	}
	cpu := time.Duration(ut+st) * (time.Second / clockTicks)
	return ProcStat{State: f[0][0], CPU: cpu}, nil
}
