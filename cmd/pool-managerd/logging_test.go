package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// parseJournalDatagram decodes journald's native protocol: NAME=value lines,
// or NAME, newline, a little-endian uint64 length, the value and a newline.
func parseJournalDatagram(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			t.Fatalf("datagram field without a newline: %q", b)
		}
		line := b[:nl]
		if name, value, ok := bytes.Cut(line, []byte("=")); ok {
			out[string(name)] = string(value)
			b = b[nl+1:]
			continue
		}
		rest := b[nl+1:]
		if len(rest) < 8 {
			t.Fatalf("binary field %q without a length", line)
		}
		n := binary.LittleEndian.Uint64(rest[:8])
		if uint64(len(rest)) < 8+n+1 || rest[8+n] != '\n' {
			t.Fatalf("binary field %q: bad length %d", line, n)
		}
		out[string(line)] = string(rest[8 : 8+n])
		b = rest[8+n+1:]
	}
	return out
}

// listenJournal is a stand-in for journald's socket: a unixgram socket at a
// fresh path.
func listenJournal(t *testing.T) (string, *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return path, c
}

func readDatagram(t *testing.T, c *net.UnixConn) map[string]string {
	t.Helper()
	buf := make([]byte, 1<<16)
	_ = c.SetReadDeadline(time.Now().Add(waitLimit))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no datagram: %v", err)
	}
	return parseJournalDatagram(t, buf[:n])
}

// TestJournalPriorities: under journald each level arrives with its syslog
// priority, the JSON line as MESSAGE, and pool_id/engine (from With and from
// the call) as fields of their own.
func TestJournalPriorities(t *testing.T) {
	t.Parallel()
	path, sock := listenJournal(t)
	var fallback bytes.Buffer
	jh, err := newJournalHandler(path, &fallback, func(w io.Writer) slog.Handler {
		return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
	})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(jh).With("pool_id", "p1")
	log.Debug("probe.debug", "engine", "llamacpp")
	log.Info("pool.state", "engine", "llamacpp", "to", "ready")
	log.Warn("pool.failure", "reason", "exit")
	log.Error("gpu.xid", "xid", 79, "last_error", "line one\nline two")
	slog.New(jh).WithGroup("g").Info("grouped", "pool_id", "nested")
	for _, want := range []struct {
		prio, event, engine string
	}{{"7", "probe.debug", "llamacpp"}, {"6", "pool.state", "llamacpp"}, {"4", "pool.failure", ""}, {"3", "gpu.xid", ""}} {
		f := readDatagram(t, sock)
		if f["PRIORITY"] != want.prio || f["EVENT"] != want.event || f["POOL_ID"] != "p1" || f["ENGINE"] != want.engine ||
			f["SYSLOG_IDENTIFIER"] != "pool-managerd" {
			t.Errorf("datagram %v, want PRIORITY=%s EVENT=%s POOL_ID=p1 ENGINE=%q", f, want.prio, want.event, want.engine)
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(f["MESSAGE"]), &rec); err != nil || rec["msg"] != want.event || rec["pool_id"] != "p1" {
			t.Errorf("MESSAGE %q is not the JSON record of %s (%v)", f["MESSAGE"], want.event, err)
		}
	}
	if f := readDatagram(t, sock); f["EVENT"] != "grouped" || f["POOL_ID"] != "" {
		t.Errorf("an attribute inside a group became a field: %v", f)
	}
	if fallback.Len() > 0 {
		t.Errorf("records reached the fallback while the socket was there: %q", fallback.String())
	}
}

// TestJournalFieldNewline: a value holding a newline uses the protocol's
// length-prefixed form, which journald (and the parser above) decode intact.
func TestJournalFieldNewline(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	appendJournalField(&b, "MESSAGE", []byte("a\nb"))
	appendJournalField(&b, "POOL_ID", []byte("p"))
	if f := parseJournalDatagram(t, b.Bytes()); f["MESSAGE"] != "a\nb" || f["POOL_ID"] != "p" {
		t.Errorf("round trip = %v", f)
	}
}

