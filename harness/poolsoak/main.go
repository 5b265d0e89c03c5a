// Command poolsoak is a chaos soak for pool-managerd. It runs the real
// daemon as a separate process on simulator engines, torments it for a
// bounded time (SIGKILL and SIGSTOP of engines, drains, reloads to good and
// missing models, concurrent leases and placements, one daemon SIGKILL and
// restart), then settles everything and checks an accounting: every pool
// ready again, no engine process left behind, the daemon's lease counts
// equal to the leases the soak really holds, no goroutine or fd growth.
// It exits 1 when any check fails. See docs/soak.md.
//
//	go run ./harness/poolsoak -duration 30s -pools 6 -seed 1
//
// The binary plays every part: `poolsoak daemon -config F` is the daemon
// (what cmd/pool-managerd's serve does), `poolsoak sim-engine …` the engine
// simulator, `poolsoak sleep D` the planted leftover, `poolsoak escaper …`
// an engine whose children escape (-plant-escapes). Nothing is built.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/pool-managerd/pool-managerd/engine/sim"
)

// Exit codes: 0 every check passed, 1 a check failed, 2 bad flags.
const (
	exitPass    = 0
	exitFail    = 1
	exitBadArgs = 2
)

func main() { os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr)) }

// dispatch runs the role args[0] names, or the soak itself.
func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "daemon":
			return daemonMain(args[1:])
		case "sim-engine":
			return sim.Main(args[1:])
		case "sleep":
			return sleepMain(args[1:])
		case "escaper":
			return escaperMain(args[1:])
		case "escape-middle":
			return escapeMiddleMain(args[1:])
		}
	}
	return soakMain(args, stdout, stderr)
}

// isRole reports whether args ask for one of the helper roles above.
func isRole(args []string) bool {
	if len(args) == 0 {
		return false
	}
	switch args[0] {
	case "daemon", "sim-engine", "sleep", "escaper", "escape-middle":
		return true
	}
	return false
}

// sleepMain is the planted leftover: a process that just sleeps.
func sleepMain(args []string) int {
	d := 10 * time.Minute
	if len(args) > 0 {
		if v, err := time.ParseDuration(args[0]); err == nil {
			d = v
		}
	}
	time.Sleep(d)
	return 0
}

// options are the soak's flags.
type options struct {
	duration       time.Duration
	pools          int
	seed           uint64
	readyTimeout   time.Duration
	hangAfter      time.Duration
	goroutineSlack int
	fdSlack        int
	plantLeftover  bool
	plantNegative  bool
	plantEscapes   bool
	hostileAPI     bool
	crashCleanup   bool
	keep           bool
	verbose        bool
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("poolsoak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "how long chaos runs (the whole run takes ~10s more)")
	fs.IntVar(&o.pools, "pools", 6, "number of pools (they cycle through 6 simulator misbehaviours)")
	seed := fs.String("seed", "", "random seed (default: from the clock; printed either way)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 30*time.Second, "how long pools may take to be all ready at a check point")
	fs.DurationVar(&o.hangAfter, "hang-after", 8*time.Second, "the hanging pool's --hang-health-after")
	fs.IntVar(&o.goroutineSlack, "goroutine-slack", 20, "allowed goroutine growth of the daemon")
	fs.IntVar(&o.fdSlack, "fd-slack", 10, "allowed fd growth of the daemon")
	fs.BoolVar(&o.plantLeftover, "plant-leftover", false, "plant a leftover process in an engine-like group: the run must fail")
	fs.BoolVar(&o.plantNegative, "plant-negative-lease", false, "book one release twice in the soak's own ledger: the run must fail")
	fs.BoolVar(&o.plantEscapes, "plant-escapes", false, "add a pool whose every engine start plants children that leave its group (setsid, setpgid, double fork): any that outlives its engine's supervision fails the run")
	fs.BoolVar(&o.hostileAPI, "hostile-api", false, "add hostile API calls to the chaos (shell code in new_model_ref, huge paths, broken bodies) and a pool whose command is an `sh -c` script")
	fs.BoolVar(&o.crashCleanup, "crash-cleanup", false, "after the daemon SIGKILL, kill the engine workers that outlived it, as systemd's KillMode=mixed would (default: leave them to the next daemon's start-up sweep, which must kill them)")
	fs.BoolVar(&o.keep, "keep", false, "keep the run directory (config, daemon logs) even when the run passes")
	fs.BoolVar(&o.verbose, "v", false, "print every chaos action")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.duration < 2*time.Second || o.pools < 1 || o.pools > 64 {
		return o, errors.New("-duration must be at least 2s and -pools in 1..64")
	}
	o.seed = uint64(time.Now().UnixNano())
	if *seed != "" {
		v, err := strconv.ParseUint(*seed, 10, 64)
		if err != nil {
			return o, fmt.Errorf("-seed: %v", err)
		}
		o.seed = v
	}
	return o, nil
}

// soakMain runs the soak: exit 0 when every check passed.
func soakMain(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitPass
	}
	if err != nil {
		fmt.Fprintf(stderr, "poolsoak: %v\n", err)
		return exitBadArgs
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := newSoak(o, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "poolsoak: %v\n", err)
		return exitFail
	}
	if !s.run(ctx) {
		return exitFail
	}
	return exitPass
}
