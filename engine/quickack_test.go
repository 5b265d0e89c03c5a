package engine

import (
	"net"
	"syscall"
	"testing"
)

// Probe connections are TCP connections with TCP_QUICKACK set again before
// every read (the kernel clears it on its own), and reads still deliver the
// data.
func TestQuickAckConnSetsOptionBeforeRead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte("hello"))
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newQuickAckConn(raw)
	defer c.Close()
	q, ok := c.(*quickAckConn)
	if !ok {
		t.Fatalf("newQuickAckConn(TCP) = %T, want *quickAckConn", c)
	}
	quickAck := func() int {
		v := -1
		_ = q.raw.Control(func(fd uintptr) {
			v, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK)
		})
		return v
	}
	clear := func() {
		_ = q.raw.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 0)
		})
	}
	clear()
	if quickAck() != 0 {
		t.Skip("TCP_QUICKACK cannot be read back on this kernel")
	}
	buf := make([]byte, 5)
	if _, err := c.Read(buf); err != nil || string(buf) != "hello" {
		t.Fatalf("Read = %q, %v", buf, err)
	}
	// Set before the read; the read itself may clear it again (that is
	// the kernel's business), so check the setsockopt with a fresh read.
	clear()
	q.quickAck()
	if got := quickAck(); got != 1 {
		t.Fatalf("TCP_QUICKACK after quickAck() = %d, want 1", got)
	}
}
