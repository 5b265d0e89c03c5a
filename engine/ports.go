package engine

import (
	"fmt"
	"net"
	"strconv"
	"sync"
)

// handedOut holds the ports (host:port) Launch picked for engines that are
// still starting or running. A picked port is free again, as far as the
// kernel knows, from the moment the pick's listener closes until the engine
// binds it, which under load is hundreds of milliseconds (a preload of 256
// pools on two cores: the fork, the engine's runtime start, its listen).
// Meanwhile a bind to port 0 for the next pool may get the same port, and
// one of the two engines fails with "address already in use" and waits out
// a restart backoff. With the set, a pick the kernel offers again is kept
// bound while another is taken, so no two engines of this process are given
// the same port. An entry is dropped when its engine has ended (or its start
// failed), so the set is bounded by the engines alive.
var handedOut = struct {
	sync.Mutex
	ports map[string]struct{}
}{ports: map[string]struct{}{}}

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
	key := net.JoinHostPort(host, strconv.Itoa(port))
	var once sync.Once
	return port, func() {
		once.Do(func() {
			handedOut.Lock()
			delete(handedOut.ports, key)
			handedOut.Unlock()
		})
	}, nil
}

// freePort is FreePort with the kernel's listen as a parameter: a port free
// now and not handed out, recorded nowhere.
func freePort(host string, listen func() (net.Listener, error)) (int, error) {
	return choosePort(host, listen, false)
}

// choosePort asks listen for ports until one is not handed out (recording
// it when reserve), keeping the rejected ones bound meanwhile so the kernel
// offers others.
func choosePort(host string, listen func() (net.Listener, error), reserve bool) (int, error) {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for range pickTries {
		l, err := listen()
		if err != nil {
			return 0, fmt.Errorf("engine: free port on %s: %w", host, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		key := net.JoinHostPort(host, strconv.Itoa(port))
		handedOut.Lock()
		_, taken := handedOut.ports[key]
		if !taken && reserve {
			handedOut.ports[key] = struct{}{}
		}
		handedOut.Unlock()
		if taken {
			held = append(held, l)
			continue
		}
		if err := l.Close(); err != nil {
			if reserve {
				handedOut.Lock()
				delete(handedOut.ports, key)
				handedOut.Unlock()
			}
			return 0, fmt.Errorf("engine: free port on %s: %w", host, err)
		}
		return port, nil
	}
	return 0, fmt.Errorf("engine: free port on %s: the kernel offered %d ports that are all handed out to engines", host, pickTries)
}
