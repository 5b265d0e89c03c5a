package pidrec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pool-managerd/pool-managerd/engine/cgroup"
)

const (
	// killWait bounds how long Sweep waits for killed orphans to die. The
	// GPU memory of an orphan is freed only when it exits, and the VRAM
	// guardrail of the first preload must not see it as still in use. An
	// engine in uninterruptible CUDA teardown can take seconds.
	killWait = 10 * time.Second
	// killPoll is how often Sweep looks for the killed orphans in /proc.
	killPoll = 20 * time.Millisecond
	// markedPasses bounds the /proc scans for marked workers: a pass that
	// finds nothing new ends them.
	markedPasses = 5
)

// Sweep kills the engines a previous daemon left behind. Call it once at
// start-up, before any engine starts. For each record: from another boot, or
// its process gone, or its pid reused (start time differs) → the record is
// stale and only removed; otherwise SIGKILL goes to the engine's process group
// and to the pid. Then, for every record of this boot with a token, whatever
// became of its leader, SIGKILL goes to each process anywhere in /proc whose
// environment holds exactly that engine's marker (EnvVar): the workers the
// leader left behind, in its old group or out of it. Sweep waits (up to
// killWait) for everything it killed to die. Every record is removed once
// handled; corrupt ones are logged and removed.
//
// A record that names a cgroup (Record.Cgroup) has that cgroup killed
// (cgroup.kill), waited for until empty and removed first, whatever became
// of its leader: that takes every process the engine started.
//
// Trust: a state_dir that fails CheckDir is refused whole (nothing is
// killed, err says why), and a record file not owned by the daemon's uid, or
// writable by group or others, is ignored with a warning and left in place:
// only the daemon itself can have written a record it acts on.
//
// killed counts the processes signalled one by one: engine leaders, and
// marked workers not already reached through a verified leader's group, and
// the processes of killed cgroups. err is non-nil only when state_dir cannot
// be read or is not trusted; a missing state_dir is a no-op.
func Sweep(stateDir string, logger *slog.Logger) (killed int, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := CheckDir(stateDir); err != nil {
		logger.Warn("pid records ignored: state_dir not trusted", "err", err)
		return 0, fmt.Errorf("pidrec: sweep: %w", err)
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
	var victims []victim
	marked := map[string]markedEngine{} // marker → its engine
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
		if err := trustedFile(path); err != nil {
			logger.Warn("pid record ignored: not trusted", "path", path, "err", err)
			continue
		}
		r, v := handle(path, boot, logger)
		if v.current && r.Cgroup != "" {
			killed += killCgroup(r, logger)
		}
		if v.killed {
			victims = append(victims, victim{poolID: r.PoolID, pid: r.PID, start: r.StartTime})
			killed++
		}
		if v.current && r.Token != "" {
			marked[marker(r.PoolID, r.Token)] = markedEngine{Record: r, groupKilled: v.groupKilled}
		}
		removeFile(path, logger)
	}
	workers, n := killMarked(marked, logger)
	victims = append(victims, workers...)
	killed += n
	waitGone(victims, time.Now().Add(killWait), logger)
	return killed, nil
}

// trustedFile checks that a record file is a regular file owned by the
// daemon's uid and writable by nobody else.
func trustedFile(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	case !ok:
		return errors.New("no owner information")
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("owned by uid %d, not the daemon's uid %d", st.Uid, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("mode %04o lets group or others write it", fi.Mode().Perm())
	}
	return nil
}

