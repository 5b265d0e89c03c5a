package engine

import (
	"fmt"
	"net"
	"sync"
)

// handedOut holds the ports Launch picked for engines that are still
// starting or running. A picked port is free again, as far as the kernel
// knows, from the moment the pick's listener closes until the engine binds
// it, which under load is hundreds of milliseconds (a preload of 256 pools
// on two cores: the fork, the engine's runtime start, its listen).
// Meanwhile a bind to port 0 for the next pool may get the same port, and
// one of the two engines fails with "address already in use" and waits out
// a restart backoff. With the set, a pick the kernel offers again is
// refused and another asked for, so no two engines of this process are
// given the same port. It is keyed by the port alone, whatever the host:
// an engine listening on 0.0.0.0 and one on 127.0.0.1 cannot share a port
// either, and "localhost" and "127.0.0.1" are the same bind. An entry is
// dropped when its engine has ended (or its start failed), so the set is
// bounded by the engines alive. A fixed port (config port:) is never in it.
var handedOut = struct {
	sync.Mutex
	ports map[int]struct{}
}{ports: map[int]struct{}{}}

// pickTries bounds how many ports pickPort asks the kernel for.
const pickTries = 64

// listenPort is pickPort's way to ask the kernel for a free port on host.
func listenPort(host string) func() (net.Listener, error) {
	return func() (net.Listener, error) { return net.Listen("tcp", net.JoinHostPort(host, "0")) }
}

// pickPort returns a port listen found free that is not handed out, records
// it as handed out, and returns the release that drops it again (safe to
// call more than once).
func pickPort(host string, listen func() (net.Listener, error)) (int, func(), error) {
	port, err := choosePort(host, listen, true)
	if err != nil {
		return 0, nil, err
	}
	var once sync.Once
	return port, func() { once.Do(func() { unreserve(port) }) }, nil
}

// unreserve drops port from the handed-out set.
func unreserve(port int) {
	handedOut.Lock()
	delete(handedOut.ports, port)
	handedOut.Unlock()
}

// freePort is FreePort with the kernel's listen as a parameter: a port free
// now and not handed out, recorded nowhere.
func freePort(host string, listen func() (net.Listener, error)) (int, error) {
	return choosePort(host, listen, false)
}

// choosePort asks listen for ports until one is not handed out (recording
// it when reserve). A handed-out port the kernel offers is closed at once,
// not held while the next is asked for: its engine may be binding it right
// now. Linux starts each search for a port to bind at a random offset, so
// the next offer is another port.
func choosePort(host string, listen func() (net.Listener, error), reserve bool) (int, error) {
	for range pickTries {
		l, err := listen()
		if err != nil {
			return 0, fmt.Errorf("engine: free port on %s: %w", host, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		handedOut.Lock()
		_, taken := handedOut.ports[port]
		if !taken && reserve {
			handedOut.ports[port] = struct{}{}
		}
		handedOut.Unlock()
		cerr := l.Close()
		if taken {
			continue
		}
		if cerr != nil {
			if reserve {
				unreserve(port)
			}
			return 0, fmt.Errorf("engine: free port on %s: %w", host, cerr)
		}
		return port, nil
	}
	return 0, fmt.Errorf("engine: free port on %s: the kernel offered %d ports that are all handed out to engines", host, pickTries)
}
