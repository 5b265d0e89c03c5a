package pidrec

import (
	"fmt"

	"github.com/pool-managerd/pool-managerd/internal/proc"
)

// procStat is what the sweep needs from /proc/PID/stat: State (field 3),
// PGrp (field 5) and StartTime (field 22, clock ticks after boot).
type procStat = proc.Stat

// StartTime returns the start time of pid in clock ticks since boot (field 22
// of /proc/PID/stat). With the boot id it names one process: a reused pid has
// a later start time. An error wrapping os.ErrNotExist means no such process.
func StartTime(pid int) (uint64, error) {
	st, err := readStat(pid)
	return st.StartTime, err
}

func readStat(pid int) (procStat, error) {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return procStat{}, fmt.Errorf("pidrec: %w", err)
	}
	return st, nil
}
