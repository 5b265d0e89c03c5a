// This file holds the simulator's deliberate misbehaviour: dying by a
// signal, children that hold the pipes, and a flood of output.

package sim

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"syscall"
	"time"
	"unsafe"
)

// spamTick is how often the --spam writer catches up with its rate.
const spamTick = 10 * time.Millisecond

// dieBySignal ends the process by sig as a crashing C++ server would, so the
// parent sees WIFSIGNALED. The Go runtime turns a SIGSEGV or SIGABRT into a
// traceback and exit code 2, so the default disposition is restored first.
// Returns only if the signal somehow did not kill us.
func dieBySignal(sig syscall.Signal) {
	// No core file from a simulated crash: a limit of 1 byte also stops
	// core_pattern pipes (systemd-coredump).
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_CORE, &lim) == nil && lim.Max >= 1 {
		lim.Cur = 1
		_ = syscall.Setrlimit(syscall.RLIMIT_CORE, &lim)
	}
	if sig != syscall.SIGKILL && sig != syscall.SIGSTOP {
		signal.Reset(sig)
		var dfl [4]uint64 // struct sigaction, all zero: SIG_DFL, no flags, empty mask
		_, _, _ = syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0)
	}
	_ = syscall.Kill(os.Getpid(), sig)
	time.Sleep(time.Second)
}

// forkChildren starts --fork-children children in our process group and,
// with --fork-escaped-child, one in its own session. They re-exec this binary
// with the hidden --child-sleep flag, inherit stdout/stderr (so they hold the
// daemon's pipes) and ignore SIGTERM: only a group SIGKILL removes them.
func forkChildren(cfg config, args []string) error {
	for i := 0; i < cfg.forkChildren+boolInt(cfg.forkEscaped); i++ {
		escaped := i == cfg.forkChildren
		cmd := exec.Command("/proc/self/exe", append(selfPrefix(args), "--child-sleep", cfg.childLife.String())...)
		cmd.Args[0] = os.Args[0]
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if escaped {
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		fmt.Printf("sim-engine: child pid=%d escaped=%t\n", cmd.Process.Pid, escaped)
		go func() { _ = cmd.Wait() }() // reap it if it ends while we live
	}
	return nil
}

// selfPrefix is what came between the program name and Main's args
// ("sim-engine" under the daemon binary, nothing under a test binary), so a
// re-exec lands in Main again.
func selfPrefix(args []string) []string {
	if n := len(os.Args) - len(args); n >= 1 && slices.Equal(os.Args[n:], args) {
		return slices.Clone(os.Args[1:n])
	}
	return []string{"sim-engine"}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// childMain is a forked child: ignore SIGTERM and hold the inherited pipes.
func childMain(life time.Duration) int {
	signal.Ignore(syscall.SIGTERM)
	time.Sleep(life)
	return 0
}

// spam prints perSec numbered lines per second on stdout until we exit.
// Writes stay whole lines of at most pipeBuf bytes, which a pipe takes
// atomically, so exiting mid-flood never leaves half a line behind.
func spam(perSec int) {
	const pipeBuf = 4096 // PIPE_BUF on Linux
	w := bufio.NewWriterSize(os.Stdout, pipeBuf)
	start := time.Now()
	var sent int64
	var line []byte
	t := time.NewTicker(spamTick)
	defer t.Stop()
	for range t.C {
		due := int64(time.Since(start).Seconds()*float64(perSec)) - sent
		for ; due > 0; due-- {
			sent++
			line = fmt.Appendf(line[:0], "sim-engine: spam line %d: the quick brown fox jumps over the lazy dog\n", sent)
			if w.Available() < len(line) {
				_ = w.Flush()
			}
			_, _ = w.Write(line)
		}
		_ = w.Flush()
	}
}
