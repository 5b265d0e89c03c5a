// Package sim is the engine simulator behind `pool-managerd sim-engine`: a
// stand-in for llama.cpp's llama-server on the surface the daemon touches
// (/health, /metrics, /v1/models, stdout/stderr), with flags that make it
// misbehave on purpose. Tests and the demo use it; production never does.
// It imports nothing from the daemon, so any test binary can re-exec itself
// as a simulator.
package sim

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is the parsed command line.
type config struct {
	host            string
	port            int
	model           string
	parallel        int
	loadTime        time.Duration
	crashAfter      time.Duration
	crashJitter     time.Duration
	exitCode        int
	crashSignal     syscall.Signal // 0: crash with exitCode
	exitImmediately bool
	ignoreSigterm   bool
	hangHealth      bool
	hangHealthAfter time.Duration
	forkChildren    int
	forkEscaped     bool
	childLife       time.Duration
	spam            int
	stderrOnExit    string
	stderrOnExitSet bool
	childSleep      time.Duration // hidden: run as a forked child
}

// maxForkChildren keeps a typo from fork-bombing the machine.
const maxForkChildren = 64

// hiddenFlags are internal and left out of -h.
var hiddenFlags = map[string]bool{"child-sleep": true}

// parseFlags parses args. ok false means Main should return code at once
// (0 for -h, 2 for a bad command line).
func parseFlags(args []string, stderr io.Writer) (cfg config, code int, ok bool) {
	fs := flag.NewFlagSet("sim-engine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pool-managerd sim-engine --port N [flags]")
		fs.VisitAll(func(f *flag.Flag) {
			if !hiddenFlags[f.Name] {
				fmt.Fprintf(stderr, "  --%s\t%s (default %q)\n", f.Name, f.Usage, f.DefValue)
			}
		})
	}
	var crashSignal string
	fs.StringVar(&cfg.host, "host", "127.0.0.1", "address to listen on")
	fs.IntVar(&cfg.port, "port", 0, "port to listen on (required, > 0)")
	fs.StringVar(&cfg.model, "model", "sim-model", "model name, reported by /v1/models")
	fs.IntVar(&cfg.parallel, "parallel", 1, "slots reported by /props (llama-server --parallel)")
	fs.Bool("metrics", true, "accepted for llama-server compatibility; /metrics is always on")
	fs.DurationVar(&cfg.loadTime, "load-time", 0, "how long /health answers 503 Loading model")
	fs.DurationVar(&cfg.crashAfter, "crash-after", 0, "crash this long after start (0: never)")
	fs.DurationVar(&cfg.crashJitter, "crash-after-jitter", 0, "add a random 0..jitter to --crash-after")
	fs.IntVar(&cfg.exitCode, "exit-code", 1, "exit code of a crash or --exit-immediately")
	fs.StringVar(&crashSignal, "crash-signal", "", "crash by killing itself with this signal (SIGKILL, SIGSEGV, SIGABRT, ...) instead of exiting")
	fs.BoolVar(&cfg.exitImmediately, "exit-immediately", false, "print an error on stderr and exit with --exit-code before listening")
	fs.BoolVar(&cfg.ignoreSigterm, "ignore-sigterm", false, "log and ignore SIGTERM")
	fs.BoolVar(&cfg.hangHealth, "hang-health", false, "keep the port open but never answer /health")
	fs.DurationVar(&cfg.hangHealthAfter, "hang-health-after", 0, "serve /health normally this long, then never answer it")
	fs.IntVar(&cfg.forkChildren, "fork-children", 0, "start N children that inherit stdout/stderr and ignore SIGTERM")
	fs.BoolVar(&cfg.forkEscaped, "fork-escaped-child", false, "start one child in its own session (out of reach of a group kill) that holds stdout/stderr")
	fs.DurationVar(&cfg.childLife, "child-life", 10*time.Minute, "how long forked children live")
	fs.IntVar(&cfg.spam, "spam", 0, "print this many lines per second on stdout (0: off)")
	fs.StringVar(&cfg.stderrOnExit, "stderr-on-exit", "sim-engine: fatal: simulated crash", "line printed on stderr right before a crash")
	fs.DurationVar(&cfg.childSleep, "child-sleep", 0, "internal: run as a forked child for this long")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, 0, false
		}
		return cfg, 2, false // the flag package has printed the error
	}
	fs.Visit(func(f *flag.Flag) { cfg.stderrOnExitSet = cfg.stderrOnExitSet || f.Name == "stderr-on-exit" })
	err := cfg.validate(fs.Args(), crashSignal)
	if err != nil {
		fmt.Fprintf(stderr, "sim-engine: %v\n", err)
		return cfg, 2, false
	}
	return cfg, 0, true
}

func (cfg *config) validate(rest []string, crashSignal string) error {
	if len(rest) > 0 {
		return fmt.Errorf("unexpected arguments %q", rest)
	}
	if cfg.childSleep > 0 {
		return nil // a forked child needs nothing else
	}
	if cfg.port <= 0 || cfg.port > 65535 {
		return errors.New("--port is required and must be in 1..65535")
	}
	for name, d := range map[string]time.Duration{"load-time": cfg.loadTime, "crash-after": cfg.crashAfter,
		"crash-after-jitter": cfg.crashJitter, "hang-health-after": cfg.hangHealthAfter, "child-life": cfg.childLife} {
		if d < 0 {
			return fmt.Errorf("--%s must not be negative", name)
		}
	}
	if cfg.forkChildren < 0 || cfg.forkChildren > maxForkChildren {
		return fmt.Errorf("--fork-children must be in 0..%d", maxForkChildren)
	}
	if cfg.spam < 0 {
		return errors.New("--spam must not be negative")
	}
	if cfg.exitCode < 0 || cfg.exitCode > 255 {
		return errors.New("--exit-code must be in 0..255")
	}
	if crashSignal != "" {
		sig, err := parseSignal(crashSignal)
		if err != nil {
			return err
		}
		cfg.crashSignal = sig
	}
	return nil
}

// signalsByName are the signals a simulated crash may use.
var signalsByName = map[string]syscall.Signal{
	"KILL": syscall.SIGKILL, "SEGV": syscall.SIGSEGV, "ABRT": syscall.SIGABRT,
	"BUS": syscall.SIGBUS, "FPE": syscall.SIGFPE, "ILL": syscall.SIGILL,
	"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
	"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
	"PIPE": syscall.SIGPIPE, "SYS": syscall.SIGSYS, "TRAP": syscall.SIGTRAP,
}

// parseSignal reads "SIGKILL", "kill" or "9".
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	if sig, ok := signalsByName[strings.TrimPrefix(strings.ToUpper(s), "SIG")]; ok {
		return sig, nil
	}
	return 0, fmt.Errorf("--crash-signal: unknown signal %q", s)
}
