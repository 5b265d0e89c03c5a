// This file is the simulator's main loop: listen, load, serve, and end the
// way the flags ask (graceful on SIGTERM, or a crash).

package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// shutdownTimeout bounds the graceful http.Server.Shutdown on SIGTERM; the
// daemon's stop grace is seconds, so the simulator must be well inside it.
const shutdownTimeout = time.Second

// Main runs the simulator and returns its exit code. args exclude the
// program name and the "sim-engine" word. A -race build sleeps a second in
// os.Exit (GORACE atexit_sleep_ms); tests that re-exec a -race binary as the
// simulator should put GORACE=atexit_sleep_ms=0 in its environment.
func Main(args []string) int {
	cfg, code, ok := parseFlags(args, os.Stderr)
	if !ok {
		return code
	}
	if cfg.childSleep > 0 {
		return childMain(cfg.childSleep)
	}
	return run(cfg, args)
}

func run(cfg config, args []string) int {
	if cfg.exitImmediately {
		line := cfg.stderrOnExit
		if !cfg.stderrOnExitSet {
			line = "sim-engine: error: failed to load model " + cfg.model + ": simulated --exit-immediately"
		}
		fmt.Fprintln(os.Stderr, line)
		return cfg.exitCode
	}
	sigs := make(chan os.Signal, 4) // before anything slow: an early SIGTERM is graceful too
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	// Bind before "loading": the port is open (and /health says 503) at once.
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.host, strconv.Itoa(cfg.port)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "sim-engine: error: listen: %v\n", err)
		return 1
	}
	fmt.Printf("sim-engine: loading model %s port=%d\n", cfg.model, cfg.port)

	s := newServer(cfg)
	conns := &connCounter{state: map[net.Conn]http.ConnState{}}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ConnState: conns.track}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	if err := forkChildren(cfg, args); err != nil {
		fmt.Fprintf(os.Stderr, "sim-engine: error: fork children: %v\n", err)
		return 1
	}
	time.AfterFunc(cfg.loadTime, s.markReady)
	if cfg.spam > 0 {
		go spam(cfg.spam)
	}
	crash := crashTimer(cfg)

	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGTERM && cfg.ignoreSigterm {
				fmt.Println("sim-engine: received SIGTERM, ignoring it (--ignore-sigterm)")
				continue
			}
			fmt.Printf("sim-engine: shutting down (connections: %s)\n", conns.summary())
			s.quit()
			ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			if srv.Shutdown(ctx) != nil {
				fmt.Printf("sim-engine: graceful shutdown gave up after %s (connections: %s)\n", shutdownTimeout, conns.summary())
				_ = srv.Close()
			}
			cancel()
			return 0
		case <-crash:
			fmt.Fprintln(os.Stderr, cfg.stderrOnExit)
			if cfg.crashSignal != 0 {
				dieBySignal(cfg.crashSignal)
			}
			return cfg.exitCode
		case err := <-served:
			if !errors.Is(err, http.ErrServerClosed) {
				fmt.Fprintf(os.Stderr, "sim-engine: error: serve: %v\n", err)
			}
			return 1
		}
	}
}

// crashTimer fires once at --crash-after plus a random 0..--crash-after-jitter,
// or never.
func crashTimer(cfg config) <-chan time.Time {
	if cfg.crashAfter <= 0 {
		return nil
	}
	d := cfg.crashAfter
	if cfg.crashJitter > 0 {
		d += time.Duration(rand.Int64N(int64(cfg.crashJitter) + 1))
	}
	return time.After(d)
}

// connCounter follows the server's connections by state, so that a shutdown
// can say what it waits for: net/http's Shutdown closes idle connections at
// once but waits for active ones, and for new ones (accepted, no request
// read yet) until they are 5 s old.
type connCounter struct {
	mu    sync.Mutex
	state map[net.Conn]http.ConnState
}

func (c *connCounter) track(conn net.Conn, st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st == http.StateClosed || st == http.StateHijacked {
		delete(c.state, conn)
		return
	}
	c.state[conn] = st
}

// summary is "new=N active=N idle=N".
func (c *connCounter) summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n [3]int
	for _, st := range c.state {
		switch st {
		case http.StateNew:
			n[0]++
		case http.StateActive:
			n[1]++
		case http.StateIdle:
			n[2]++
		}
	}
	return fmt.Sprintf("new=%d active=%d idle=%d", n[0], n[1], n[2])
}
