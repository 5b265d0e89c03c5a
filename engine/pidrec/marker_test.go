package pidrec

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// tree is an engine as the tests start it: `sh` leading its own process
// group, with n `sleep` workers forked in that group, all with env.
type tree struct {
	cmd     *exec.Cmd
	leader  int
	workers []int
}

func startTree(t *testing.T, env []string, n int) *tree {
	t.Helper()
	cmd := exec.Command("sh", "-c", `i=0; while [ $i -lt "$1" ]; do sleep 300 & echo $!; i=$((i+1)); done; wait`, "sh", strconv.Itoa(n))
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	tr := &tree{cmd: cmd, leader: cmd.Process.Pid}
	t.Cleanup(func() { syscall.Kill(-tr.leader, syscall.SIGKILL); cmd.Wait() })
	r := bufio.NewReader(out)
	for range n {
		line, err := r.ReadString('\n')
		must(t, err)
		pid, err := strconv.Atoi(strings.TrimSpace(line))
		must(t, err)
		// Pinned by a pidfd: the cleanup never reaches a reused pid. The
		// workers outlive their leader, so the group kill above may miss them.
		p, err := os.FindProcess(pid)
		must(t, err)
		t.Cleanup(func() { p.Kill(); p.Release() })
		tr.workers = append(tr.workers, pid)
	}
	return tr
}

// killLeader SIGKILLs the leader alone and reaps it, as Pdeathsig and init
// do after a daemon SIGKILL: its workers stay, orphaned, in its group.
func (tr *tree) killLeader(t *testing.T) {
	t.Helper()
	must(t, syscall.Kill(tr.leader, syscall.SIGKILL))
	tr.cmd.Wait()
	if alive(t, tr.leader) {
		t.Fatalf("leader %d still alive", tr.leader)
	}
}

// startSleep starts `sleep 300`, our own child, with env and attr.
func startSleep(t *testing.T, env []string, attr *syscall.SysProcAttr) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	cmd.Env = env
	cmd.SysProcAttr = attr
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// withEnv is our environment without any marker, plus kv.
func withEnv(kv ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(s string) bool { return strings.HasPrefix(s, EnvVar+"=") })
	return append(env, kv...)
}

// waitDead waits until every pid is gone (or a zombie).
func waitDead(t *testing.T, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		testutil.Eventually(t, 30*time.Second, fmt.Sprintf("process %d to die in the sweep", pid), func() bool { return !alive(t, pid) })
	}
}

func killedBySIGKILL(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	var exitErr *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &exitErr) ||
		exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("pid %d ended with %v, want killed by SIGKILL", cmd.Process.Pid, err)
	}
}

func stillAlive(t *testing.T, what string, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if !alive(t, pid) {
			t.Errorf("%s (pid %d) was killed", what, pid)
		}
	}
}

// logLines returns the JSON log records with message msg.
func logLines(t *testing.T, logs, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(logs, "\n") {
		if !strings.Contains(l, `"msg":"`+msg+`"`) {
			continue
		}
		var rec map[string]any
		must(t, json.Unmarshal([]byte(l), &rec))
		out = append(out, rec)
	}
	return out
}

// The gap Pdeathsig leaves: the leader of an engine died with its daemon
// and was reaped, its workers live on in its group. The marker names them.
func TestSweepKillsMarkedWorkersOfDeadLeader(t *testing.T) {
	dir := t.TempDir()
	token := NewToken()
	mark := EnvVar + "=" + EnvValue("vllm", token)
	tr := startTree(t, withEnv(mark), 2)
	inGroup := &syscall.SysProcAttr{Setpgid: true, Pgid: tr.leader}
	unmarked := startSleep(t, withEnv(), inGroup)
	otherToken := startSleep(t, withEnv(EnvVar+"="+EnvValue("vllm", NewToken())), inGroup)
	otherPool := startSleep(t, withEnv(EnvVar+"="+EnvValue("llama", token)), inGroup)
	prefixed := startSleep(t, withEnv("X"+mark), inGroup)
	escaped := startSleep(t, withEnv(mark), &syscall.SysProcAttr{Setsid: true})
	ownGroup := startSleep(t, withEnv(mark), nil) // in the daemon's (our) group
	must(t, Write(dir, "vllm", tr.leader, tr.leader, "sh", token))
	tr.killLeader(t)

	var logs bytes.Buffer
	killed, err := Sweep(dir, logTo(&logs))
	if err != nil || killed != 3 {
		t.Fatalf("Sweep = %d, %v; want 3 (two workers, one escaped), nil\n%s", killed, err, logs.String())
	}
	waitDead(t, tr.workers...)
	killedBySIGKILL(t, escaped)
	stillAlive(t, "an unmarked process in the group", unmarked.Process.Pid)
	stillAlive(t, "a process with another engine's token", otherToken.Process.Pid)
	stillAlive(t, "a process with another pool's marker", otherPool.Process.Pid)
	stillAlive(t, "a process with a variable ending in the marker", prefixed.Process.Pid)
	stillAlive(t, "a marked process in the daemon's own group", ownGroup.Process.Pid)
	if got := entries(t, dir); len(got) != 0 {
		t.Fatalf("records left after sweep: %v", got)
	}

	lines := logLines(t, logs.String(), "orphan engine worker killed")
	got := map[int]int{} // pid → pgid
	for _, l := range lines {
		if l["pool_id"] != "vllm" || l["engine_pid"] != float64(tr.leader) {
			t.Errorf("worker log line %v", l)
		}
		pid, _ := l["pid"].(float64)
		pgid, _ := l["pgid"].(float64)
		got[int(pid)] = int(pgid)
	}
	want := map[int]int{tr.workers[0]: tr.leader, tr.workers[1]: tr.leader, escaped.Process.Pid: escaped.Process.Pid}
	if len(lines) != 3 || !mapsEqual(got, want) {
		t.Fatalf("worker log lines (pid→pgid) %v, want %v\n%s", got, want, logs.String())
	}
	if !regexp.MustCompile(`"msg":"stale pid record".*"reason":"process gone"`).MatchString(logs.String()) {
		t.Errorf("no stale record line for the dead leader:\n%s", logs.String())
	}
}

