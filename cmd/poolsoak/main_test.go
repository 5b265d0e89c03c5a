package main

import (
	"os"
	"strings"
	"testing"

	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// The test binary plays the soak's helper roles (daemon, sim-engine, sleep)
// when the soak re-executes it, as the poolsoak binary does.
func TestMain(m *testing.M) {
	if isRole(os.Args[1:]) {
		os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// runSoak runs the soak in-process; its run directory, kept when a run
// fails, lands in the test's temporary directory.
func runSoak(t *testing.T, args ...string) (string, int) {
	t.Helper()
	t.Setenv("TMPDIR", t.TempDir())
	var out testutil.SyncBuffer
	code := soakMain(args, &out, &out)
	return out.String(), code
}

// TestSoakShort is the CI form of the soak: 15s of chaos, ~20s in all.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped with -short")
	}
	out, code := runSoak(t, "-duration", "15s", "-pools", "6", "-seed", "1")
	if code != exitPass {
		t.Fatalf("soak failed (exit %d):\n%s", code, out)
	}
	t.Log(out)
}

// TestSoakDetectsPlanted proves the checks can fail: each planted fault
// must make a short run exit 1 with a message naming it.
func TestSoakDetectsPlanted(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped with -short")
	}
	for _, tc := range []struct{ flag, want string }{
		{"-plant-leftover", "leftover process of planted"},
		{"-plant-negative-lease", "negative: a release was booked twice"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			out, code := runSoak(t, "-duration", "5s", "-pools", "3", "-seed", "2", tc.flag)
			if code != exitFail || !strings.Contains(out, tc.want) {
				t.Fatalf("%s: exit %d, want %d with %q in:\n%s", tc.flag, code, exitFail, tc.want, out)
			}
		})
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-duration", "1s"}, {"-pools", "0"}, {"-seed", "x"}, {"extra"}} {
		if _, code := runSoak(t, args...); code != exitBadArgs {
			t.Errorf("%q: exit %d, want %d", args, code, exitBadArgs)
		}
	}
}
