package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The scale measurement's all-ready time is the daemon's last pool to log
// its first transition to ready: a later ready of the same pool (after a
// restart), other records (even one with a "to":"ready" attribute) and
// lines that are not JSON do not count, and a pool that never logged ready
// is an error rather than a shorter time.
func TestLastReadyRecord(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	log := strings.Join([]string{
		`{"time":"2026-12-01T12:00:00.100Z","level":"INFO","msg":"pool.state","pool_id":"a","from":"stopped","to":"preload"}`,
		`{"time":"2026-12-01T12:00:00.300Z","level":"INFO","msg":"pool.state","pool_id":"a","from":"preload","to":"ready"}`,
		`not json`,
		`{"time":"2026-12-01T12:00:02Z","level":"INFO","msg":"engine.ready","pool_id":"b","to":"ready"}`,
		`{"time":"2026-12-01T12:00:01.250Z","level":"INFO","msg":"pool.state","pool_id":"b","from":"preload","to":"ready"}`,
		`{"time":"2026-12-01T12:00:05Z","level":"INFO","msg":"pool.state","pool_id":"a","from":"preload","to":"ready"}`,
	}, "\n") + "\n"
	f := filepath.Join(t.TempDir(), "daemon.log")
	if err := os.WriteFile(f, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := lastReadyRecord(f, 2, t0)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1250 * time.Millisecond; got != want {
		t.Fatalf("all ready after %v, want %v (b's ready; a's second ready does not count)", got, want)
	}
	if _, err := lastReadyRecord(f, 3, t0); err == nil || !strings.Contains(err.Error(), "2 of 3 pools") {
		t.Fatalf("a pool that never logged ready: err = %v, want one naming 2 of 3 pools", err)
	}
}
