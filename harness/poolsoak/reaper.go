// poolsoak is a child subreaper and reaps every orphan at once, as init or
// systemd does for a real daemon. This matters after the daemon's SIGKILL:
// its engines die of Pdeathsig and, re-parented to us, are reaped at once,
// just as in production. (An init that never reaps would leave them zombies,
// and a zombie leader still lets the next daemon's sweep kill its group,
// which hides what production would see.)
//
// Every child the soak starts itself goes through spawn, which registers
// it before the reaper can see it exit; the reaper hands such a child's
// status to its waiter and counts everything else as a reaped orphan.
// Nothing here calls exec.Cmd.Wait, which would race the reaper.

package main

import (
	"fmt"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const prSetChildSubreaper = 36 // prctl(2)

// reaperIdle is how long the reaper sleeps when we have no child at all.
const reaperIdle = 20 * time.Millisecond

type reaper struct {
	mu      sync.Mutex
	waiting map[int]chan syscall.WaitStatus
	orphans atomic.Int64
}

// theReaper makes this process a subreaper and starts reaping, once.
var theReaper = sync.OnceValue(func() *reaper {
	r := &reaper{waiting: map[int]chan syscall.WaitStatus{}}
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	go r.loop()
	return r
})

func (r *reaper) loop() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil: // ECHILD: no children right now
			time.Sleep(reaperIdle)
			continue
		}
		r.mu.Lock()
		ch, ours := r.waiting[pid]
		delete(r.waiting, pid)
		r.mu.Unlock()
		if ours {
			ch <- ws
		} else {
			r.orphans.Add(1)
		}
	}
}

// child is a process the soak started.
type child struct {
	pid  int
	done chan struct{} // closed once reaped
	err  error         // nil for exit status 0; set before done is closed
}

// spawn starts cmd and returns once it runs. With lockThread, the start
// happens on a locked OS thread that stays until the child is reaped:
// Pdeathsig fires when the forking thread ends, not the process.
func spawn(cmd *exec.Cmd, lockThread bool) (*child, error) {
	r := theReaper()
	c := &child{done: make(chan struct{})}
	status := make(chan syscall.WaitStatus, 1)
	started := make(chan error, 1)
	go func() {
		if lockThread {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
		}
		r.mu.Lock() // the reaper cannot look the pid up before it is registered
		err := cmd.Start()
		if err == nil {
			c.pid = cmd.Process.Pid
			r.waiting[c.pid] = status
		}
		r.mu.Unlock()
		started <- err
		if err != nil {
			return
		}
		ws := <-status
		_ = cmd.Process.Release()
		if !ws.Exited() || ws.ExitStatus() != 0 {
			c.err = fmt.Errorf("%s", describeStatus(ws))
		}
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return c, nil
}

func describeStatus(ws syscall.WaitStatus) string {
	switch {
	case ws.Signaled():
		return "killed by " + sigName(ws.Signal())
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}
