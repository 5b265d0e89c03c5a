package pidrec

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startSleeper starts a real `sleep 60` in its own process group, the way the
// engine package starts engines, and makes sure it dies with the test.
func startSleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	return cmd
}

func logTo(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func alive(t *testing.T, pid int) bool {
	t.Helper()
	st, err := readStat(pid)
	return err == nil && st.State != 'Z'
}

func TestSweepKillsOrphanGroup(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state") // created by Write
	cmd := startSleeper(t)
	pid := cmd.Process.Pid
	if err := Write(dir, "llama-8b", pid, pid, "/bin/sleep", ""); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir: %v %v, want mode 0700", fi, err)
	}
	if got := entries(t, dir); len(got) != 1 || got[0] != "llama-8b."+strconv.Itoa(pid)+".json" {
		t.Fatalf("state dir holds %v", got)
	}

	var logs bytes.Buffer
	killed, err := Sweep(dir, logTo(&logs))
	if err != nil || killed != 1 {
		t.Fatalf("Sweep = %d, %v; want 1, nil", killed, err)
	}
	var exitErr *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &exitErr) ||
		exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("sleep ended with %v, want killed by SIGKILL", err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Fatalf("records left after sweep: %v", got)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(firstLine(logs.String(), "orphan engine killed")), &rec); err != nil {
		t.Fatalf("no orphan log line: %v\n%s", err, logs.String())
	}
	if rec["pool_id"] != "llama-8b" || rec["pid"] != float64(pid) || rec["pgid"] != float64(pid) {
		t.Fatalf("orphan log line lacks pool_id/pid/pgid: %v", rec)
	}
}

// The whole group goes, not just the recorded pid: engines fork workers.
func TestSweepKillsGrandchildren(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", "sleep 60 & echo $!; wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	must(t, err)
	worker, err := strconv.Atoi(strings.TrimSpace(line))
	must(t, err)

	pid := cmd.Process.Pid
	must(t, Write(dir, "vllm", pid, pid, "sh", ""))
	if killed, err := Sweep(dir, nil); err != nil || killed != 1 {
		t.Fatalf("Sweep = %d, %v; want 1, nil", killed, err)
	}
	cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for alive(t, worker) {
		if time.Now().After(deadline) {
			t.Fatalf("worker %d of the orphan's group survived the sweep", worker)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSweepSparesReusedPid(t *testing.T) {
	dir := t.TempDir()
	cmd := startSleeper(t)
	pid := cmd.Process.Pid
	start, err := StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := bootID()
	// Same pid, same group, but a different start time: a stranger that
	// got the engine's pid after it died.
	must(t, writeRecord(dir, Record{PoolID: "p", PID: pid, PGID: pid, StartTime: start + 1, BootID: boot}))
	// The right process, but recorded in another boot.
	must(t, writeRecord(dir, Record{PoolID: "q", PID: pid, PGID: pid, StartTime: start, BootID: "another-boot"}))

	killed, err := Sweep(dir, nil)
	if err != nil || killed != 0 {
		t.Fatalf("Sweep = %d, %v; want 0, nil", killed, err)
	}
	if !alive(t, pid) {
		t.Fatal("a process with a reused pid was killed")
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Fatalf("stale records left: %v", got)
	}
}

func TestSweepDeadPidAndJunk(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("true")
	must(t, cmd.Run())
	boot, _ := bootID()
	must(t, writeRecord(dir, Record{PoolID: "dead", PID: cmd.Process.Pid, PGID: cmd.Process.Pid, StartTime: 42, BootID: boot}))
	must(t, os.WriteFile(filepath.Join(dir, "corrupt.1.json"), []byte("{not json"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "bad.2.json"), []byte(`{"pid":2,"pgid":0,"start_time":1,"boot_id":"`+boot+`"}`), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, tempPrefix+"123"), []byte("{"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "README"), []byte("operator notes"), 0o600))

	var logs bytes.Buffer
	killed, err := Sweep(dir, logTo(&logs))
	if err != nil || killed != 0 {
		t.Fatalf("Sweep = %d, %v; want 0, nil", killed, err)
	}
	if got := entries(t, dir); len(got) != 1 || got[0] != "README" {
		t.Fatalf("state dir after sweep: %v, want only README", got)
	}
	for _, want := range []string{"stale pid record", "corrupt pid record removed"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

func TestSweepMissingDir(t *testing.T) {
	killed, err := Sweep(filepath.Join(t.TempDir(), "absent"), nil)
	if err != nil || killed != 0 {
		t.Fatalf("Sweep = %d, %v; want 0, nil", killed, err)
	}
}

func TestWriteRemove(t *testing.T) {
	dir := t.TempDir()
	pid := os.Getpid()
	must(t, Write(dir, "tgi", pid, syscall.Getpgrp(), "/usr/bin/text-generation-launcher", "0123456789abcdef"))
	b, err := os.ReadFile(filepath.Join(dir, "tgi."+strconv.Itoa(pid)+".json"))
	must(t, err)
	var r Record
	must(t, json.Unmarshal(b, &r))
	start, _ := StartTime(pid)
	boot, _ := bootID()
	if r.PoolID != "tgi" || r.PID != pid || r.StartTime != start || r.BootID != boot || r.Argv0 == "" || r.Token != "0123456789abcdef" {
		t.Fatalf("record %+v", r)
	}
	must(t, Remove(dir, "tgi", pid))
	must(t, Remove(dir, "tgi", pid)) // missing is fine
	if got := entries(t, dir); len(got) != 0 {
		t.Fatalf("left: %v", got)
	}
	for _, id := range []string{"", "..", "a/b"} {
		if err := Write(dir, id, pid, pid, "x", ""); err == nil {
			t.Errorf("Write accepted pool id %q", id)
		}
	}
	if err := Write(dir, "gone", 1<<30, 1<<30, "x", ""); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Write for a missing pid: %v, want ErrNotExist", err)
	}
}

// A record must never make kill(2) reach init, every process (-1), or the
// daemon's own group (0 or ours).
func TestRecordValidRefusesDangerousIDs(t *testing.T) {
	ok := Record{PID: 1000, PGID: 1000, StartTime: 5, BootID: "b"}
	must(t, ok.valid())
	for name, mod := range map[string]func(*Record){
		"pid 0": func(r *Record) { r.PID = 0 }, "pid 1": func(r *Record) { r.PID = 1 },
		"pgid 0": func(r *Record) { r.PGID = 0 }, "pgid 1": func(r *Record) { r.PGID = 1 },
		"pgid -1":    func(r *Record) { r.PGID = -1 },
		"our pid":    func(r *Record) { r.PID = os.Getpid() },
		"our group":  func(r *Record) { r.PGID = syscall.Getpgrp() },
		"no start":   func(r *Record) { r.StartTime = 0 },
		"no boot id": func(r *Record) { r.BootID = "" },
	} {
		r := ok
		mod(&r)
		if r.valid() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The parser itself (hostile command names, malformed lines) is tested in
// internal/proc.

func TestStartTimeOfSelf(t *testing.T) {
	a, err := StartTime(os.Getpid())
	if err != nil || a == 0 {
		t.Fatalf("StartTime(self) = %d, %v", a, err)
	}
	if _, err := StartTime(1 << 30); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("StartTime(no such pid) = %v, want ErrNotExist", err)
	}
}

func firstLine(logs, msg string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `"msg":"`+msg+`"`) {
			return l
		}
	}
	return ""
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
