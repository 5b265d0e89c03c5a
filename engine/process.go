// This file runs one engine process: fork/exec into its own process group,
// Pdeathsig, output forwarding, and a stop that leaves no zombie and no
// grandchild behind.
//
// Life of a Process (one supervising goroutine per process):
//
//	Start ──► running ──(leader exits)──► leader is a zombie
//	                                         │ SIGKILL to -pgid (grandchildren die)
//	                                         ▼
//	                                      reaped (cmd.Wait; pipes drained,
//	                                         │      bounded by pipeCloseDelay)
//	                                         ▼
//	                                      orphans of the group reaped (when we
//	                                         │      are pid 1 or a subreaper)
//	                                         ▼
//	                                      contained processes gone (Launch only:
//	                                         │      cgroup.kill + "populated 0" + rmdir,
//	                                         │      or every marked process SIGKILLed);
//	                                         │      pid record removed once none is left
//	                                         ▼
//	                                      Done closed, Exit valid
//
// Stop and Kill only ever signal the group while its leader is unreaped: a
// zombie leader pins the pgid, so the number cannot have been reused by an
// unrelated process group.

package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pool-managerd/pool-managerd/engine/cgroup"
	"github.com/pool-managerd/pool-managerd/engine/pidrec"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// pipeCloseDelay is cmd.WaitDelay: how long Wait keeps reading stdout/stderr
// after the leader was reaped. Every process in the group has been SIGKILLed
// by then, so the pipes normally reach EOF within milliseconds; only a process
// that left the group (setsid, a double-forking daemon) or one stuck in the
// kernel can still hold them. Two seconds is ample to read what the dying
// group wrote, and short enough that such a straggler cannot hold a stop or a
// restart hostage.
const pipeCloseDelay = 2 * time.Second

// orphanReapWindow bounds how long we reap the group's orphans (members that
// were re-parented to us because we are pid 1 or a child subreaper) after
// the group SIGKILL. SIGKILLed processes exit in milliseconds; the bound only
// matters for a process stuck in uninterruptible sleep.
const orphanReapWindow = time.Second

// orphanReapPoll is the pause between two non-blocking reaps in that window.
const orphanReapPoll = 5 * time.Millisecond

// containWait bounds how long the end of an engine waits for its contained
// processes (its cgroup, or the processes carrying its marker) to die after
// SIGKILL. Only a process stuck in uninterruptible sleep takes longer; its
// pid record is then kept for the next start-up sweep.
const containWait = 10 * time.Second

// Containment kinds (Process.Containment).
const (
	ContainCgroup = "cgroup" // the engine's own cgroup v2: cgroup.kill takes everything
	ContainMarker = "marker" // the environment marker: every process carrying it is killed
	ContainGroup  = "group"  // plain Start: the process group only
)

// containment is what Launch adds to a plain Start.
type containment struct {
	poolID   string
	cg       *cgroup.Cgroup // the engine's own cgroup; nil: none
	token    string         // pidrec marker token (already in the environment)
	stateDir string         // where the pid record lives; "" none
	argv0    string
	logger   *slog.Logger
	onStart  func(*Process) // LaunchSpec.OnStart; nil: none
	onDone   func(*Process) // LaunchSpec.OnDone; nil: none
	// releasePort drops the port Launch picked from the handed-out set
	// (pickPort) once the engine is gone; nil: none (a fixed port).
	releasePort func()
}

// Spec describes one engine process.
type Spec struct {
	PoolID string
	// Argv is the expanded argv; Argv[0] is looked up in the daemon's PATH
	// when it has no slash.
	Argv []string
	// Env is the complete child environment (see CleanEnv). A nil Env means
	// CleanEnv(os.Environ(), nil), never the daemon's raw environment (which
	// carries NOTIFY_SOCKET and friends).
	Env []string
	// Dir is the working directory; "" means the daemon's.
	Dir string
	// Credential runs the engine as another user; nil means the daemon's user.
	Credential *syscall.Credential
	// Sink receives output lines; nil discards them (LastActivity still moves).
	Sink *Sink
	// Clock stamps StartedAt, LastActivity and Exit.At; nil = clock.Real.
	// The caller judges those stamps (a stall, a probe's wait) on the same
	// clock. The stop grace and the pipe and reap bounds stay on real time:
	// they bound what the kernel and os/exec do.
	Clock clock.Clock
}