// A live, verified leader: its group goes as before, and a marked process
// that left the group goes too. A worker killed with the group is not
// counted or logged twice.
func TestSweepMarkerWithLiveLeader(t *testing.T) {
	dir := t.TempDir()
	token := NewToken()
	mark := EnvVar + "=" + EnvValue("tgi", token)
	tr := startTree(t, withEnv(mark), 1)
	escaped := startSleep(t, withEnv(mark), &syscall.SysProcAttr{Setsid: true})
	must(t, Write(dir, "tgi", tr.leader, tr.leader, "sh", token))

	var logs bytes.Buffer
	killed, err := Sweep(dir, logTo(&logs))
	if err != nil || killed != 2 {
		t.Fatalf("Sweep = %d, %v; want 2 (leader, escaped worker), nil\n%s", killed, err, logs.String())
	}
	killedBySIGKILL(t, tr.cmd)
	killedBySIGKILL(t, escaped)
	waitDead(t, tr.workers...)
	if n := len(logLines(t, logs.String(), "orphan engine killed")); n != 1 {
		t.Errorf("%d `orphan engine killed` lines, want 1", n)
	}
	lines := logLines(t, logs.String(), "orphan engine worker killed")
	if len(lines) != 1 || lines[0]["pid"] != float64(escaped.Process.Pid) {
		t.Errorf("worker log lines %v, want only the escaped pid %d", lines, escaped.Process.Pid)
	}
}

// A token that no process carries kills nothing, and a record without a
// token (from before markers) keeps the old rule: no leader, no kill.
func TestSweepMarkerMatchingNothing(t *testing.T) {
	dir := t.TempDir()
	a := startTree(t, withEnv(EnvVar+"="+EnvValue("p", NewToken())), 1)
	must(t, Write(dir, "p", a.leader, a.leader, "sh", NewToken()))
	a.killLeader(t)

	token := NewToken()
	b := startTree(t, withEnv(EnvVar+"="+EnvValue("q", token)), 1)
	must(t, Write(dir, "q", b.leader, b.leader, "sh", ""))
	b.killLeader(t)

	// A record from another boot: its token is not trusted either.
	c := startTree(t, withEnv(EnvVar+"="+EnvValue("r", token)), 1)
	start, err := StartTime(c.leader)
	must(t, err)
	must(t, writeRecord(dir, Record{PoolID: "r", PID: c.leader, PGID: c.leader, StartTime: start, BootID: "another-boot", Token: token}))
	c.killLeader(t)

	var logs bytes.Buffer
	killed, err := Sweep(dir, logTo(&logs))
	if err != nil || killed != 0 {
		t.Fatalf("Sweep = %d, %v; want 0, nil\n%s", killed, err, logs.String())
	}
	stillAlive(t, "a worker with another token", a.workers...)
	stillAlive(t, "a worker of a record without a token", b.workers...)
	stillAlive(t, "a worker of a record from another boot", c.workers...)
	if got := entries(t, dir); len(got) != 0 {
		t.Fatalf("records left after sweep: %v", got)
	}
}

func TestNewTokenAndEnv(t *testing.T) {
	a, b := NewToken(), NewToken()
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(a) || a == b {
		t.Fatalf("NewToken = %q, %q: want two distinct 16-hex-digit tokens", a, b)
	}
	if got := EnvVar + "=" + EnvValue("pool-1", a); got != "POOL_MANAGERD_ENGINE=pool-1:"+a || got != marker("pool-1", a) {
		t.Fatalf("marker %q", got)
	}
}

func mapsEqual(a, b map[int]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
