// This file describes how an engine process ended.

package engine

import (
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Exit says how a process ended.
type Exit struct {
	Code      int    // exit status; -1 when killed by a signal
	Signal    string // "SIGKILL" etc; "" when it exited normally
	At        time.Time
	OOMKilled bool // the kernel's OOM killer ended a process of this engine (cgroup memory.events oom_kill rose)
}

// String is "exit code 3" or "killed by SIGKILL".
func (e Exit) String() string {
	if e.Signal != "" {
		return "killed by " + e.Signal
	}
	return "exit code " + strconv.Itoa(e.Code)
}

// LogValue logs an Exit as {exit_code, signal}; with an empty key
// (slog.Any("", exit)) the two fields are inlined at the top level.
func (e Exit) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("exit_code", e.Code), slog.String("signal", e.Signal))
}

// exitFromState converts a reaped process's state, which ended at at; a nil
// state (Wait never saw the process) reads as killed by SIGKILL.
func exitFromState(st *os.ProcessState, at time.Time) Exit {
	e := Exit{Code: -1, Signal: "SIGKILL", At: at}
	if st == nil {
		return e
	}
	ws, ok := st.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		e.Code, e.Signal = st.ExitCode(), ""
	case ws.Signaled():
		e.Signal = SignalName(ws.Signal())
	default:
		e.Code, e.Signal = ws.ExitStatus(), ""
	}
	return e
}

// signalNames are the Linux signal names, by number.
var signalNames = map[syscall.Signal]string{
	syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT",
	syscall.SIGILL: "SIGILL", syscall.SIGTRAP: "SIGTRAP", syscall.SIGABRT: "SIGABRT",
	syscall.SIGBUS: "SIGBUS", syscall.SIGFPE: "SIGFPE", syscall.SIGKILL: "SIGKILL",
	syscall.SIGUSR1: "SIGUSR1", syscall.SIGSEGV: "SIGSEGV", syscall.SIGUSR2: "SIGUSR2",
	syscall.SIGPIPE: "SIGPIPE", syscall.SIGALRM: "SIGALRM", syscall.SIGTERM: "SIGTERM",
	syscall.SIGSTKFLT: "SIGSTKFLT", syscall.SIGCHLD: "SIGCHLD", syscall.SIGCONT: "SIGCONT",
	syscall.SIGSTOP: "SIGSTOP", syscall.SIGTSTP: "SIGTSTP", syscall.SIGTTIN: "SIGTTIN",
	syscall.SIGTTOU: "SIGTTOU", syscall.SIGURG: "SIGURG", syscall.SIGXCPU: "SIGXCPU",
	syscall.SIGXFSZ: "SIGXFSZ", syscall.SIGVTALRM: "SIGVTALRM", syscall.SIGPROF: "SIGPROF",
	syscall.SIGWINCH: "SIGWINCH", syscall.SIGIO: "SIGIO", syscall.SIGPWR: "SIGPWR",
	syscall.SIGSYS: "SIGSYS",
}

// SignalName is the name of sig ("SIGSEGV"); real-time signals read
// "SIGRTMIN+n" and anything else "SIG<n>".
func SignalName(sig syscall.Signal) string {
	if name, ok := signalNames[sig]; ok {
		return name
	}
	const sigRTMIN, sigRTMAX = 34, 64
	if sig >= sigRTMIN && sig <= sigRTMAX {
		return "SIGRTMIN+" + strconv.Itoa(int(sig-sigRTMIN))
	}
	return "SIG" + strconv.Itoa(int(sig))
}
