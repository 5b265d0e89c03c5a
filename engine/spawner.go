// This file holds the spawners: the few goroutines (at most maxSpawners),
// each locked to its OS thread for the rest of the daemon's life, on which
// every engine is forked.
//
// Why dedicated threads do every fork: the kernel sends an engine its
// parent-death signal (Pdeathsig, PR_SET_PDEATHSIG) when the *thread* that
// forked it exits, not when the daemon does, and the Go runtime retires
// threads (a locked goroutine that ends takes its thread along). A fork on
// an ordinary goroutine could therefore SIGKILL its engine at any later
// moment. A spawner locks its thread and never unlocks it nor returns, so
// that thread ends only with the daemon, and then every engine gets its
// SIGKILL, whichever way the daemon died (SIGKILL included).
//
// A bounded set of threads, not one per engine: waiting for an engine's
// exit (a pidfd in the runtime poller, or waitid) does not depend on the
// forking thread, so it runs on an ordinary goroutine (Process.supervise),
// and the daemon's thread count no longer grows with its pools. Why more
// than one: os/exec forks under syscall.ForkLock, released once the child
// has left the parent's memory, but Start then waits for the child's exec
// to finish, which on a busy host takes milliseconds. With a single
// spawner a burst (256 pools starting at once) queued each fork behind the
// previous child's exec: all-ready took about 2.2x the bare exec-all
// baseline in poolbench, against about 1.6x with a thread per engine and
// 1.7x with up to eight spawners. Spawners are added only while a request
// waits, so a daemon that starts its engines one at a time keeps one.

package engine

import (
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
)

// spawnReq is one fork for a spawner: cmd is started and the result of
// its Start is sent on done (capacity 1: the spawner never waits on it).
type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// spawnQueue is the capacity of the spawners' queue. A locked goroutine
// costs an OS thread switch each time it is woken; queued requests let a
// busy spawner take the next fork without one.
const spawnQueue = 64

// maxSpawners bounds the spawner goroutines, and so their OS threads (see
// the file comment for why there is more than one).
const maxSpawners = 8

var (
	spawnReqs  = make(chan spawnReq, spawnQueue)
	spawnersMu sync.Mutex
	spawnersN  atomic.Int32 // spawners started; never shrinks
)

func spawn(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	spawnReqs <- spawnReq{cmd: cmd, done: done}
	if len(spawnReqs) > 0 && spawnersN.Load() < maxSpawners {
		growSpawners()
	}
	return <-done
}

// growSpawners starts one more spawner while a request waits and fewer
// than maxSpawners run (the first spawn starts the first one).
func growSpawners() {
	spawnersMu.Lock()
	defer spawnersMu.Unlock()
	if len(spawnReqs) > 0 && spawnersN.Load() < maxSpawners {
		spawnersN.Add(1)
		go spawner(spawnReqs)
	}
}

// spawner is a forking goroutine. It locks its OS thread and never
// unlocks it and never returns (see the file comment): the thread must
// outlive every engine it forked, and the daemon's engines are forked
// until the daemon ends.
func spawner(reqs <-chan spawnReq) {
	runtime.LockOSThread()
	for r := range reqs { // never closed
		r.done <- r.cmd.Start()
	}
}