// killCgroup kills, empties and removes the cgroup a record of this boot
// names, and returns how many processes were in it.
func killCgroup(r Record, logger *slog.Logger) int {
	log := logger.With("pool_id", r.PoolID, "cgroup", r.Cgroup)
	if err := cgroup.ValidEnginePath(r.Cgroup); err != nil {
		log.Warn("pid record cgroup ignored", "err", err)
		return 0
	}
	cg := cgroup.Open(r.Cgroup)
	if _, err := os.Stat(r.Cgroup); err != nil {
		return 0 // removed already: its engine was stopped completely
	}
	n := len(cg.Procs())
	if err := cg.Kill(); err != nil {
		log.Warn("orphan engine cgroup kill failed", "err", err)
		return 0
	}
	// Reaps the killed processes that are our children (a daemon that is
	// pid 1 or a subreaper inherits orphans): a zombie keeps a cgroup
	// populated. Only pids listed in this engine cgroup are ever waited for.
	reap := func(pid int) {
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
	if !cg.WaitEmpty(killWait, reap) {
		log.Warn("orphan engine cgroup still populated after cgroup.kill", "wait", killWait)
		return n
	}
	if err := cg.Remove(); err != nil {
		log.Warn("orphan engine cgroup not removed", "err", err)
	}
	if n > 0 {
		log.Warn("orphan engine cgroup killed", "processes", n)
	}
	return n
}

// KillMarked SIGKILLs every process (outside the daemon's own process group)
// whose environment holds the marker of engine (poolID, token), waits up to
// wait for them to die, and returns how many still live. reap, when not nil,
// is called with each victim's pid while waiting (a subreaper daemon reaps
// the ones re-parented to it). The engine package calls it after every stop
// of an engine without a cgroup: whatever left the engine's process group
// (setsid, setpgid, a daemonizing double fork) still carries the marker.
//
// leader is the engine's (reaped) leader pid, for the log lines.
func KillMarked(poolID, token string, leader int, wait time.Duration, reap func(pid int), logger *slog.Logger) (left int) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if token == "" {
		return 0
	}
	marked := map[string]markedEngine{marker(poolID, token): {Record: Record{PoolID: poolID, PID: leader, PGID: leader}}}
	victims, _ := killMarked(marked, logger)
	return len(waitGoneReap(victims, time.Now().Add(wait), reap, logger))
}

// verdict is what handle did with one record.
type verdict struct {
	current     bool // a well-formed record of this boot: its marker may be swept
	killed      bool // the leader was signalled
	groupKilled bool // and its process group with it
}

// handle decides one record's fate and kills its process when it is ours.
func handle(path, boot string, logger *slog.Logger) (Record, verdict) {
	r, err := readRecord(path)
	if err != nil {
		logger.Warn("corrupt pid record removed", "path", path, "err", err)
		return r, verdict{}
	}
	log := logger.With("pool_id", r.PoolID, "pid", r.PID, "pgid", r.PGID, "argv0", r.Argv0)
	if r.BootID != boot {
		log.Info("stale pid record", "reason", "recorded before a reboot")
		return r, verdict{}
	}
	v := verdict{current: true}
	st, err := readStat(r.PID)
	switch {
	case err != nil:
		log.Info("stale pid record", "reason", "process gone", "err", err)
		return r, v
	case st.StartTime != r.StartTime:
		log.Info("stale pid record", "reason", "pid reused by another process")
		return r, v
	}
	// The group goes first: it takes the engine's workers with it. It is
	// only signalled while the verified engine is still in it, since that
	// alone keeps the group id from having been reused. A zombie leader
	// counts: its group may still hold live workers.
	if st.PGrp == r.PGID {
		if err := syscall.Kill(-r.PGID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			log.Warn("orphan engine group kill failed", "err", err)
		} else {
			v.groupKilled = true
		}
	} else {
		log.Warn("orphan engine left its process group, killing the pid only", "current_pgid", st.PGrp)
	}
	if err := syscall.Kill(r.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		log.Warn("orphan engine kill failed", "err", err)
		return r, v
	}
	log.Warn("orphan engine killed")
	v.killed = true
	return r, v
}

// markedEngine is a swept record whose processes carry a marker.
type markedEngine struct {
	Record
	groupKilled bool // its recorded group has been signalled already
}

// killMarked scans /proc and SIGKILLs every process whose environment holds
// one of the markers exactly. It never signals pid 1, the daemon, or a
// process in the daemon's own group, and leaves alone a process whose
// environ it cannot read. A marked process in the group of a verified leader
// was signalled with that group already: it is only waited for. A worker may
// fork while the scan runs, so the scan is repeated (up to markedPasses
// times) until a pass finds nothing new. It returns what to wait for and how
// many processes it signalled.
func killMarked(marked map[string]markedEngine, logger *slog.Logger) (victims []victim, killed int) {
	if len(marked) == 0 {
		return nil, 0
	}
	self := os.Getpid()
	seen := map[victim]bool{}
	for range markedPasses {
		entries, err := os.ReadDir("/proc")
		if err != nil {
			logger.Warn("orphan engine worker scan failed", "err", err)
			break
		}
		found := 0
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid <= 1 || pid == self {
				continue
			}
			// A cheap look first: most processes are not ours.
			if _, ok := markedBy(pid, marked); !ok {
				continue
			}
			v, signalled, ok := killIfMarked(pid, marked, seen, logger)
			if !ok {
				continue
			}
			seen[v] = true
			victims = append(victims, v)
			found++
			if signalled {
				killed++
			}
		}
		if found == 0 {
			break
		}
	}
	return victims, killed
}

