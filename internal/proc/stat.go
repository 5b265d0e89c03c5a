// Package proc is the one reader of /proc/PID/stat: the orphan sweep's
// process identity (pid + start time), liveness's scheduling state and CPU
// time, the RSS a stopping engine gives back, and the soak harness's process
// table all come from here.
//
// It is not github.com/prometheus/procfs: that one reads only files (so the
// parser cannot be tested on hostile command names without a fake /proc),
// and it scans 44 fields with fmt.Fscan where every caller here needs six.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// ClockTicks is USER_HZ, the unit of utime, stime and starttime in
// /proc/PID/stat: fixed at 100 by the Linux ABI on every architecture Go
// supports (no cgo sysconf needed).
const ClockTicks = 100

// Stat is what the daemon and its tools read from /proc/PID/stat.
type Stat struct {
	// State is the one-letter scheduling state (field 3): R running,
	// S sleeping, D uninterruptible, T stopped (SIGSTOP), t traced,
	// Z zombie, X dead, ...
	State     byte
	PPID      int    // field 4: parent pid
	PGrp      int    // field 5: process group id
	UTime     uint64 // field 14: user time, clock ticks
	STime     uint64 // field 15: system time, clock ticks
	StartTime uint64 // field 22: start time, clock ticks after boot; with the boot id it names one process (a reused pid starts later)
	RSSPages  uint64 // field 24: resident set size, pages
}

// CPU is user plus system time of all the process's threads so far.
func (s Stat) CPU() time.Duration {
	return time.Duration(s.UTime+s.STime) * (time.Second / ClockTicks)
}

// ReadStat reads and parses /proc/PID/stat. A read error is the os error
// (errors.Is(err, os.ErrNotExist) when there is no such process); a parse
// error names the pid. It opens, reads and closes the file with plain
// syscalls: os.ReadFile adds an fstat, fcntls and a (refused) epoll
// registration, twice the syscalls, on a path liveness takes every probe.
func ReadStat(pid int) (Stat, error) {
	f, err := OpenStat(pid)
	if err != nil {
		return Stat{}, err
	}
	defer f.Close()
	return f.Read()
}

// StatFile is one process's /proc/PID/stat, kept open: each Read is a
// single pread, and the file stays bound to the process it was opened for,
// so a pid reused after that process was reaped never reads as it (a read
// then fails with ESRCH). Not safe for concurrent use; a nil *StatFile's
// Read fails.
type StatFile struct {
	pid int
	fd  int
	buf [statBufBytes]byte // the parse keeps slices of it: on the stack it would escape per read
}

// statBufBytes holds a stat line (some 300 bytes; 52 fields of at most 20
// digits and a comm of at most 64 bytes stay near 1 KiB); a read that fills
// it is read again into a larger buffer.
const statBufBytes = 1 << 10

// OpenStat opens /proc/PID/stat for repeated reads; the error is as
// ReadStat's.
func OpenStat(pid int) (*StatFile, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &StatFile{pid: pid, fd: fd}, nil
}

// Read reads and parses the file anew.
func (f *StatFile) Read() (Stat, error) {
	if f == nil || f.fd < 0 {
		return Stat{}, errors.New("proc: stat file not open")
	}
	b, err := f.pread(f.buf[:])
	if err == nil && len(b) == len(f.buf) {
		b, err = f.pread(make([]byte, 8*statBufBytes))
	}
	if err != nil {
		return Stat{}, &os.PathError{Op: "read", Path: "/proc/" + strconv.Itoa(f.pid) + "/stat", Err: err}
	}
	st, err := ParseStat(b)
	if err != nil {
		return Stat{}, fmt.Errorf("pid %d: %w", f.pid, err)
	}
	return st, nil
}

// pread reads the file from its start into buf.
func (f *StatFile) pread(buf []byte) ([]byte, error) {
	for {
		n, err := syscall.Pread(f.fd, buf, 0)
		if err != syscall.EINTR {
			return buf[:max(n, 0)], err
		}
	}
}

// Close closes the file; later Reads fail. Nil-safe.
func (f *StatFile) Close() error {
	if f == nil || f.fd < 0 {
		return nil
	}
	err := syscall.Close(f.fd)
	f.fd = -1
	return err
}

// ParseStat parses one /proc/PID/stat line, "pid (comm) state ppid ...".
// comm is in parentheses and may itself hold spaces, '(' and ')' (any
// process can name itself so), so the fields after it are counted from the
// LAST ')'. A line without "(...)", with a state that is not one letter,
// with fewer than 24 fields or with a non-number where one is read is
// malformed.
func ParseStat(b []byte) (Stat, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 || !bytes.Contains(b[:end], []byte("(")) {
		return Stat{}, fmt.Errorf("malformed stat %q", b)
	}
	// f[0] is field 3 (state), so field N is f[N-3]. The fields are cut
	// into an array on the stack: liveness parses this on every probe.
	var f [24 - 3 + 1][]byte
	nf := 0
	for rest := b[end+1:]; nf < len(f); {
		rest = bytes.TrimLeft(rest, " \t\n")
		if len(rest) == 0 {
			break
		}
		i := bytes.IndexAny(rest, " \t\n")
		if i < 0 {
			i = len(rest)
		}
		f[nf], rest = rest[:i], rest[i:]
		nf++
	}
	if nf < len(f) || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("malformed stat %q", b)
	}
	st := Stat{State: f[0][0]}
	var err error
	num := func(field int, name string) uint64 {
		v, perr := strconv.ParseUint(string(f[field-3]), 10, 64)
		if perr != nil && err == nil {
			err = fmt.Errorf("stat %s: %w", name, perr)
		}
		return v
	}
	st.PPID = int(num(4, "ppid"))
	st.PGrp = int(num(5, "pgrp"))
	st.UTime = num(14, "utime")
	st.STime = num(15, "stime")
	st.StartTime = num(22, "starttime")
	st.RSSPages = num(24, "rss")
	if err != nil {
		return Stat{}, err
	}
	return st, nil
}
