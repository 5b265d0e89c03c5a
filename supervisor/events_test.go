package supervisor

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/gpu"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// flappingPool fails to spawn (no such binary) and retries after 5 ms, for
// ever: a steady source of pool_state events that a reading client keeps
// up with.
func flappingPool(id string) config.Pool {
	p := simPool(id)
	p.Command = []string{"/nonexistent/engine-" + id}
	p.Restart = config.Restart{Initial: 5 * time.Millisecond, Multiplier: 1, Max: 5 * time.Millisecond,
		ResetAfter: time.Hour, MaxFailures: 1 << 30, Window: time.Hour}
	return p
}

func flappingPools(n int) []config.Pool {
	var out []config.Pool
	for i := range n {
		out = append(out, flappingPool("f"+strconv.Itoa(i)))
	}
	return out
}

// smallSendBuffers gives each accepted connection a small send buffer, so a
// client that does not read fills it after some tens of events rather than
// the megabytes loopback TCP buffers by default: the test then needs fewer
// events, not different behaviour.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(8 << 10)
	}
	return c, err
}

var streamsRE = regexp.MustCompile(`(?m)^pool_managerd_event_streams (\d+)$`)

// eventStreams reads the open-stream gauge from /metrics.
func eventStreams(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := streamsRE.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no pool_managerd_event_streams in /metrics")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// A client that opens /v1/events and never reads is disconnected once it
// stops taking events, while a client that reads keeps its stream.
func TestEventsDropsClientThatNeverReads(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	cfg := &config.Config{Listen: "127.0.0.1:0", ShutdownDeadline: 5 * time.Second,
		Pools: flappingPools(2), Log: config.Log{Format: "json", Level: "info"}}
	d, err := New(Options{Config: cfg, Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		SelfExe: "/nonexistent", Guard: gpu.NoGuard{}, EventWriteTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := smallSendBuffers{tcp}
	if err := d.Start(ln); err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown()
	base := "http://" + ln.Addr().String()

	// The reader: takes every event as it comes.
	resp, err := http.Get(base + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	readerEvents := make(chan int, 1)
	var got atomic.Int64
	go func() {
		n := 0
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "event: pool_state") {
				n++
				got.Store(int64(n))
				if n == 500 {
					readerEvents <- n
				}
			}
		}
	}()

	// The sleeper: a small receive window, and it never reads.
	dialer := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := dialer.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitLimit)
	for eventStreams(t, base) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the two event streams never opened")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Events flow; the sleeper falls behind and is dropped, the reader stays.
	deadline = time.Now().Add(2 * waitLimit)
	for eventStreams(t, base) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("a client that never reads was not disconnected")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the sleeper was dropped after %s", time.Since(deadline.Add(-2*waitLimit)))
	select {
	case <-readerEvents:
	case <-time.After(2 * waitLimit):
		t.Fatalf("the reading client got %d events, not 500; %d streams open", got.Load(), eventStreams(t, base))
	}
	if n := eventStreams(t, base); n != 1 {
		t.Fatalf("%d event streams open, want the reader's only", n)
	}
	// The sleeper's connection has ended: reading it now reaches its end.
	_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
	n, err := io.Copy(io.Discard, conn)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("the dropped client's connection did not end: %v", err)
	}
	// What was queued for it is bounded by the socket buffers: the daemon
	// itself holds at most 256 events per subscriber.
	if n > 8<<20 {
		t.Fatalf("the dropped client had %d bytes queued", n)
	}
	t.Logf("the dropped client had %d bytes queued", n)
}
