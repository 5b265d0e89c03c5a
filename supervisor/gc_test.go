package supervisor

import (
	"os"
	"runtime/debug"
	"testing"
)

// Without GOGC the daemon collects at DefaultGCPercent; with it, GOGC rules.
func TestApplyGCDefault(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)

	t.Setenv("GOGC", "")
	if got := ApplyGCDefault(); got != -2 {
		t.Fatalf("GOGC set (empty): ApplyGCDefault = %d, want -2 (left alone)", got)
	}
	if p := debug.SetGCPercent(100); p != 100 {
		t.Fatalf("GOGC set: percent changed to %d", p)
	}

	t.Setenv("GOGC", "200") // registers the restore of the original value
	unsetenv(t, "GOGC")
	if got := ApplyGCDefault(); got != DefaultGCPercent {
		t.Fatalf("no GOGC: ApplyGCDefault = %d, want %d", got, DefaultGCPercent)
	}
	if p := debug.SetGCPercent(100); p != DefaultGCPercent {
		t.Fatalf("no GOGC: percent %d, want %d", p, DefaultGCPercent)
	}
}

func unsetenv(t *testing.T, k string) {
	t.Helper()
	if err := os.Unsetenv(k); err != nil {
		t.Fatal(err)
	}
}
