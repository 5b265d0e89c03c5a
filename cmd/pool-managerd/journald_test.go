package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// journalEntries returns journald's entries written by process pid.
func journalEntries(t *testing.T, pid int) []map[string]any {
	t.Helper()
	out, err := exec.Command("journalctl", "--no-pager", "-o", "json", fmt.Sprintf("_PID=%d", pid)).Output()
	if err != nil {
		t.Fatalf("journalctl: %v", err)
	}
	var entries []map[string]any
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err == nil {
			entries = append(entries, e)
		}
	}
	return entries
}

// TestRealJournald runs the daemon with stdout connected to a running
// journald the way systemd connects a service (a stream socket, and
// JOURNAL_STREAM naming it) and reads back with journalctl that a record of
// each level arrived with its PRIORITY, as a native-protocol entry whose
// MESSAGE is the JSON line. Skipped unless journald runs on this machine
// (without systemd as PID 1: start /lib/systemd/systemd-journald by hand).
func TestRealJournald(t *testing.T) {
	t.Parallel()
	const stdoutSock = "/run/systemd/journal/stdout"
	if _, err := os.Stat(stdoutSock); err != nil {
		t.Skipf("no journald running (%v); start /lib/systemd/systemd-journald to run this test", err)
	}
	if _, err := exec.LookPath("journalctl"); err != nil {
		t.Skip("no journalctl")
	}
	conn, err := net.Dial("unix", stdoutSock)
	if err != nil {
		t.Skipf("journald's stdout socket: %v", err)
	}
	defer conn.Close()
	// The stream header: identifier, unit, priority, level prefix, forward
	// to syslog, kmsg, console (what systemd sends for a service).
	if _, err := conn.Write([]byte("pool-managerd\n\n6\n1\n0\n0\n0\n")); err != nil {
		t.Fatal(err)
	}
	stream, err := conn.(*net.UnixConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(stream.Fd()), &st); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, simHead+"log: {level: debug}\npools: []\n")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(os.Args[0], "-config", cfg)
	cmd.Env = daemonEnv("POOL_MANAGERD_ADDR="+addr, fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	cmd.Stdout = stream
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	waitEvent := func(event string) {
		t.Helper()
		deadline := time.Now().Add(waitLimit)
		for time.Now().Before(deadline) {
			for _, e := range journalEntries(t, pid) {
				if e["EVENT"] == event {
					return
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("no %s entry of pid %d in the journal; entries: %v", event, pid, journalEntries(t, pid))
	}
	waitEvent("daemon.started") // INFO
	// api.request of a GET: DEBUG.
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
	} else {
		t.Fatal(err)
	}
	writeFile(t, cfg, simHead+"log: {level: info}\npools: []\n")
	_ = cmd.Process.Signal(syscall.SIGHUP)
	waitEvent("config.needs_restart") // WARN: log applies only at start
	writeFile(t, cfg, simHead+"bogus: 1\npools: []\n")
	_ = cmd.Process.Signal(syscall.SIGHUP)
	waitEvent("config.reload_failed") // ERROR
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()

	want := map[string]string{"api.request": "7", "daemon.started": "6", "config.needs_restart": "4", "config.reload_failed": "3"}
	seen := map[string]bool{}
	for _, e := range journalEntries(t, pid) {
		ev, _ := e["EVENT"].(string)
		if e["_TRANSPORT"] != "journal" || e["SYSLOG_IDENTIFIER"] != "pool-managerd" {
			t.Errorf("entry not from the native protocol as pool-managerd: %v", e)
		}
		var rec map[string]any
		if msg, _ := e["MESSAGE"].(string); json.Unmarshal([]byte(msg), &rec) != nil || rec["msg"] != ev {
			t.Errorf("MESSAGE %q is not the JSON record of %s", e["MESSAGE"], ev)
		}
		if p, ok := want[ev]; ok {
			seen[ev] = true
			if e["PRIORITY"] != p {
				t.Errorf("%s: PRIORITY %v, want %s (level %v)", ev, e["PRIORITY"], p, rec["level"])
			}
		}
	}
	for ev, p := range want {
		if !seen[ev] {
			t.Errorf("no %s entry (PRIORITY %s) in the journal", ev, p)
		} else {
			t.Logf("%s: PRIORITY %s", ev, p)
		}
	}
}
