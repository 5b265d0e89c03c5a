package testutil

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestEventuallySeesACondition(t *testing.T) {
	var n atomic.Int32
	go func() {
		time.Sleep(20 * time.Millisecond)
		n.Store(1)
	}()
	Eventually(t, 30*time.Second, "n to become 1", func() bool { return n.Load() == 1 })
}

// recorder is a testing.TB whose Fatalf records the message and stops
// the calling goroutine the way testing.T's does.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestEventuallyFailsNamingWhat(t *testing.T) {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(r, 10*time.Millisecond, "never", func() bool { return false })
	}()
	<-done
	if r.msg != "timed out after 10ms waiting for never" {
		t.Fatalf("Fatalf message = %q", r.msg)
	}
}