// Process is one running (or finished) engine process and its process group.
type Process struct {
	pid       int // also the pgid: Setpgid with Pgid 0
	clock     clock.Clock
	startedAt time.Time
	sink      *Sink
	stdout    *lineWriter
	stderr    *lineWriter
	done      chan struct{}
	exit      Exit // written before done is closed

	// lastActivity is the unix-nano time of the last output, or startedAt.
	lastActivity atomic.Int64

	// output gets a value (non-blocking, capacity 1) for every line the
	// engine prints; see Output.
	output chan struct{}

	mu       sync.Mutex // guards reaped and termSent; held while signalling
	reaped   bool       // the leader has been (or is being) reaped: never signal -pid again
	termSent bool       // SIGTERM goes out once, however many Stops there are

	cont *containment   // nil for a plain Start
	cg   *cgroup.Cgroup // the cgroup the process really runs in; nil: none
	// cgEmpty: the cgroup read empty right after the leader exited (set and
	// read by the supervising goroutine only; see killContained).
	cgEmpty bool
}

// Start forks and execs spec.Argv in a new process group with
// Pdeathsig=SIGKILL and returns once the exec succeeded or failed.
//
// Pdeathsig caveat: the kernel sends the parent-death signal when the
// *thread* that forked the child exits, not when the daemon does, and the Go
// runtime may retire threads. So every fork happens on a spawner
// (spawner.go), one of at most a few goroutines each locked to its OS thread
// for the daemon's whole life; the engine's supervising goroutine, an
// ordinary one, only waits. If the daemon dies (even by SIGKILL) the
// spawners' threads die with it and the kernel SIGKILLs every engine. Grandchildren do not inherit
// Pdeathsig; the group SIGKILL and the daemon's pid records cover them.
func Start(spec Spec) (*Process, error) { return start(spec, nil) }

func start(spec Spec, cont *containment) (*Process, error) {
	if len(spec.Argv) == 0 || spec.Argv[0] == "" {
		return nil, errors.New("engine: start: empty argv")
	}
	env := spec.Env
	if env == nil {
		env = CleanEnv(os.Environ(), nil)
	}
	p := &Process{clock: clock.OrReal(spec.Clock), sink: spec.Sink, done: make(chan struct{}), cont: cont, output: make(chan struct{}, 1)}
	p.stdout = &lineWriter{stream: StreamStdout, sink: spec.Sink, clock: p.clock, activity: &p.lastActivity, notify: p.output}
	p.stderr = &lineWriter{stream: StreamStderr, sink: spec.Sink, clock: p.clock, activity: &p.lastActivity, notify: p.output}

	newCmd := func() *exec.Cmd {
		cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
		cmd.Env = env
		cmd.Dir = spec.Dir
		cmd.Stdout = p.stdout // not *os.File: exec makes the pipes and copies, bounded by WaitDelay
		cmd.Stderr = p.stderr
		cmd.WaitDelay = pipeCloseDelay
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Setpgid:    true,
			Pdeathsig:  syscall.SIGKILL,
			Credential: spec.Credential,
		}
		return cmd
	}

	started := make(chan error, 1)
	go p.supervise(newCmd, started)
	if err := <-started; err != nil {
		if spec.PoolID != "" {
			return nil, fmt.Errorf("engine: pool %s: start %s: %w", spec.PoolID, spec.Argv[0], err)
		}
		return nil, fmt.Errorf("engine: start %s: %w", spec.Argv[0], err)
	}
	return p, nil
}

// supervise has the engine forked (by the spawner, see Start), then waits
// for its exit and reaps it, on an ordinary goroutine: nothing here needs
// the forking thread.
func (p *Process) supervise(newCmd func() *exec.Cmd, started chan<- error) {
	cmd, err := p.fork(newCmd)
	if err != nil {
		p.dropCgroup()
		started <- err
		return
	}
	p.pid = cmd.Process.Pid
	p.startedAt = p.clock.Now()
	p.lastActivity.Store(p.startedAt.UnixNano())
	p.record(cmd)
	if c := p.cont; c != nil && c.onStart != nil {
		// Before Start returns: whatever Launch's caller does next (a
		// readiness answer it reports) comes after the start.
		c.onStart(p)
	}
	started <- nil

	waitExited(p.pid)                               // leader is a zombie now (or waitid failed; Wait copes)
	exitedAt, reapedAt := p.clock.Now(), time.Now() // Exit.At; the start of os/exec's (real-time) WaitDelay
	p.mu.Lock()
	_ = syscall.Kill(-p.pid, syscall.SIGKILL) // no grandchild survives its engine
	p.reaped = true
	p.mu.Unlock()
	// Whatever left the group goes now too, before the pipes are drained:
	// an escapee holding them would otherwise cost the whole WaitDelay.
	left := p.killContained()

	err = cmd.Wait() // reaps, then drains the pipes (bounded by WaitDelay)
	p.stdout.flush()
	p.stderr.flush()
	p.sink.reportDrops()
	// ErrWaitDelay only comes with a clean exit; after a crash, the time tells.
	if (errors.Is(err, exec.ErrWaitDelay) || time.Since(reapedAt) >= pipeCloseDelay) && p.sink != nil {
		p.sink.logger.Warn("engine output pipes still held open after the engine exited; closed them",
			"pid", p.pid, "wait_delay", pipeCloseDelay)
	}
	reapGroupOrphans(p.pid)
	ex := exitFromState(cmd.ProcessState, exitedAt)
	ex.OOMKilled = p.finishContained(left)
	p.exit = ex
	if c := p.cont; c != nil && c.releasePort != nil {
		c.releasePort() // before Done: whoever sees the engine gone may pick its port again
	}
	close(p.done)
	if c := p.cont; c != nil && c.onDone != nil {
		c.onDone(p)
	}
}

