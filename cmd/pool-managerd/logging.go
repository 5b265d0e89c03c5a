package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/pool-managerd/pool-managerd/config"
)

// logFormats are the values of -log-format and log.format.
var logFormats = []string{"auto", "json", "text"}

// journalSocket is journald's native protocol socket (a variable so that a
// test can point the daemon at a socket of its own).
var journalSocket = "/run/systemd/journal/socket"

// newLogger builds the daemon's logger on w (stdout) from log.format, which
// -log-format has already overridden, and log.level:
//
//   - format: "json" or "text" as asked; "auto" (the default) is text when w
//     is a terminal, JSON otherwise (a pipe, a file, the journal).
//   - transport: when w is journald's stream for this process (JOURNAL_STREAM
//     names w's device and inode, as systemd sets it for StandardOutput=journal),
//     each record goes to journald as one native-protocol datagram carrying
//     the formatted line as MESSAGE, the slog level as PRIORITY and a few
//     attributes as fields of their own (see journalHandler). When the socket
//     is missing, records are written to w as before.
//   - on a terminal, the daemon.started record is followed by one plain line
//     with the API address and a poolctl hint (see hintHandler).
func newLogger(l config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(l.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	f, _ := w.(*os.File)
	tty := f != nil && isTerminal(f)
	format := l.Format
	if format != "json" && format != "text" { // auto
		format = "json"
		if tty {
			format = "text"
		}
	}
	mk := func(w io.Writer) slog.Handler {
		if format == "text" {
			return slog.NewTextHandler(w, opts)
		}
		return slog.NewJSONHandler(w, opts)
	}
	var h slog.Handler
	if f != nil && isJournalStream(f, os.Getenv("JOURNAL_STREAM")) {
		if jh, err := newJournalHandler(journalSocket, w, mk); err == nil {
			h = jh
		}
	}
	if h == nil {
		h = mk(w)
	}
	if tty {
		h = &hintHandler{Handler: h, w: w}
	}
	return slog.New(h)
}

// isTerminal reports whether f is a terminal (the TCGETS ioctl succeeds).
func isTerminal(f *os.File) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}

// isJournalStream reports whether f is the stream that JOURNAL_STREAM
// ("DEVICE:INODE", decimal) describes: systemd sets it for a service whose
// stdout or stderr is connected to journald, and a child that inherits the
// variable but not the stream must not take it for its own.
func isJournalStream(f *os.File, env string) bool {
	devS, inoS, ok := strings.Cut(env, ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devS, 10, 64)
	ino, err2 := strconv.ParseUint(inoS, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino
}

// journalPriority maps a slog level to a syslog priority as journald's
// PRIORITY field (and a "<N>" line prefix) takes it: ERROR and above 3
// (err), WARN 4 (warning), INFO 6 (info), DEBUG and below 7 (debug).
func journalPriority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	default:
		return 7
	}
}

// journalFields are the attributes that journalHandler copies into journal
// fields of their own (upper-cased), so that `journalctl POOL_ID=x` works.
// The msg becomes EVENT.
var journalFields = map[string]string{
	"pool_id": "POOL_ID", "engine": "ENGINE", "engine_version": "ENGINE_VERSION", "component": "COMPONENT",
}

// journalSink is what the handlers derived from one journalHandler share:
// the socket, the buffer the formatting handler writes into, and w for the
// fallback.
type journalSink struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	conn *net.UnixConn
	addr *net.UnixAddr
	w    io.Writer
}

// journalHandler sends each record to journald over its native protocol:
// one datagram with PRIORITY (from the level), MESSAGE (the record as the
// JSON or text handler formats it, so `journalctl -o cat | jq` still works),
// SYSLOG_IDENTIFIER=pool-managerd, EVENT (the msg) and the journalFields
// found at the top level. A datagram the socket refuses (journald gone, a
// record over the socket's size limit) is written to w instead, prefixed
// with "<N>" so that journald's stream (SyslogLevelPrefix=yes, the default)
// still files it at the right priority.
type journalHandler struct {
	inner  slog.Handler // formats into sink.buf
	sink   *journalSink
	fields [][2]string // journal fields from WithAttrs
	group  bool        // a group is open: later attributes are not top-level
}

