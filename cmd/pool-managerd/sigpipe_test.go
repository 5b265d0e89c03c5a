package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// `pool-managerd -demo | jq` and Ctrl-C: the terminal's SIGINT ends jq at
// once, so the daemon's next log line meets a closed pipe. It must still
// drain, stop every engine and exit 0, not die of SIGPIPE with engines left.
func TestClosedStdoutDoesNotKillDaemon(t *testing.T) {
	t.Parallel()
	cfg := tempConfig(t, configYAML("shutdown_deadline: 10s\ngpu: {require_nvidia: false}\n", simPool("piped", nil)))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-config", cfg)
	cmd.Env = daemonEnv("POOL_MANAGERD_ADDR=" + addr)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Read what it logs until the pool is ready, like jq would.
	var pid int
	deadline := time.Now().Add(startLimit)
	buf := make([]byte, 64<<10)
	for pid == 0 && time.Now().Before(deadline) {
		_ = r.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, _ = r.Read(buf)
		resp, err := http.Get("http://" + addr + "/v1/pools/piped")
		if err != nil {
			continue
		}
		var p poolStatus
		err = json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		if err == nil && p.State == "ready" && p.PID != nil {
			pid = *p.PID
		}
	}
	if pid == 0 {
		_ = cmd.Process.Kill()
		t.Fatal("pool never became ready")
	}
	r.Close() // the reader is gone: every write to stdout is now EPIPE
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("daemon with a closed stdout: %v (want exit 0 after draining)", err)
		}
	case <-time.After(exitLimit):
		_ = cmd.Process.Kill()
		t.Fatal("daemon did not exit after SIGINT")
	}
	if !gone(pid) {
		t.Errorf("engine %d outlived the daemon", pid)
	}
}
