package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, and fails the test (naming what it
// waited for) when limit passes first. It polls often at first and backs off
// to every 50 ms, so a fast condition is seen at once and a slow one costs
// little CPU on a loaded machine. Packages' wait helpers are thin wrappers.
func Eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}
