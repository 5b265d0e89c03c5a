package engine

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// procState is field 3 of /proc/pid/stat ("" when it cannot be read).
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

// waitExited returns once the leader has exited, waiting on a pidfd in the
// poller, and leaves it unreaped (a zombie pins its pid and pgid).
func TestWaitExitedLeavesTheLeaderUnreaped(t *testing.T) {
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	returned := make(chan bool, 1)
	go func() { returned <- waitExitedPidfd(pid) }()
	select {
	case <-returned:
		t.Fatal("waitExitedPidfd returned while the process runs")
	case <-time.After(50 * time.Millisecond):
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case ok := <-returned:
		if !ok {
			t.Skip("no pollable pidfd on this kernel: waitExited blocks in waitid instead")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("waitExitedPidfd did not return within 30 s of the SIGKILL")
	}
	if st := procState(pid); st != "Z" {
		t.Fatalf("after waitExitedPidfd the leader is in state %q, want Z (exited, not reaped)", st)
	}
	waitExited(pid) // and the public one returns at once for an exited leader
	if st := procState(pid); st != "Z" {
		t.Fatalf("after waitExited the leader is in state %q, want Z", st)
	}
}
