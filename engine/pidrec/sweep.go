package pidrec

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	// killWait bounds how long Sweep waits for killed orphans to die. The
	// GPU memory of an orphan is freed only when it exits, and the VRAM
	// guardrail of the first preload must not see it as still in use. An
	// engine in uninterruptible CUDA teardown can take seconds.
	killWait = 10 * time.Second
	// killPoll is how often Sweep looks for the killed orphans in /proc.
	killPoll = 20 * time.Millisecond
)

// Sweep kills the engines a previous daemon left behind. Call it once at
// start-up, before any engine starts. For each record: from another boot, or
// its process gone, or its pid reused (start time differs) → the record is
// stale and only removed; otherwise SIGKILL goes to the engine's process group
// and to the pid, and Sweep waits (up to killWait) for them to die. Every
// record is removed once handled; corrupt ones are logged and removed.
//
// killed counts the orphans signalled. err is non-nil only when state_dir
// cannot be read; a missing state_dir is a no-op.
func Sweep(stateDir string, logger *slog.Logger) (killed int, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	entries, err := os.ReadDir(stateDir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pidrec: sweep: %w", err)
	}
	boot, err := bootID()
	if err != nil {
		return 0, err
	}
	var victims []Record
	for _, e := range entries {
		path := filepath.Join(stateDir, e.Name())
		switch {
		case !e.Type().IsRegular():
			continue
		case strings.HasPrefix(e.Name(), tempPrefix): // a write cut short by a crash
			removeFile(path, logger)
			continue
		case !strings.HasSuffix(e.Name(), recordExt):
			continue
		}
		if r, ok := handle(path, boot, logger); ok {
			victims = append(victims, r)
		}
		removeFile(path, logger)
	}
	waitGone(victims, time.Now().Add(killWait), logger)
	return len(victims), nil
}

// handle decides one record's fate and kills its process when it is ours.
func handle(path, boot string, logger *slog.Logger) (Record, bool) {
	r, err := readRecord(path)
	if err != nil {
		logger.Warn("corrupt pid record removed", "path", path, "err", err)
		return r, false
	}
	log := logger.With("pool_id", r.PoolID, "pid", r.PID, "pgid", r.PGID, "argv0", r.Argv0)
	if r.BootID != boot {
		log.Info("stale pid record", "reason", "recorded before a reboot")
		return r, false
	}
	st, err := readStat(r.PID)
	switch {
	case err != nil:
		log.Info("stale pid record", "reason", "process gone", "err", err)
		return r, false
	case st.StartTime != r.StartTime:
		log.Info("stale pid record", "reason", "pid reused by another process")
		return r, false
	}
	// The group goes first: it takes the engine's workers with it. It is
	// only signalled while the verified engine is still in it, since that
	// alone keeps the group id from having been reused. A zombie leader
	// counts: its group may still hold live workers.
	if st.PGrp == r.PGID {
		if err := syscall.Kill(-r.PGID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			log.Warn("orphan engine group kill failed", "err", err)
		}
	} else {
		log.Warn("orphan engine left its process group, killing the pid only", "current_pgid", st.PGrp)
	}
	if err := syscall.Kill(r.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		log.Warn("orphan engine kill failed", "err", err)
		return r, false
	}
	log.Warn("orphan engine killed")
	return r, true
}

func readRecord(path string) (Record, error) {
	var r Record
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, err
	}
	return r, r.valid()
}

// valid refuses records whose pid or pgid would make kill(2) hit far more
// than one engine: kill(0) is our own group, kill(-1) every process we may
// signal, and 1 is init.
func (r Record) valid() error {
	switch {
	case r.PID <= 1 || r.PGID <= 1:
		return fmt.Errorf("pid %d / pgid %d out of range", r.PID, r.PGID)
	case r.PID == os.Getpid() || r.PGID == syscall.Getpgrp():
		return fmt.Errorf("pid %d / pgid %d is the daemon itself", r.PID, r.PGID)
	case r.StartTime == 0 || r.BootID == "":
		return errors.New("start_time or boot_id missing")
	}
	return nil
}

// waitGone polls until every killed orphan is gone (a zombie counts as gone:
// it holds no memory and its parent, now init, reaps it) or the deadline.
func waitGone(victims []Record, deadline time.Time, logger *slog.Logger) {
	for len(victims) > 0 {
		alive := victims[:0]
		for _, r := range victims {
			st, err := readStat(r.PID)
			if err == nil && st.StartTime == r.StartTime && st.State != 'Z' && st.State != 'X' {
				alive = append(alive, r)
			}
		}
		victims = alive
		if len(victims) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, r := range victims {
				logger.Warn("orphan engine still alive after SIGKILL", "pool_id", r.PoolID, "pid", r.PID, "wait", killWait)
			}
			return
		}
		time.Sleep(killPoll)
	}
}

func removeFile(path string, logger *slog.Logger) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		logger.Warn("pid record not removed", "path", path, "err", err)
	}
}
