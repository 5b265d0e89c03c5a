// Command poolbench measures pool-managerd and prints each figure next to a
// baseline measured in the same run (a bare poller, a bare exec, a bare
// net/http server, bare simulators) and the target it should meet.
//
//	go run ./harness/poolbench            # full run, about 2–3 minutes
//	go run ./harness/poolbench -quick     # small counts, for CI smoke (< 40 s)
//	go run ./harness/poolbench -only health,lease -json
//
// The daemon runs in-process (loopback, gpu.NoGuard) except for the scale
// measurement, which runs it as `poolbench daemon` so its RSS and CPU are its
// own. Engines are this binary re-executed as `poolbench sim-engine`. Every
// process poolbench starts carries POOLBENCH_RUN=<id> in its environment and
// is killed, by pid, before poolbench exits.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pool-managerd/pool-managerd/engine/sim"
)

// params are the counts and durations of one run.
type params struct {
	self, runID string
	readyRuns   int
	crashRuns   int
	drainRuns   int
	reloadRuns  int
	llamaRuns   int // each of ready, crash, reload against llama-server
	clients     int
	apiDur      time.Duration // per side, health and lease each
	scale       []int         // pool counts of the scale measurement
	settle      time.Duration // scale: idle time before RSS is read
	cpuWindow   time.Duration // scale: idle CPU window (30 s: utime+stime come in 10 ms ticks)
}

func defaultParams(quick bool) params {
	if quick {
		return params{readyRuns: 10, crashRuns: 5, drainRuns: 3, reloadRuns: 3, llamaRuns: 3, clients: 8,
			apiDur: time.Second, scale: []int{16}, settle: time.Second, cpuWindow: 2 * time.Second}
	}
	return params{readyRuns: 100, crashRuns: 100, drainRuns: 10, reloadRuns: 30, llamaRuns: 20, clients: 8,
		apiDur: 3 * time.Second, scale: []int{16, 256}, settle: 2 * time.Second, cpuWindow: 30 * time.Second}
}

// measurement is one named part of the run, bounded by budget.
type measurement struct {
	name   string
	budget time.Duration
	run    func(context.Context, params) ([]row, error)
}

var measurements = []measurement{
	{"ready", 90 * time.Second, measureReady},
	{"crash", 60 * time.Second, measureCrash},
	{"health", 60 * time.Second, measureHealth},
	{"lease", 60 * time.Second, measureLease},
	{"drain", 60 * time.Second, measureDrain},
	{"reload", 60 * time.Second, measureReload},
	{"llama", 3 * time.Minute, measureLlama},
	{"scale", 4 * time.Minute, measureScale},
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "sim-engine":
			return sim.Main(args[1:])
		case "daemon":
			return daemonMain(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("poolbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "small counts and short windows (CI smoke)")
	only := fs.String("only", "", "comma-separated measurements to run: "+names())
	scale := fs.String("scale", "", "comma-separated pool counts for the scale measurement (default 16,256; -quick: 16)")
	asJSON := fs.Bool("json", false, "print JSON instead of the table")
	clients := fs.Int("clients", 0, "concurrent API clients for health and lease (default 8)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	p := defaultParams(*quick)
	if *clients > 0 {
		p.clients = *clients
	}
	if *scale != "" {
		p.scale = nil
		for _, s := range strings.Split(*scale, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 || n > 1024 {
				fmt.Fprintf(stderr, "poolbench: -scale: %q is not a pool count in 1..1024\n", s)
				return 2
			}
			p.scale = append(p.scale, n)
		}
	}
	selected, err := selectMeasurements(*only)
	if err != nil {
		fmt.Fprintln(stderr, "poolbench:", err)
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "poolbench:", err)
		return 1
	}
	p.self = self
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	m, began := describeMachine(), time.Now()
	rows, failed := runAll(ctx, p, selected, stderr)
	m.Duration = time.Since(began).Round(time.Second).String()
	if *asJSON {
		_ = printJSON(stdout, m, rows)
	} else {
		printTable(stdout, m, rows)
	}
	if failed {
		return 1
	}
	return 0
}

// runAll runs the selected measurements one after the other; a failed one
// is reported and the others still run. Every process started is gone when
// it returns.
func runAll(ctx context.Context, p params, selected []measurement, stderr io.Writer) (rows []row, failed bool) {
	if p.runID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		p.runID = hex.EncodeToString(b[:])
		os.Setenv(runEnv, p.runID) // inherited by everything started from here on
	}
	defer func() {
		killTracked()
		if n := sweep(p.runID); n > 0 {
			fmt.Fprintf(stderr, "poolbench: killed %d leftover processes\n", n)
		}
	}()
	for _, m := range selected {
		fmt.Fprintf(stderr, "poolbench: %s …\n", m.name)
		start := time.Now()
		mctx, cancel := context.WithTimeout(ctx, m.budget)
		r, err := m.run(mctx, p)
		cancel()
		rows = append(rows, r...)
		if err != nil {
			failed = true
			rows = append(rows, errRow(m.name, err))
			fmt.Fprintf(stderr, "poolbench: %s failed: %v\n", m.name, err)
		}
		fmt.Fprintf(stderr, "poolbench: %s done in %s\n", m.name, time.Since(start).Round(100*time.Millisecond))
		if ctx.Err() != nil {
			break
		}
	}
	return rows, failed
}

func selectMeasurements(only string) ([]measurement, error) {
	if only == "" {
		return measurements, nil
	}
	want := strings.Split(only, ",")
	var out []measurement
	for _, w := range want {
		i := slices.IndexFunc(measurements, func(m measurement) bool { return m.name == strings.TrimSpace(w) })
		if i < 0 {
			return nil, fmt.Errorf("-only: unknown measurement %q (known: %s)", w, names())
		}
		out = append(out, measurements[i])
	}
	return out, nil
}

func names() string {
	var n []string
	for _, m := range measurements {
		n = append(n, m.name)
	}
	return strings.Join(n, ",")
}
