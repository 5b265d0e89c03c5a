// Package ctl is the operator CLI over pool-managerd's HTTP API (docs/contract.md §4),
// shipped as `poolctl` and as `pool-managerd ctl`. It knows the API only by its
// JSON, never by the daemon's Go types, so it stays a thin, dependency-free client.
//
// Exit codes: 0 success, 1 an API or connection error, 2 bad usage.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
)

const (
	defaultAddr    = "127.0.0.1:9200"
	defaultTimeout = 10 * time.Second
)

// globals are the flags every subcommand accepts, before or after its name.
type globals struct {
	addr, token, tokenFile string
	json                   bool
	timeout                time.Duration
}

var globalNames = map[string]bool{"addr": true, "token": true, "token-file": true, "json": true, "timeout": true}

// register defines the global flags on fs. Current values are the defaults,
// so registering on a subcommand's flag set keeps what was parsed before it.
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", g.addr, "daemon address: host:port, http://host:port or unix:/path/api.sock (default $POOL_MANAGERD_ADDR, else "+defaultAddr+")")
	fs.StringVar(&g.token, "token", g.token, "API bearer token (default $POOL_MANAGERD_TOKEN, else for a local daemon "+DefaultTokenFile+" when readable)")
	fs.StringVar(&g.tokenFile, "token-file", g.tokenFile, "read the API token from this file")
	fs.BoolVar(&g.json, "json", g.json, "print the raw JSON response")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "per-request timeout")
}

// command is one subcommand.
type command struct {
	name, args, summary string
	run                 func(c *cli, args []string) error
}

// commands is filled in init: run functions refer back to the table for usage.
var commands []*command

func init() {
	commands = []*command{
		{"list", "", "list every pool", runList},
		{"show", "POOL", "show a pool's full status", runShow},
		{"health", "POOL", "show a pool's health", runHealth},
		{"drain", "POOL [--deadline D] [--wait]", "drain a pool: refuse new leases, stop once leases reach 0 or at the deadline", runDrain},
		{"reload", "POOL --model REF [--version V] [--deadline D] [--wait]", "drain, then restart a pool on a new model (rolls back on failure)", runReload},
		{"start", "POOL", "start a stopped, failed or backing-off pool", runStart},
		{"lease", "POOL [--ttl D]", "take a lease on a pool", runLease},
		{"release", "POOL LEASE_ID", "release a lease", runRelease},
		{"place", "[--model REF] [--pool ID ...] [--ttl D]", "let the daemon pick a pool and take a lease on it", runPlace},
		{"events", "[--pool ID] [--no-reconnect]", "follow pool state changes until interrupted (reconnects and resumes)", runEvents},
		{"logs", "POOL [--tail N] [-f]", "print a pool engine's last output lines (-f: then follow new ones)", runLogs},
		{"help", "[COMMAND]", "show this help, or a command's", runHelp},
	}
}

// cli is one invocation's state.
type cli struct {
	ctx            context.Context
	stdout, stderr io.Writer
	g              globals
	cmd            *command
}

// Main runs poolctl with args (without the program name) and returns its exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, stdout, stderr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{ctx: ctx, stdout: stdout, stderr: stderr, g: globals{timeout: defaultTimeout}}
	fs := flag.NewFlagSet("poolctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // usage is printed below, once
	c.g.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.usage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "poolctl: %v\n", err)
		c.usage(stderr)
		return 2
	}
	if fs.NArg() == 0 {
		c.usage(stderr)
		return 2
	}
	name := fs.Arg(0)
	for _, cmd := range commands {
		if cmd.name == name {
			c.cmd = cmd
			return c.report(cmd.run(c, fs.Args()[1:]))
		}
	}
	if near := config.Closest(name, commandNames()); near != "" {
		fmt.Fprintf(stderr, "poolctl: unknown command %q (did you mean %q?)\n", name, near)
		return 2
	}
	fmt.Fprintf(stderr, "poolctl: unknown command %q\n", name)
	c.usage(stderr)
	return 2
}

// usage lists every subcommand and the global flags.
func (c *cli) usage(w io.Writer) {
	fmt.Fprintln(w, "usage: poolctl [global flags] COMMAND [args]\n\ncommands:")
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %s\n        %s\n", strings.TrimSpace(cmd.name+" "+cmd.args), cmd.summary)
	}
	fmt.Fprintln(w, "\nglobal flags (also accepted after the command):")
	fs := flag.NewFlagSet("poolctl", flag.ContinueOnError)
	(&globals{timeout: defaultTimeout}).register(fs)
	printFlags(w, fs, func(string) bool { return true })
}

