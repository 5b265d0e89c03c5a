// Package pidrec keeps one small JSON record per running engine in state_dir
// so that a daemon killed with SIGKILL can, at its next start, kill the
// engines it left behind (CONTRACT §5). Pdeathsig covers most crashes; the
// records cover what it misses (an engine that cleared or outlived its death
// signal, for instance after exec'ing a setuid binary) and take the engine's
// whole process group with it.
//
// Not covered: workers left in a group whose leader is already dead. With no
// verified member the group id may have been reused, so the sweep leaves it;
// under systemd, KillMode=mixed kills what remains of the cgroup.
//
// A record holds the pid and its /proc start time: the pair names one process
// for the life of one boot, so a pid reused by a stranger is never killed.
// The boot id makes records from before a reboot plainly stale.
package pidrec

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Record is the on-disk form of one engine process.
type Record struct {
	PoolID     string    `json:"pool_id"`
	PID        int       `json:"pid"`
	PGID       int       `json:"pgid"`
	StartTime  uint64    `json:"start_time"` // /proc/PID/stat field 22: clock ticks since boot
	Argv0      string    `json:"argv0"`
	BootID     string    `json:"boot_id"`
	RecordedAt time.Time `json:"recorded_at"` // for operators reading the file
}

const (
	bootIDPath = "/proc/sys/kernel/random/boot_id"
	recordExt  = ".json"
	tempPrefix = ".tmp-" // never matches *.json, so Sweep cannot read a half-written record
)

// Write records a just-started engine. It reads the process's start time now,
// so call it right after the spawn. The file appears atomically (temp file +
// rename). There is no fsync: a power loss means a reboot, and records from
// an earlier boot are stale anyway.
func Write(stateDir, poolID string, pid, pgid int, argv0 string) error {
	start, err := StartTime(pid)
	if err != nil {
		return err
	}
	boot, err := bootID()
	if err != nil {
		return err
	}
	return writeRecord(stateDir, Record{
		PoolID: poolID, PID: pid, PGID: pgid, StartTime: start,
		Argv0: argv0, BootID: boot, RecordedAt: time.Now().UTC(),
	})
}

func writeRecord(stateDir string, r Record) error {
	name, err := fileName(r.PoolID, r.PID)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("pidrec: %w", err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("pidrec: %w", err)
	}
	tmp, err := os.CreateTemp(stateDir, tempPrefix+"*")
	if err != nil {
		return fmt.Errorf("pidrec: %w", err)
	}
	_, err = tmp.Write(append(data, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(stateDir, name))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("pidrec: %w", err)
	}
	return nil
}

// Remove deletes the record of an engine that has been reaped. A missing
// record is not an error.
func Remove(stateDir, poolID string, pid int) error {
	name, err := fileName(poolID, pid)
	if err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(stateDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pidrec: %w", err)
	}
	return nil
}

// fileName is "<pool_id>.<pid>.json". Pool ids are validated by config; the
// check here only keeps a bad id from naming a path outside state_dir.
func fileName(poolID string, pid int) (string, error) {
	if poolID == "" || poolID == "." || poolID == ".." || strings.ContainsAny(poolID, "/\x00") {
		return "", fmt.Errorf("pidrec: invalid pool id %q", poolID)
	}
	if pid <= 0 {
		return "", fmt.Errorf("pidrec: invalid pid %d", pid)
	}
	return poolID + "." + strconv.Itoa(pid) + recordExt, nil
}

func bootID() (string, error) {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "", fmt.Errorf("pidrec: boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
