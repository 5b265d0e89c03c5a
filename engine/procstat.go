// This file reads an engine's scheduling state and CPU time from /proc, the
// evidence liveness uses to tell a busy engine from a frozen one without
// asking the engine (whose HTTP threads may all be taken).

package engine

import (
	"errors"
	"time"

	"github.com/pool-managerd/pool-managerd/internal/proc"
)

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

// ReadProcStat reads /proc/PID/stat (parsed by internal/proc).
func ReadProcStat(pid int) (ProcStat, error) {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return ProcStat{}, err
	}
	return ProcStat{State: st.State, CPU: st.CPU()}, nil
}

// ProcStatFile is an engine's /proc/PID/stat kept open for repeated reads
// (liveness reads it around every probe): one pread each, bound to the
// process it was opened for. Not safe for concurrent use; nil-safe (a nil
// one's Read fails).
type ProcStatFile struct{ f *proc.StatFile }

// OpenProcStat opens pid's /proc/PID/stat; on error it still returns a
// usable *ProcStatFile whose Read returns that error.
func OpenProcStat(pid int) (*ProcStatFile, error) {
	f, err := proc.OpenStat(pid)
	return &ProcStatFile{f: f}, err
}

// Read reads the file anew.
func (p *ProcStatFile) Read() (ProcStat, error) {
	if p == nil {
		return ProcStat{}, errors.New("engine: no stat file")
	}
	st, err := p.f.Read()
	if err != nil {
		return ProcStat{}, err
	}
	return ProcStat{State: st.State, CPU: st.CPU()}, nil
}

// Close closes the file. Nil-safe.
func (p *ProcStatFile) Close() {
	if p != nil {
		_ = p.f.Close()
	}
}