// fork starts the command on the spawner (spawn), into the engine's cgroup
// when it has one:
// clone3 with CLONE_INTO_CGROUP, so not even the first instruction of the
// engine runs outside it. Should that fail (an old kernel, a seccomp filter
// refusing clone3), the command is started plainly and moved into the
// cgroup right after; a second failure is the command's own (a bad path),
// and is returned.
func (p *Process) fork(newCmd func() *exec.Cmd) (*exec.Cmd, error) {
	cg := p.contCgroup()
	if cg == nil {
		cmd := newCmd()
		return cmd, spawn(cmd)
	}
	if fd, err := cg.OpenFD(); err == nil {
		cmd := newCmd()
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(fd.Fd())
		err := spawn(cmd)
		fd.Close() // only the clone needed it
		if err == nil {
			p.cg = cg
			return cmd, nil
		}
		p.cont.logger.Debug("engine.clone_into_cgroup_failed", "cgroup", cg.Path, "err", err)
	}
	cmd := newCmd()
	if err := spawn(cmd); err != nil {
		return cmd, err
	}
	if err := cg.Add(cmd.Process.Pid); err != nil {
		p.cont.logger.Warn("engine.cgroup_unavailable", "cgroup", cg.Path, "err", err, "containment", ContainMarker)
		return cmd, nil // dropCgroup happens at the end, with nothing in it
	}
	p.cg = cg
	return cmd, nil
}

func (p *Process) contCgroup() *cgroup.Cgroup {
	if p.cont == nil {
		return nil
	}
	return p.cont.cg
}

// dropCgroup removes a created cgroup the process never ran in.
func (p *Process) dropCgroup() {
	if cg := p.contCgroup(); cg != nil && p.cg == nil {
		_ = cg.Remove()
	}
}

// record writes the pid record of a Launched engine (before Start returns,
// so the end of the engine can never race its writing).
func (p *Process) record(cmd *exec.Cmd) {
	c := p.cont
	if c == nil || c.stateDir == "" {
		return
	}
	r := pidrec.Record{PoolID: c.poolID, PID: p.pid, PGID: p.pid, Argv0: c.argv0, Token: c.token}
	if p.cg != nil {
		r.Cgroup = p.cg.Path
	}
	if err := pidrec.Save(c.stateDir, r); err != nil {
		c.logger.Warn("pidrec.write_failed", "pid", p.pid, "err", err)
	}
}

// killContained SIGKILLs what the engine started outside its process group,
// once the leader has exited: cgroup.kill, or every process carrying the
// marker. It returns how many marked processes are still alive (0 with a
// cgroup: finishContained waits for that).
//
// A cgroup that already reads empty (the leader was its only process: a
// zombie is no member) needs neither the kill nor the wait: nothing can
// enter an empty engine cgroup again (only the daemon spawns into it, and a
// fork needs a living member), so finishContained goes straight to its
// removal. A daemon that reaps orphans (pid 1, a subreaper) always takes
// the kill-and-wait path, which reaps the members re-parented to it.
func (p *Process) killContained() int {
	c := p.cont
	switch {
	case c == nil:
		return 0
	case p.cg != nil:
		if !reapsOrphans() {
			if pop, err := p.cg.Populated(); err == nil && !pop {
				p.cgEmpty = true
				return 0
			}
		}
		if err := p.cg.Kill(); err != nil {
			c.logger.Warn("engine.cgroup_kill_failed", "cgroup", p.cg.Path, "err", err)
		}
		return 0
	default:
		return pidrec.KillMarked(c.poolID, c.token, p.pid, containWait, p.reapOrphan, c.logger)
	}
}