// cmdUsage prints one subcommand's usage and its own flags.
func cmdUsage(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: poolctl %s\n\n%s\n", strings.TrimSpace(cmd.name+" "+cmd.args), cmd.summary)
	if fs != nil {
		fmt.Fprintln(w)
		printFlags(w, fs, func(name string) bool { return !globalNames[name] })
	}
	fmt.Fprintln(w, "\nglobal flags: see 'poolctl help'")
}

// printFlags lists fs's flags that keep accepts, GNU style (--name, and -x
// for a one-letter flag).
func printFlags(w io.Writer, fs *flag.FlagSet, keep func(string) bool) {
	fs.VisitAll(func(f *flag.Flag) {
		if !keep(f.Name) {
			return
		}
		typ, text := flag.UnquoteUsage(f)
		switch f.Value.(type) {
		case *msFlag:
			typ = "duration"
		case *listFlag:
			typ = "string"
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "-1" {
			text += " (default " + f.DefValue + ")"
		}
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-" // a one-letter flag is written the short way: -f
		}
		fmt.Fprintf(w, "  %s\n        %s\n", strings.TrimSpace(dash+f.Name+" "+typ), text)
	})
}

// usageError is bad usage of the current subcommand: exit 2 with its usage.
type usageError struct {
	msg string
	fs  *flag.FlagSet
}

func (e *usageError) Error() string { return e.msg }

// errHelp ends a subcommand after it printed its own help.
var errHelp = errors.New("help shown")

// parse parses a subcommand's flags, interspersed with exactly nargs
// positional arguments (the flag package alone stops at the first one).
func (c *cli) parse(fs *flag.FlagSet, args []string, nargs int) ([]string, error) {
	fs.SetOutput(io.Discard)
	c.g.register(fs)
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			cmdUsage(c.stdout, c.cmd, fs)
			return nil, errHelp
		}
		if err != nil {
			return nil, &usageError{err.Error(), fs}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// After "--" everything is positional.
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) != nargs {
		return nil, &usageError{fmt.Sprintf("%s takes %d argument(s), got %d", c.cmd.name, nargs, len(pos)), fs}
	}
	return pos, nil
}

// report prints err the way an operator can act on and returns the exit code.
func (c *cli) report(err error) int {
	var ue *usageError
	switch {
	case err == nil || errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "poolctl: %s\n", ue.msg)
		cmdUsage(c.stderr, c.cmd, ue.fs)
		return 2
	}
	fmt.Fprintf(c.stderr, "poolctl: %v\n", err)
	var ae *apiError
	var ce *connError
	switch {
	case errors.As(err, &ae) && ae.Status == 401:
		if c.g.token == "" {
			fmt.Fprintln(c.stderr, "poolctl: hint: the daemon wants a token: set --token, --token-file or POOL_MANAGERD_TOKEN "+
				"(a daemon running as root without one writes it to "+DefaultTokenFile+", readable by root only)")
		} else {
			fmt.Fprintln(c.stderr, "poolctl: hint: the token was rejected: check --token, --token-file or POOL_MANAGERD_TOKEN")
		}
	case errors.As(err, &ce) && ce.refused:
		fmt.Fprintf(c.stderr, "poolctl: hint: is pool-managerd running on %s? set --addr or POOL_MANAGERD_ADDR\n", ce.addr)
	}
	return 1
}

func runHelp(c *cli, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		c.usage(c.stdout)
		return nil
	}
	for _, cmd := range commands {
		if cmd.name == args[0] {
			// Build the command's flag set by asking it for help.
			c.cmd = cmd
			return cmd.run(c, []string{"-h"})
		}
	}
	names := commandNames()
	sort.Strings(names)
	if near := config.Closest(args[0], names); near != "" {
		return &usageError{fmt.Sprintf("unknown command %q (did you mean %q?)", args[0], near), nil}
	}
	return &usageError{fmt.Sprintf("unknown command %q (commands: %s)", args[0], strings.Join(names, ", ")), nil}
}

// commandNames lists the subcommands in the order of usage.
func commandNames() []string {
	names := make([]string, 0, len(commands))
	for _, cmd := range commands {
		names = append(names, cmd.name)
	}
	return names
}