// killIfMarked checks pid again with the process pinned by a pidfd
// (os.FindProcess), so the signal reaches the very process whose stat and
// environ were read, never a stranger that reused the pid since: a pidfd
// signal to a process that has died fails instead of landing elsewhere.
// ok says whether pid is a new victim (to wait for); signalled whether this
// call sent it the SIGKILL.
func killIfMarked(pid int, marked map[string]markedEngine, seen map[victim]bool, logger *slog.Logger) (v victim, signalled, ok bool) {
	p, err := os.FindProcess(pid)
	if err != nil {
		return v, false, false
	}
	defer p.Release()
	st, err := readStat(pid)
	if err != nil || st.State == 'Z' || st.State == 'X' || st.PGrp == syscall.Getpgrp() {
		return v, false, false
	}
	r, found := markedBy(pid, marked)
	if !found {
		return v, false, false
	}
	v = victim{poolID: r.PoolID, pid: pid, start: st.StartTime}
	if seen[v] {
		return v, false, false
	}
	if r.groupKilled && st.PGrp == r.PGID {
		return v, false, true // signalled with its group
	}
	log := logger.With("pool_id", r.PoolID, "pid", pid, "pgid", st.PGrp, "engine_pid", r.PID, "engine_pgid", r.PGID)
	if err := p.Signal(syscall.SIGKILL); err != nil {
		if !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, syscall.ESRCH) {
			log.Warn("orphan engine worker kill failed", "err", err)
		}
		return v, false, false
	}
	log.Warn("orphan engine worker killed")
	return v, true, true
}

var envPrefix = []byte(EnvVar + "=")

// markedBy returns the engine whose marker pid's environment holds, if any.
// An environ that cannot be read (another user's process, one that is not
// dumpable, one gone) is no proof: false.
func markedBy(pid int, marked map[string]markedEngine) (markedEngine, bool) {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return markedEngine{}, false
	}
	for kv := range bytes.SplitSeq(env, []byte{0}) {
		if !bytes.HasPrefix(kv, envPrefix) {
			continue
		}
		if r, ok := marked[string(kv)]; ok {
			return r, true
		}
	}
	return markedEngine{}, false
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

// victim is one process Sweep killed: pid and start time name it.
type victim struct {
	poolID string
	pid    int
	start  uint64
}

// waitGone polls until every killed process is gone (a zombie counts as
// gone: it holds no memory and its parent, or init, reaps it) or the
// deadline.
func waitGone(victims []victim, deadline time.Time, logger *slog.Logger) {
	waitGoneReap(victims, deadline, nil, logger)
}

// waitGoneReap is waitGone, calling reap (when not nil) with each pid still
// waited for, and returns those still alive at the deadline.
func waitGoneReap(victims []victim, deadline time.Time, reap func(pid int), logger *slog.Logger) []victim {
	wait := time.Until(deadline).Round(time.Millisecond)
	for len(victims) > 0 {
		alive := victims[:0]
		for _, v := range victims {
			if reap != nil {
				reap(v.pid)
			}
			st, err := readStat(v.pid)
			if err == nil && st.StartTime == v.start && st.State != 'Z' && st.State != 'X' {
				alive = append(alive, v)
			}
		}
		victims = alive
		if len(victims) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			for _, v := range victims {
				logger.Warn("orphan engine still alive after SIGKILL", "pool_id", v.poolID, "pid", v.pid, "wait", wait)
			}
			return victims
		}
		time.Sleep(killPoll)
	}
	return nil
}

func removeFile(path string, logger *slog.Logger) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		logger.Warn("pid record not removed", "path", path, "err", err)
	}
}
