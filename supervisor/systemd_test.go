package supervisor

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// The daemon speaks Type=notify over a real unixgram socket: READY=1 once
// the API listens, STATUS= with the pool summary, WATCHDOG=1 while the
// registry answers, STOPPING=1 at shutdown.
func TestDaemonNotifiesSystemd(t *testing.T) {
	conn := testutil.ListenNotify(t, "200000") // a watchdog ping every 100 ms

	var got []string
	buf := make([]byte, 4096)
	read := func(until func(string) bool) { // datagrams until one matches, or a quiet second
		for {
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			n, err := conn.Read(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(buf[:n]))
			if until != nil && until(got[len(got)-1]) {
				return
			}
		}
	}
	td := startDaemon(t, "", simPool("a"))
	td.waitState("a", actors.StateReady)
	read(func(s string) bool { return s == "WATCHDOG=1" })
	td.Shutdown()
	read(nil)
	idx := func(pred func(string) bool) int {
		for i, g := range got {
			if pred(g) {
				return i
			}
		}
		return -1
	}
	ready := idx(func(s string) bool { return s == "READY=1" })
	status := idx(func(s string) bool { return s == "STATUS=1 pools: 1 ready" })
	wd := idx(func(s string) bool { return s == "WATCHDOG=1" })
	stopping := idx(func(s string) bool { return s == "STOPPING=1" })
	if ready < 0 || status < 0 || wd < 0 || stopping < 0 || !(ready < wd && wd < stopping && status < stopping) {
		t.Fatalf("notifications out of order or missing: %q", got)
	}
	for _, g := range got[stopping+1:] {
		if strings.HasPrefix(g, "WATCHDOG") {
			t.Fatalf("watchdog ping after STOPPING: %q", got)
		}
	}
}
