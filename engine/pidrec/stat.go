package pidrec

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// procStat is what the sweep needs from /proc/PID/stat.
type procStat struct {
	State     byte   // field 3: R, S, D, Z (zombie), X (dead), ...
	PGrp      int    // field 5: process group id
	StartTime uint64 // field 22: clock ticks after boot
}

// StartTime returns the start time of pid in clock ticks since boot (field 22
// of /proc/PID/stat). With the boot id it names one process: a reused pid has
// a later start time. An error wrapping os.ErrNotExist means no such process.
func StartTime(pid int) (uint64, error) {
	st, err := readStat(pid)
	return st.StartTime, err
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, fmt.Errorf("pidrec: %w", err)
	}
	st, err := parseStat(string(b))
	if err != nil {
		return procStat{}, fmt.Errorf("pidrec: pid %d: %w", pid, err)
	}
	return st, nil
}

// parseStat parses one /proc/PID/stat line. Field 2 (comm) is in parentheses
// and may itself hold spaces and ')' (any process can name itself so), so the
// fields after it are found from the LAST ')'.
func parseStat(s string) (procStat, error) {
	end := strings.LastIndexByte(s, ')')
	if end < 0 || !strings.Contains(s[:end], "(") {
		return procStat{}, fmt.Errorf("malformed stat %q", s)
	}
	// fields[0] is field 3 (state), so field N is fields[N-3].
	fields := strings.Fields(s[end+1:])
	if len(fields) < 22-3+1 || len(fields[0]) != 1 {
		return procStat{}, fmt.Errorf("malformed stat %q", s)
	}
	start, err := strconv.ParseUint(fields[22-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stat starttime: %w", err)
	}
	pgrp, err := strconv.Atoi(fields[5-3])
	if err != nil {
		return procStat{}, fmt.Errorf("stat pgrp: %w", err)
	}
	return procStat{State: fields[0][0], PGrp: pgrp, StartTime: start}, nil
}
