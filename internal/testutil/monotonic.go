package testutil

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// MonotonicUsec is clock_gettime(CLOCK_MONOTONIC) in microseconds, read with
// a raw syscall: the clock systemd's MONOTONIC_USEC= is measured on, read
// independently of the code under test.
func MonotonicUsec(t testing.TB) uint64 {
	t.Helper()
	var ts syscall.Timespec
	const clockMonotonic = 1
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		t.Fatalf("clock_gettime(CLOCK_MONOTONIC): %v", errno)
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3
}

// ParseReloading checks that got is exactly the datagram
// "RELOADING=1\nMONOTONIC_USEC=N" (one datagram, as systemd's
// Type=notify-reload wants) with N within [lo, hi], and returns N.
func ParseReloading(t testing.TB, got string, lo, hi uint64) uint64 {
	t.Helper()
	rest, ok := strings.CutPrefix(got, "RELOADING=1\nMONOTONIC_USEC=")
	us, err := strconv.ParseUint(rest, 10, 64)
	if !ok || err != nil {
		t.Fatalf("got datagram %q, want exactly RELOADING=1 and MONOTONIC_USEC=N", got)
	}
	if us < lo || us > hi {
		t.Fatalf("MONOTONIC_USEC=%d is not CLOCK_MONOTONIC at the send: the test read %d before and %d after", us, lo, hi)
	}
	return us
}
