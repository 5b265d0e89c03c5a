package sim

import (
	"io"
	"syscall"
	"testing"
	"time"
)

func TestMainRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--port", "0"},
		{"--port", "-5"},
		{"--port", "70000"},
		{"--port", "x"},
		{"--port", "8080", "--no-such-flag"},
		{"--port", "8080", "--load-time", "soon"},
		{"--port", "8080", "--crash-signal", "SIGNOPE"},
		{"--port", "8080", "--fork-children", "-1"},
		{"--port", "8080", "stray"},
	} {
		if code := Main(args); code != 2 {
			t.Errorf("Main(%q) = %d, want 2", args, code)
		}
	}
	if code := Main([]string{"-h"}); code != 0 {
		t.Errorf("Main(-h) = %d, want 0", code)
	}
}

func TestParseFlags(t *testing.T) {
	cfg, _, ok := parseFlags([]string{"--port", "8081", "--host", "0.0.0.0", "--model", "m",
		"--load-time", "2s", "--crash-after", "1m", "--crash-after-jitter", "5s", "--crash-signal", "SIGSEGV",
		"--exit-code", "7", "--ignore-sigterm", "--hang-health-after", "3s", "--fork-children", "2", "--spam", "10",
		"--stderr-on-exit", "bye"}, io.Discard)
	if !ok {
		t.Fatal("valid flags rejected")
	}
	want := config{host: "0.0.0.0", port: 8081, model: "m", parallel: 1, loadTime: 2 * time.Second,
		crashAfter: time.Minute, crashJitter: 5 * time.Second, exitCode: 7, crashSignal: syscall.SIGSEGV,
		ignoreSigterm: true, hangHealthAfter: 3 * time.Second, forkChildren: 2, childLife: 10 * time.Minute,
		spam: 10, stderrOnExit: "bye", stderrOnExitSet: true}
	if cfg != want {
		t.Fatalf("cfg = %+v\nwant  %+v", cfg, want)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"SIGKILL": 9, "kill": 9, "9": 9, "SIGABRT": 6, "segv": 11} {
		if got, err := parseSignal(in); err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := parseSignal("0"); err == nil {
		t.Error("parseSignal(0): no error")
	}
}
