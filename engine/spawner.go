// This file holds the spawner: the one goroutine, locked to its OS thread
// for the rest of the daemon's life, on which every engine is forked.
//
// Why one thread does every fork: the kernel sends an engine its
// parent-death signal (Pdeathsig, PR_SET_PDEATHSIG) when the *thread* that
// forked it exits, not when the daemon does, and the Go runtime retires
// threads (a locked goroutine that ends takes its thread along). A fork on
// an ordinary goroutine could therefore SIGKILL its engine at any later
// moment. The spawner's goroutine locks its thread and never unlocks it nor
// returns, so that thread ends only with the daemon, and then every engine
// gets its SIGKILL, whichever way the daemon died (SIGKILL included).
//
// One thread for all engines, not one per engine: waiting for an engine's
// exit (a pidfd in the runtime poller, or waitid) does not depend on the
// forking thread, so it runs on an ordinary goroutine (Process.supervise),
// and the daemon's thread count no longer grows with its pools. Forks are
// serialized by the spawner, but they already were: os/exec forks under
// syscall.ForkLock with CLONE_VFORK, so the forking thread is held until
// the child has exec'd, and no two forks of a process ever overlap.

package engine

import (
	"os/exec"
	"runtime"
	"sync"
)

// spawnReq is one fork for the spawner: cmd is started and the result of
// its Start is sent on done (capacity 1: the spawner never waits on it).
type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnerOnce sync.Once
	spawnReqs   chan spawnReq // unbuffered: a request is taken only by the spawner
)

// spawn runs cmd.Start on the spawner's thread and returns its error. The
// caller owns cmd afterwards (it must call cmd.Wait, as after any Start);
// Start's own goroutines (the output pipe copiers) are ordinary goroutines
// and need nothing of the spawner. The spawner starts with the first spawn.
func spawn(cmd *exec.Cmd) error {
	spawnerOnce.Do(func() {
		spawnReqs = make(chan spawnReq)
		go spawner(spawnReqs)
	})
	done := make(chan error, 1)
	spawnReqs <- spawnReq{cmd: cmd, done: done}
	return <-done
}

// spawner is the forking goroutine. It locks its OS thread and never
// unlocks it and never returns (see the file comment): the thread must
// outlive every engine it forked, and the daemon's engines are forked
// until the daemon ends.
func spawner(reqs <-chan spawnReq) {
	runtime.LockOSThread()
	for r := range reqs { // never closed
		r.done <- r.cmd.Start()
	}
}
