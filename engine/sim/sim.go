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
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
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
			fmt.Println("sim-engine: shutting down")
			s.quit()
			ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			if srv.Shutdown(ctx) != nil {
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