// newJournalHandler connects to the journal socket at path (it must exist);
// mk builds the formatting handler on the writer it is given.
func newJournalHandler(path string, w io.Writer, mk func(io.Writer) slog.Handler) (*journalHandler, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"}) // unbound (autobind)
	if err != nil {
		return nil, err
	}
	s := &journalSink{conn: conn, addr: &net.UnixAddr{Name: path, Net: "unixgram"}, w: w}
	return &journalHandler{inner: mk(&s.buf), sink: s}, nil
}

// Enabled is the formatting handler's level check.
func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

// WithAttrs remembers the journal fields among attrs (when no group is open).
func (h *journalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.inner = h.inner.WithAttrs(attrs)
	if !h.group {
		c.fields = appendJournalFields(append([][2]string(nil), h.fields...), attrs...)
	}
	return &c
}

// WithGroup opens a group: attributes after it are nested, not fields.
func (h *journalHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.inner = h.inner.WithGroup(name)
	c.group = c.group || name != ""
	return &c
}

func appendJournalFields(dst [][2]string, attrs ...slog.Attr) [][2]string {
	for _, a := range attrs {
		if f, ok := journalFields[a.Key]; ok {
			dst = append(dst, [2]string{f, a.Value.Resolve().String()})
		}
	}
	return dst
}

// Handle formats r and sends it as one datagram, or writes it to w.
func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	prio := journalPriority(r.Level)
	fields := append([][2]string{{"PRIORITY", strconv.Itoa(prio)}, {"SYSLOG_IDENTIFIER", "pool-managerd"},
		{"EVENT", r.Message}}, h.fields...)
	if !h.group {
		r.Attrs(func(a slog.Attr) bool {
			fields = appendJournalFields(fields, a)
			return true
		})
	}
	s := h.sink
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Reset()
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	line := bytes.TrimSuffix(s.buf.Bytes(), []byte("\n"))
	var dg bytes.Buffer
	appendJournalField(&dg, "MESSAGE", line)
	for _, f := range fields {
		appendJournalField(&dg, f[0], []byte(f[1]))
	}
	if _, _, err := s.conn.WriteMsgUnix(dg.Bytes(), nil, s.addr); err == nil {
		return nil
	}
	_, err := fmt.Fprintf(s.w, "<%d>%s\n", prio, line)
	return err
}

// appendJournalField writes one field in journald's native format: NAME=value
// and a newline, or, for a value holding a newline, NAME, a newline, the
// value's length as a little-endian uint64, the value and a newline.
func appendJournalField(b *bytes.Buffer, name string, value []byte) {
	b.WriteString(name)
	if bytes.IndexByte(value, '\n') < 0 {
		b.WriteByte('=')
		b.Write(value)
	} else {
		b.WriteByte('\n')
		_ = binary.Write(b, binary.LittleEndian, uint64(len(value)))
		b.Write(value)
	}
	b.WriteByte('\n')
}

// hintHandler follows the daemon.started record with one plain line for a
// person at a terminal: where the API listens and how to look at it.
type hintHandler struct {
	slog.Handler
	w io.Writer
}

// Handle passes r on; after daemon.started it prints the hint.
func (h *hintHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Message == "daemon.started" {
		var listen string
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "listen" {
				listen = a.Value.String()
			}
			return true
		})
		fmt.Fprintln(h.w, startHint(listen))
	}
	return err
}

// WithAttrs keeps the hint on the derived handler.
func (h *hintHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &hintHandler{Handler: h.Handler.WithAttrs(attrs), w: h.w}
}

// WithGroup keeps the hint on the derived handler.
func (h *hintHandler) WithGroup(name string) slog.Handler {
	return &hintHandler{Handler: h.Handler.WithGroup(name), w: h.w}
}

// startHint is the line printed at a terminal once the API listens on
// listen (host:port, or a unix socket's path).
func startHint(listen string) string {
	addr := listen
	if strings.HasPrefix(listen, "/") || strings.HasPrefix(listen, "@") {
		addr = "unix:" + listen
	}
	env := ""
	if addr != config.DefaultListen {
		env = "POOL_MANAGERD_ADDR=" + addr + " "
	}
	return fmt.Sprintf("pool-managerd is listening on %s; try: %spoolctl list (from a checkout: %sgo run ./cmd/poolctl list)",
		addr, env, env)
}
