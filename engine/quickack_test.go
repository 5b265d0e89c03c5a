package engine

import (
	"context"
	"net"
	"net/http"
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

// A pool probe client's connections (NewPoolProbeClient, with or without a
// dial hook) are tracked by its ProbeConns and still quick-ACK.
func TestPoolProbeClientConnsQuickAck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	hook := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	for _, dial := range []func(context.Context, string, string) (net.Conn, error){nil, hook} {
		client, conns := NewPoolProbeClient(dial)
		c, err := client.Transport.(*http.Transport).DialContext(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		pc, ok := c.(*probeConn)
		if !ok {
			t.Fatalf("dialed %T, want *probeConn", c)
		}
		if _, ok := pc.Conn.(*quickAckConn); !ok {
			t.Fatalf("probeConn wraps %T, want *quickAckConn", pc.Conn)
		}
		if conns.Len() != 1 {
			t.Fatalf("Len() = %d, want 1", conns.Len())
		}
		_ = c.Close()
		if conns.Len() != 0 {
			t.Fatalf("Len() = %d after Close, want 0", conns.Len())
		}
	}
}