// finishContained runs after the leader was reaped: it waits (bounded by
// containWait) until the cgroup is empty and removes it, removes the pid
// record once nothing of the engine is left (and keeps it otherwise, for
// the next start-up sweep), and reports whether the kernel's OOM killer
// ended a process of the engine.
func (p *Process) finishContained(markedLeft int) (oom bool) {
	c := p.cont
	if c == nil {
		return false
	}
	left := markedLeft > 0
	if p.cg != nil {
		var reap func(int)
		if reapsOrphans() {
			reap = p.reapOrphan
		}
		if !p.cgEmpty && !p.cg.WaitEmpty(containWait, reap) {
			left = true
			c.logger.Error("engine.cgroup_not_empty", "pid", p.pid, "cgroup", p.cg.Path, "wait", containWait)
		} else {
			oom = p.cg.OOMKills() > 0
			if err := p.cg.Remove(); err != nil {
				c.logger.Warn("engine.cgroup_remove_failed", "cgroup", p.cg.Path, "err", err)
			}
		}
	} else {
		p.dropCgroup()
	}
	if left {
		c.logger.Error("engine.processes_left", "pid", p.pid, "marked_alive", markedLeft,
			"note", "pid record kept for the next start-up sweep")
		return oom
	}
	if c.stateDir != "" {
		if err := pidrec.Remove(c.stateDir, c.poolID, p.pid); err != nil {
			c.logger.Warn("pidrec.remove_failed", "pid", p.pid, "err", err)
		}
	}
	return oom
}

// reapOrphan reaps pid when it is an exited process re-parented to us (we
// are pid 1 or a subreaper); never the leader, whose status cmd.Wait takes.
func (p *Process) reapOrphan(pid int) {
	if pid == p.pid || !reapsOrphans() {
		return
	}
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
}

// Containment says what keeps this engine's processes from outliving it:
// ContainCgroup, ContainMarker (Launch without a usable cgroup) or
// ContainGroup (a plain Start).
func (p *Process) Containment() string {
	switch {
	case p.cg != nil:
		return ContainCgroup
	case p.cont != nil && p.cont.token != "":
		return ContainMarker
	}
	return ContainGroup
}

// Cgroup is the engine's cgroup directory; "" when it has none.
func (p *Process) Cgroup() string {
	if p.cg == nil {
		return ""
	}
	return p.cg.Path
}

// waitExited blocks until the leader has exited without reaping it
// (waitid WNOWAIT), so its pid and pgid cannot be reused while we SIGKILL the
// group. It waits on a pidfd through the runtime's poller, so the waiting
// goroutine parks and its processor goes back to the scheduler at once: a
// blocking waitid would hold the processor (and whatever goroutine this one
// just woke, queued on it: the caller of Start) until sysmon takes it back,
// which on an idle daemon can be milliseconds. Without pidfds (kernel <
// 5.10) it blocks in waitid; that ties up an OS thread per waiting engine,
// but nothing else: Pdeathsig hangs on a spawner's thread, not this one.
func waitExited(pid int) {
	if waitExitedPidfd(pid) {
		return
	}
	const pPID = 1     // P_PID
	var info [128]byte // siginfo_t; we only need the wait, not its contents
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid),
			uintptr(unsafe.Pointer(&info)), syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		if errno != syscall.EINTR {
			return
		}
	}
}

// waitExitedPidfd waits for pid's exit on a non-blocking pidfd in the
// runtime poller (a pidfd turns readable when its process has exited). It
// reports whether the leader has exited; false when there is no pollable
// pidfd, or after a wake-up the leader's state does not confirm, and the
// caller then waits in waitid.
func waitExitedPidfd(pid int) bool {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	exited, calls := false, 0
	err = rc.Read(func(fd uintptr) bool {
		calls++
		exited = pidfdReadable(int(fd))
		return exited || calls > 1 // a wake-up that is not the exit: waitid decides
	})
	return err == nil && exited
}

// pidfdReadable reports, without waiting, whether the process of a pidfd
// has exited (the pidfd polls readable).
func pidfdReadable(fd int) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, 0)
	return err == nil && n > 0 && pfd[0].Revents&unix.POLLIN != 0
}

