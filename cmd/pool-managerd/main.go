// Command pool-managerd keeps LLM inference engines alive on one GPU host and
// tells the orchestrator which of them can take work. See README.md and
// docs/contract.md for flags, config, API and signals.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/configs"
	"github.com/pool-managerd/pool-managerd/ctl"
	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/engine/sim"
	"github.com/pool-managerd/pool-managerd/supervisor"
	"github.com/pool-managerd/pool-managerd/supervisor/sdnotify"
)

// Exit codes (docs/contract.md §1).
const (
	exitOK      = 0
	exitFatal   = 1
	exitBadArgs = 2
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// survivePipeClose keeps a closed stdout or stderr from killing the daemon:
// with `pool-managerd -demo | jq`, Ctrl-C ends jq first, and Go's default is
// to die of SIGPIPE at the next log line, before any engine is stopped.
// Asking for SIGPIPE (and never reading it) turns such writes into EPIPE
// errors, which the log handler drops, so the shutdown drains as usual. Unlike
// signal.Ignore, this leaves SIGPIPE at its default in the engines we exec.
func survivePipeClose() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
}

func run(args []string, stdout, stderr io.Writer) int {
	survivePipeClose()
	if len(args) > 0 {
		switch args[0] {
		case "sim-engine":
			return sim.Main(args[1:])
		case "ctl":
			return ctl.Main(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("pool-managerd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "run the daemon on this YAML config `file`")
	demo := fs.Bool("demo", false, "run the daemon on the embedded demo config (simulated engines, no GPU needed)")
	check := fs.String("check-config", "", "validate this config `file`, print every problem, exit 0 or 2")
	logFormat := fs.String("log-format", "", "log `format`: auto (text on a terminal, else JSON), json or text; overrides log.format")
	version := fs.Bool("version", false, "print the version and VCS commit, and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage:\n  pool-managerd [-log-format auto|json|text] -config FILE | -demo\n  pool-managerd -check-config FILE | -version\n  pool-managerd sim-engine [flags]\n  pool-managerd ctl COMMAND [flags]\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitBadArgs
	}
	if *logFormat != "" && !slices.Contains(logFormats, *logFormat) {
		fmt.Fprintf(stderr, "pool-managerd: -log-format must be one of %s, not %q\n", strings.Join(logFormats, ", "), *logFormat)
		return exitBadArgs
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pool-managerd: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitBadArgs
	}
	switch {
	case *version:
		fmt.Fprintln(stdout, versionLine())
		return exitOK
	case *check != "":
		return checkConfig(*check, stdout, stderr)
	case *demo && *cfgPath != "":
		fmt.Fprintln(stderr, "pool-managerd: -demo and -config are exclusive")
		return exitBadArgs
	case !*demo && *cfgPath == "":
		fs.Usage()
		return exitBadArgs
	}
	load := func() (*config.Config, error) {
		var cfg *config.Config
		var err error
		if *demo {
			cfg, err = config.Parse(configs.Demo, "demo.yaml")
		} else {
			cfg, err = config.Load(*cfgPath)
		}
		if err == nil && *logFormat != "" { // the flag outranks log.format, also on SIGHUP
			cfg.Log.Format = *logFormat
		}
		return cfg, err
	}
	return serve(load, stdout, stderr)
}

// checkConfig is -check-config: the file's own problems (each with its
// line), exit 2; or else every reason the daemon would refuse to start on it
// here (listen address, API token, pool users), one per line, then a warning
// per thing that would fail on this host (see hostWarnings), exit 2; or else
// "ok", after those warnings, exit 0. A newcomer thus sees in one run all
// that a fresh machine lacks.
func checkConfig(file string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitBadArgs
	}
	raw, _ := os.ReadFile(file) // Load has read it: a regular file of bounded size
	_, probs := startProblems(cfg)
	for _, p := range probs {
		if p.line == 0 && strings.HasPrefix(p.msg, "auth.token_file") {
			p.line = keyLine(raw, "token_file")
		}
		if p.line > 0 {
			fmt.Fprintf(stderr, "%s:%d: %s\n", file, p.line, p.msg)
		} else {
			fmt.Fprintf(stderr, "%s: %s\n", file, p.msg)
		}
	}
	warnings := hostWarnings(cfg, raw)
	for _, w := range warnings {
		if w.line > 0 {
			fmt.Fprintf(stderr, "%s:%d: warning: %s\n", file, w.line, w.msg)
		} else {
			fmt.Fprintf(stderr, "%s: warning: %s\n", file, w.msg)
		}
	}
	if len(probs) > 0 {
		return exitBadArgs
	}
	if n := len(warnings); n > 0 {
		fmt.Fprintf(stdout, "%s: ok, with %d warning(s) about this host\n", file, n)
		return exitOK
	}
	fmt.Fprintf(stdout, "%s: ok\n", file)
	return exitOK
}

// problem is one reason the daemon would refuse to start; line is the
// config line it concerns, 0 when none.
type problem struct {
	line int
	msg  string
}

// startProblems applies POOL_MANAGERD_ADDR to cfg, reads the API token, and
// returns every reason the daemon refuses to start on cfg: a bad
// POOL_MANAGERD_ADDR, an unreadable or empty auth.token_file, a non-loopback
// listen address without a token, a pool user it cannot apply. serve and
// -check-config share it, so the check reports what the start would refuse.
func startProblems(cfg *config.Config) (token string, probs []problem) {
	badAddr := false
	if addr := os.Getenv("POOL_MANAGERD_ADDR"); addr != "" {
		if err := config.CheckListen(addr); err != nil {
			probs = append(probs, problem{msg: fmt.Sprintf("POOL_MANAGERD_ADDR: %v", err)})
			badAddr = true
		} else {
			cfg.Listen = addr
		}
	}
	token, err := readToken(cfg)
	if err != nil {
		probs = append(probs, problem{msg: err.Error()})
	} else if token == "" && !badAddr && !config.IsLoopback(cfg.Listen) {
		probs = append(probs, problem{msg: fmt.Sprintf("refusing to listen on non-loopback %s without an API token (set POOL_MANAGERD_TOKEN or auth.token_file)", cfg.Listen)})
	}
	if err := supervisor.CheckStateDir(cfg); err != nil {
		probs = append(probs, problem{msg: err.Error()})
	}
	for _, p := range cfg.Pools {
		if err := supervisor.CheckUsers([]config.Pool{p}); err != nil {
			probs = append(probs, problem{line: p.Line, msg: err.Error()})
		}
	}
	return token, probs
}

func serve(load func() (*config.Config, error), stdout, stderr io.Writer) int {
	cfg, err := load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitBadArgs
	}
	token, probs := startProblems(cfg)
	if len(probs) > 0 {
		for _, p := range probs {
			fmt.Fprintf(stderr, "pool-managerd: %s\n", p.msg)
		}
		return exitBadArgs
	}
	logger := newLogger(cfg.Log, stdout)
	self, err := os.Executable()
	if err != nil {
		self, _ = filepath.Abs(os.Args[0])
	}
	notify := sdnotify.New(logger) // the daemon's READY=1 and watchdog, and the signal loop's reloads
	opts := supervisor.Options{Config: cfg, Logger: logger, SelfExe: self, Token: token, Notifier: notify}
	if needsWriteToken(cfg, token) {
		wt, err := generateWriteToken(writeTokenDir())
		if err != nil {
			fmt.Fprintf(stderr, "pool-managerd: %v\n", err)
			return exitFatal
		}
		defer wt.remove()
		opts.WriteToken, opts.WriteTokenFile = wt.Token, wt.Path
		logger.Info("auth.token_generated", "token_file", opts.WriteTokenFile,
			"detail", "running as root without an API token: requests other than GET need this token (poolctl reads the file)")
	}
	supervisor.ApplyGCDefault() // GOGC=50 unless the environment sets GOGC
	d, err := supervisor.New(opts)
	if err != nil { // a config the daemon cannot apply, e.g. a pool user it cannot switch to
		fmt.Fprintf(stderr, "pool-managerd: %v\n", err)
		return exitBadArgs
	}
	// Signals are caught before any engine starts, so none is lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	if err := d.Start(nil); err != nil {
		logger.Error("daemon.start_failed", "err", err)
		d.Shutdown()
		return exitFatal
	}
	sig := awaitStop(sigs, load, func(next *config.Config) { d.Reconfigure(next) }, notify, logger, reloadTimeout)
	logger.Info("daemon.signal", "signal", engine.SignalName(sig.(syscall.Signal)))
	go func() { // another SIGTERM/SIGINT hurries the shutdown: drains stop waiting for leases
		for s := range sigs {
			logger.Warn("daemon.signal_during_shutdown", "signal", engine.SignalName(s.(syscall.Signal)))
			if s != syscall.SIGHUP { // no config reload while shutting down
				d.Hurry()
			}
		}
	}()
	d.Shutdown()
	return exitOK
}

// reloadTimeout bounds a SIGHUP's config read (a hung network mount).
const reloadTimeout = 10 * time.Second

// awaitStop is the daemon's signal loop: it returns the first SIGTERM or
// SIGINT from sigs, whatever else is going on. A SIGHUP reads the config
// with load in a goroutine of its own, so a read that blocks never holds up
// a signal; a read that has not finished within timeout is abandoned (the
// reload is refused and logged; the running config is kept). A SIGHUP that
// arrives while a read is in flight is merged: one more read follows once
// the current one ends, however many came. apply runs here, between
// signals, with each config read without error (Reconfigure only asks actors,
// which answer at once or within their ask timeout).
//
// systemd hears of each reload (notify may be nil): RELOADING=1 with
// MONOTONIC_USEC when a SIGHUP starts a read, READY=1 once the reload is
// over: the new config applied, or the running one kept because the new one
// is invalid or its read timed out. SIGHUPs merged into one more read stay
// inside the same RELOADING=1 ... READY=1 bracket, so READY=1 comes only once
// the last of them is done. A SIGTERM during a reload sends nothing more
// (the shutdown's STOPPING=1 follows).
func awaitStop(sigs <-chan os.Signal, load func() (*config.Config, error), apply func(*config.Config),
	notify *sdnotify.Notifier, logger *slog.Logger, timeout time.Duration) os.Signal {
	type result struct {
		cfg *config.Config
		err error
	}
	var (
		reading <-chan result // the read in flight; nil when none
		timer   *time.Timer
		expired <-chan time.Time
		again   bool // a SIGHUP came during the read in flight
	)
	startRead := func() {
		ch := make(chan result, 1) // an abandoned read still ends without blocking
		go func() {
			c, err := load()
			ch <- result{c, err}
		}()
		reading = ch
		timer = time.NewTimer(timeout)
		expired = timer.C
	}
	endRead := func() {
		timer.Stop()
		reading, expired = nil, nil
		if again {
			again = false
			startRead()
			return
		}
		notify.Ready() // the reload is over, applied or refused
	}
	for {
		select {
		case sig := <-sigs:
			if sig != syscall.SIGHUP {
				if timer != nil {
					timer.Stop()
				}
				return sig
			}
			if reading != nil {
				again = true
				logger.Info("config.reload_queued", "detail", "a config read is in flight; the file is read once more after it")
				continue
			}
			notify.Reloading()
			startRead()
		case res := <-reading:
			if res.err != nil {
				logger.Error("config.reload_failed", "err", res.err.Error(), "detail", "keeping the running config")
			} else {
				apply(res.cfg)
			}
			endRead()
		case <-expired:
			logger.Error("config.reload_failed", "err", fmt.Sprintf("reading the config did not finish within %s", timeout),
				"detail", "keeping the running config")
			endRead()
		}
	}
}

// maxTokenFile bounds auth.token_file: a token is a line of text.
const maxTokenFile = 64 << 10

func readToken(cfg *config.Config) (string, error) {
	if t := strings.TrimSpace(os.Getenv("POOL_MANAGERD_TOKEN")); t != "" {
		return t, nil
	}
	if cfg.Auth.TokenFile == "" {
		return "", nil
	}
	b, err := config.ReadRegularFile(cfg.Auth.TokenFile, maxTokenFile) // a FIFO or /dev/zero must not hang the start
	if errors.Is(err, fs.ErrNotExist) {
		f := cfg.Auth.TokenFile
		return "", fmt.Errorf("auth.token_file: %w (create it: install -d -m 0755 %s && (umask 077; head -c 32 /dev/urandom | base64 > %s))", err, filepath.Dir(f), f)
	}
	if err != nil {
		return "", fmt.Errorf("auth.token_file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("auth.token_file %s is empty", cfg.Auth.TokenFile)
	}
	return t, nil
}
