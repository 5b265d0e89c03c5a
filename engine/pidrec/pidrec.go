// Package pidrec keeps one small JSON record per running engine in state_dir
// so that a daemon killed with SIGKILL can, at its next start, kill the
// engines it left behind (docs/contract.md §5). Pdeathsig covers most crashes; the
// records cover what it misses (an engine that cleared or outlived its death
// signal, for instance after exec'ing a setuid binary) and take the engine's
// whole process group with it.
//
// A record holds the pid and its /proc start time: the pair names one process
// for the life of one boot, so a pid reused by a stranger is never killed.
// The boot id makes records from before a reboot plainly stale.
//
// Workers: Pdeathsig is not inherited, so after a daemon SIGKILL an engine's
// workers (vLLM's worker processes, anything an engine forked) outlive their
// leader. With the leader dead the group id proves nothing (it may have been
// reused), so the workers are found by an environment marker instead: every
// engine start gets a random token, the engine's environment holds
// POOL_MANAGERD_ENGINE=<pool_id>:<token> (EnvVar, EnvValue) and the record
// holds the token. Children inherit the environment, and /proc/PID/environ
// shows the environment a process was exec'd with, so the marker names the
// engine's processes exactly, in its process group or out of it (setsid,
// setpgid), and a stranger never carries it. Limits: a process that clears
// the marker before exec'ing, or overwrites its initial environment area
// (some setproctitle implementations do), or whose environ the daemon may
// not read, is not found; under systemd, KillMode=mixed still takes what
// remains of the cgroup.
package pidrec

import (
	"github.com/pool-managerd/pool-managerd/internal/owndir"

	"crypto/rand"
	"encoding/hex"
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
	Token      string    `json:"token,omitempty"`  // the engine's marker token; "" in records from before markers
	Cgroup     string    `json:"cgroup,omitempty"` // the engine's own cgroup v2 directory; "" when it had none
	BootID     string    `json:"boot_id"`
	RecordedAt time.Time `json:"recorded_at"` // for operators reading the file
}

// EnvVar is the environment variable that marks an engine and every process
// it starts; its value is EnvValue(poolID, token).
const EnvVar = "POOL_MANAGERD_ENGINE"

// EnvValue is the value of EnvVar for one engine start.
func EnvValue(poolID, token string) string { return poolID + ":" + token }

// marker is the exact /proc/PID/environ entry of a marked process.
func marker(poolID, token string) string { return EnvVar + "=" + EnvValue(poolID, token) }

// NewToken returns a fresh random token for one engine start: 16 hex digits
// from crypto/rand, so no two engine starts (and no stranger) share it.
func NewToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails: crypto/rand aborts the program instead
	return hex.EncodeToString(b[:])
}

const (
	bootIDPath = "/proc/sys/kernel/random/boot_id"
	recordExt  = ".json"
	tempPrefix = ".tmp-" // never matches *.json, so Sweep cannot read a half-written record
)

// Write records a just-started engine. It reads the process's start time now,
// so call it right after the spawn. token is the one in the engine's
// EnvVar marker ("" for an engine started without one: Sweep then finds its
// group only through a live leader). The file appears atomically (temp file +
// rename). There is no fsync: a power loss means a reboot, and records from
// an earlier boot are stale anyway.
func Write(stateDir, poolID string, pid, pgid int, argv0, token string) error {
	return Save(stateDir, Record{PoolID: poolID, PID: pid, PGID: pgid, Argv0: argv0, Token: token})
}

// Save is Write with every field of r given (Cgroup too); it fills in
// StartTime, BootID and RecordedAt.
func Save(stateDir string, r Record) error {
	start, err := StartTime(r.PID)
	if err != nil {
		return err
	}
	boot, err := bootID()
	if err != nil {
		return err
	}
	r.StartTime, r.BootID, r.RecordedAt = start, boot, time.Now().UTC()
	return writeRecord(stateDir, r)
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

// PrepareDir creates stateDir (mode 0700) if it is missing and checks that
// it may be trusted (CheckDir).
func PrepareDir(stateDir string) error {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("state_dir %s: %w", stateDir, err)
	}
	return CheckDir(stateDir)
}

// CheckDir refuses a state_dir that someone other than the daemon's user
// could plant records in: it must be a directory (not a symlink) owned by
// the daemon's effective uid and writable by neither group nor others. A
// planted record would otherwise make the daemon SIGKILL the process it
// names. A missing dir is fine (nothing to trust yet).
func CheckDir(stateDir string) error {
	if err := owndir.Check("state_dir", stateDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
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