// reapGroupOrphans reaps members of the (SIGKILLed) group that were
// re-parented to this daemon. That only happens when the daemon is pid 1 (a
// container without an init) or a child subreaper; otherwise init reaps them
// and this returns at once. wait4(-pgid) matches only this engine's group, so
// it cannot steal another engine's exit status.
func reapGroupOrphans(pgid int) {
	if !reapsOrphans() {
		return
	}
	deadline := time.Now().Add(orphanReapWindow)
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-pgid, &ws, syscall.WNOHANG, nil)
		switch {
		case err == syscall.EINTR || pid > 0:
			continue // reaped one; look for more
		case err == syscall.ECHILD && syscall.Kill(-pgid, 0) == syscall.ESRCH:
			return // the group is gone
		case time.Now().After(deadline):
			return
		}
		time.Sleep(orphanReapPoll)
	}
}

// reapsOrphans reports whether orphaned grandchildren are re-parented to us.
func reapsOrphans() bool {
	if os.Getpid() == 1 {
		return true
	}
	const prGetChildSubreaper = 37
	var v int32
	_, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetChildSubreaper, uintptr(unsafe.Pointer(&v)), 0)
	return errno == 0 && v != 0
}

// Pid is the leader's pid.
func (p *Process) Pid() int { return p.pid }

// Pgid is the process group id; it equals Pid.
func (p *Process) Pgid() int { return p.pid }

// StartedAt is when the exec succeeded, on the process's clock (Spec.Clock).
func (p *Process) StartedAt() time.Time { return p.startedAt }

// Done is closed after the leader is reaped, the group SIGKILLed and the
// output pipes drained (bounded by pipeCloseDelay).
func (p *Process) Done() <-chan struct{} { return p.done }

// Exit says how the leader ended; the zero Exit before Done is closed.
func (p *Process) Exit() Exit {
	select {
	case <-p.done:
		return p.exit
	default:
		return Exit{}
	}
}

// Output returns a channel that receives a value after the engine printed
// a line (on either stream). Values coalesce: one value stands for every
// line printed since the last receive, and a line printed while nobody
// receives is not queued beyond that one value, so the engine's output is
// never held up by a slow reader. The channel is never closed; select on
// Done as well.
func (p *Process) Output() <-chan struct{} { return p.output }

// LastActivity is the time of the last output (any bytes on stdout or
// stderr), or StartedAt when there was none, on the process's clock
// (Spec.Clock).
func (p *Process) LastActivity() time.Time {
	return time.Unix(0, p.lastActivity.Load())
}

// LastLine is the last line this process wrote on stream ("stdout" or
// "stderr"; "" if none), for an exit's last_error. Unlike Sink.LastLine it
// never shows a line from an earlier engine of the same pool.
func (p *Process) LastLine(stream string) string {
	switch stream {
	case StreamStdout:
		return p.stdout.lastLine()
	case StreamStderr:
		return p.stderr.lastLine()
	}
	return ""
}

// Stop sends SIGTERM to the group, and SIGCONT right after it to the group
// and to every process of the engine's cgroup (as systemd does: a stopped,
// SIGSTOPped engine could not act on the SIGTERM and would cost the whole
// grace), waits up to grace for the leader to exit, then SIGKILLs the group
// (and the cgroup) and waits for Done. The group is always SIGKILLed
// once the leader has exited. Stop is idempotent and safe from several
// goroutines (SIGTERM is sent once; each caller's grace is honoured, so a
// later Stop(0) cuts an earlier long grace short). It blocks until Done: a
// process stuck in uninterruptible sleep (a wedged GPU driver) blocks it.
func (p *Process) Stop(grace time.Duration) Exit {
	p.mu.Lock()
	if !p.reaped && !p.termSent {
		p.termSent = true
		_ = syscall.Kill(-p.pid, syscall.SIGTERM)
		_ = syscall.Kill(-p.pid, syscall.SIGCONT)
		if p.cg != nil {
			p.cg.Signal(syscall.SIGCONT)
		}
	}
	p.mu.Unlock()
	if grace > 0 {
		t := time.NewTimer(grace)
		select {
		case <-p.done:
			t.Stop()
			return p.exit
		case <-t.C:
		}
	}
	p.Kill()
	<-p.done
	return p.exit
}

// Kill sends SIGKILL to the group (and cgroup.kill to the engine's cgroup)
// now and returns without waiting.
func (p *Process) Kill() {
	p.signalGroup(syscall.SIGKILL)
	if p.cg != nil {
		_ = p.cg.Kill() // harmless once removed: the write then finds nothing
	}
}

func (p *Process) signalGroup(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped {
		_ = syscall.Kill(-p.pid, sig)
	}
}

// String is "pid N", for error messages.
func (p *Process) String() string {
	return fmt.Sprintf("pid %d", p.pid)
}