// TestJournalFallback: once the socket is gone, records go to stdout with a
// "<N>" prefix, which journald's stream turns into the same priority.
func TestJournalFallback(t *testing.T) {
	t.Parallel()
	path, sock := listenJournal(t)
	var out bytes.Buffer
	jh, err := newJournalHandler(path, &out, func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) })
	if err != nil {
		t.Fatal(err)
	}
	sock.Close()
	os.Remove(path)
	log := slog.New(jh)
	log.Warn("pool.failure", "pool_id", "p1")
	log.Error("gpu.xid", "pool_id", "p1")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], `<4>{"time":`) || !strings.HasPrefix(lines[1], `<3>{"time":`) ||
		!strings.Contains(lines[1], `"msg":"gpu.xid"`) {
		t.Errorf("fallback output = %q, want <4>{json} then <3>{json}", out.String())
	}
	if _, err := newJournalHandler(path, &out, nil); err == nil {
		t.Error("newJournalHandler on a missing socket: no error")
	}
}

// TestNewLoggerJournalStream: newLogger uses the journal only when
// JOURNAL_STREAM names stdout itself, not merely when it is set.
func TestNewLoggerJournalStream(t *testing.T) {
	path, sock := listenJournal(t)
	old := journalSocket
	journalSocket = path
	t.Cleanup(func() { journalSocket = old })

	stdout, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(stdout.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1)) // inherited, not ours
	newLogger(config.Log{Format: "auto", Level: "info"}, stdout).Warn("first")
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	newLogger(config.Log{Format: "auto", Level: "info"}, stdout).Warn("second", "pool_id", "p")
	if f := readDatagram(t, sock); f["EVENT"] != "second" || f["PRIORITY"] != "4" || f["POOL_ID"] != "p" ||
		!strings.HasPrefix(f["MESSAGE"], `{"time":`) {
		t.Errorf("journal got %v, want the second record as JSON at PRIORITY 4", f)
	}
	b, _ := os.ReadFile(stdout.Name())
	if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], `"msg":"first"`) {
		t.Errorf("stdout = %q, want only the first record, as JSON", b)
	}
}

// openPTY returns a pseudo-terminal's master and slave.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	var unlock int32
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Skipf("TIOCSPTLCK: %v", e)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Skipf("TIOCGPTN: %v", e)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("pty slave: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// TestTerminalLogs runs the daemon with stdout on a terminal: by default it
// logs text (key=value) and prints one start line with its address and a
// poolctl hint; -log-format json keeps JSON there (and the hint).
func TestTerminalLogs(t *testing.T) {
	t.Parallel()
	cfg := tempConfig(t, configYAML(simHead))
	for _, tc := range []struct {
		args []string
		want string // how the daemon.started record begins
	}{
		{nil, "time="},
		{[]string{"-log-format", "json"}, `{"time":`},
	} {
		master, slave := openPTY(t)
		port := freePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command(os.Args[0], append(tc.args, "-config", cfg)...)
		cmd.Env = daemonEnv("POOL_MANAGERD_ADDR=" + addr)
		var stderr testutil.SyncBuffer
		cmd.Stdout, cmd.Stderr = slave, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var out testutil.SyncBuffer
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := master.Read(buf)
				out.Write(buf[:n])
				if err != nil {
					return
				}
			}
		}()
		hint := "pool-managerd is listening on " + addr + "; try: POOL_MANAGERD_ADDR=" + addr + " poolctl list"
		deadline := time.Now().Add(startLimit)
		for !strings.Contains(out.String(), hint) && time.Now().Before(deadline) {
			time.Sleep(pollEvery)
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		got := strings.ReplaceAll(out.String(), "\r\n", "\n")
		if !strings.Contains(got, hint) {
			t.Errorf("%v: no start hint %q on the terminal:\n%s\nstderr:\n%s", tc.args, hint, got, stderr.String())
			continue
		}
		var started string
		for _, l := range strings.Split(got, "\n") {
			if strings.Contains(l, "daemon.started") {
				started = l
			}
		}
		if !strings.HasPrefix(started, tc.want) {
			t.Errorf("%v: daemon.started on a terminal = %q, want it to begin %q", tc.args, started, tc.want)
		}
	}
}

// TestLogFormatFlag: -log-format accepts auto, json and text, and names the
// choices for anything else (exit 2).
func TestLogFormatFlag(t *testing.T) {
	t.Parallel()
	code, _, stderr := runMain(t, nil, "-log-format", "xml", "-demo")
	if code != exitBadArgs || !strings.Contains(stderr, `-log-format must be one of auto, json, text, not "xml"`) {
		t.Errorf("-log-format xml: exit %d, stderr %q", code, stderr)
	}
}
