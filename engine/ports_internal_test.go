package engine

import (
	"net"
	"strconv"
	"testing"
	"time"
)

// listenFirst returns a listen function for pickPort that binds host:port
// explicitly on its first call (as if the kernel had picked that port for
// a bind to port 0) and host:0 afterwards.
func listenFirst(host string, port int) func() (net.Listener, error) {
	calls := 0
	return func() (net.Listener, error) {
		calls++
		if calls == 1 {
			return net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		}
		return net.Listen("tcp", net.JoinHostPort(host, "0"))
	}
}

// A port handed out for an engine is never handed out again until it is
// released, even when the kernel offers it again (it is free between the
// pick and the engine's bind); once released it can be picked again.
func TestPickPortSkipsHandedOutPorts(t *testing.T) {
	const host = "127.0.0.1"
	p1, release1, err := pickPort(host, listenPort(host))
	if err != nil {
		t.Fatal(err)
	}
	if !portHandedOut(host, p1) {
		t.Fatalf("port %d not recorded as handed out", p1)
	}
	p2, release2, err := pickPort(host, listenFirst(host, p1))
	if err != nil {
		t.Fatal(err)
	}
	defer release2()
	if p2 == p1 {
		t.Fatalf("port %d handed out twice", p1)
	}
	// The offered duplicate was not kept bound.
	if l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p1))); err != nil {
		t.Fatalf("port %d still held after the pick: %v", p1, err)
	} else {
		l.Close()
	}
	if fp, err := freePort(host, listenFirst(host, p1)); err != nil || fp == p1 {
		t.Fatalf("FreePort = %d, %v; want another port than the handed-out %d", fp, err, p1)
	}
	release1()
	release1() // idempotent: a second call must not release someone else's pick
	if portHandedOut(host, p1) {
		t.Fatalf("port %d still handed out after release", p1)
	}
	p3, release3, err := pickPort(host, listenFirst(host, p1))
	if err != nil {
		t.Fatal(err)
	}
	defer release3()
	if p3 != p1 {
		t.Fatalf("released port %d not offered again (got %d)", p1, p3)
	}
}

// A port handed out for an engine on one host is not handed out for
// another: a wildcard bind and a loopback one of the same port conflict.
func TestPickPortIsPerPortNotPerHost(t *testing.T) {
	p1, release1, err := pickPort("0.0.0.0", listenPort("0.0.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	defer release1()
	p2, release2, err := pickPort("127.0.0.1", listenFirst("127.0.0.1", p1))
	if err != nil {
		t.Fatal(err)
	}
	defer release2()
	if p2 == p1 {
		t.Fatalf("port %d handed out for 0.0.0.0 and again for 127.0.0.1", p1)
	}
}

// A handed-out port the kernel offers again is closed before the next port
// is asked for: its engine may be about to bind it.
func TestPickPortDoesNotHoldARejectedPort(t *testing.T) {
	const host = "127.0.0.1"
	p1, release1, err := pickPort(host, listenPort(host))
	if err != nil {
		t.Fatal(err)
	}
	defer release1()
	calls, heldErr := 0, error(nil)
	listen := func() (net.Listener, error) {
		calls++
		if calls == 1 {
			return net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p1)))
		}
		if calls == 2 { // the engine of p1 binds it now
			l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p1)))
			if err != nil {
				heldErr = err
			} else {
				l.Close()
			}
		}
		return net.Listen("tcp", net.JoinHostPort(host, "0"))
	}
	p2, release2, err := pickPort(host, listen)
	if err != nil {
		t.Fatal(err)
	}
	defer release2()
	if heldErr != nil {
		t.Fatalf("the rejected port %d was still bound while the next was picked: %v", p1, heldErr)
	}
	if p2 == p1 {
		t.Fatalf("port %d handed out twice", p1)
	}
}

// Launch holds its engine's port for the engine's life and releases it when
// the engine is gone, and at once when the start fails.
func TestLaunchReleasesItsPort(t *testing.T) {
	const host = "127.0.0.1"
	p, url, err := Launch(LaunchSpec{PoolID: "ports", Command: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	_, portS, _ := net.SplitHostPort(url[len("http://"):])
	port, _ := strconv.Atoi(portS)
	if !portHandedOut(host, port) {
		t.Errorf("port %d of a running engine not held", port)
	}
	p.Stop(0)
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("engine not done within 30 s of Stop")
	}
	if portHandedOut(host, port) {
		t.Errorf("port %d still held after the engine ended", port)
	}
	before := handedOutCount()
	if _, _, err := Launch(LaunchSpec{PoolID: "ports", Command: []string{"/nonexistent/engine"}}); err == nil {
		t.Fatal("Launch of a missing program succeeded")
	}
	if _, _, err := Launch(LaunchSpec{PoolID: "ports", Command: []string{"${NOPE}"}}); err == nil {
		t.Fatal("Launch with an unknown placeholder succeeded")
	}
	if n := handedOutCount(); n > before { // an engine of an earlier test may end meanwhile: fewer is fine
		t.Errorf("failed starts left %d ports held", n-before)
	}
}

// portHandedOut reports whether port is in the handed-out set (host only
// documents the caller's bind: the set is keyed by port).
func portHandedOut(_ string, port int) bool {
	handedOut.Lock()
	defer handedOut.Unlock()
	_, ok := handedOut.ports[port]
	return ok
}

// handedOutCount is the size of the handed-out set.
func handedOutCount() int {
	handedOut.Lock()
	defer handedOut.Unlock()
	return len(handedOut.ports)
}
