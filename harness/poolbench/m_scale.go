// Measurement "scale": the daemon as its own process with N simulated pools:
// time until all are ready, then its RSS and CPU at idle. Baselines: N bare
// simulators exec'd by poolbench itself, and one idle simulator's RSS (the
// same binary, so the same code size).

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
)

const (
	mib = 1 << 20
	// allReadyPoll is how often GET /v1/pools is polled while N pools start:
	// the resolution of the time-to-ready figure, kept coarse because each
	// poll encodes every pool's status.
	allReadyPoll = 100 * time.Millisecond
	// daemonStopWait bounds the daemon's SIGTERM shutdown (its own
	// shutdown_deadline is 10 s, plus stop grace and slack).
	daemonStopWait = 40 * time.Second
)

// rssTargets are the idle RSS targets by pool count (MiB).
var rssTargets = map[int]float64{16: 20, 256: 48}

// idleCPUTargets are the idle CPU targets by pool count, in ms of CPU per
// minute, with liveness at its 5 s default.
var idleCPUTargets = map[int]float64{16: 60}

// readyTargets are the time-to-all-ready targets by pool count, as a ratio
// to the bare exec-all baseline of the same run.
var readyTargets = map[int]float64{256: 1.2}

func measureScale(ctx context.Context, p params) ([]row, error) {
	var rows []row
	for _, n := range p.scale {
		r, err := scaleRun(ctx, p, n)
		rows = append(rows, r...)
		if err != nil {
			return rows, fmt.Errorf("%d pools: %w", n, err)
		}
	}
	return rows, nil
}

func scaleRun(ctx context.Context, p params, n int) ([]row, error) {
	sec := fmt.Sprintf("scale %d", n)
	bareAll, oneRSS, err := bareFleet(ctx, p.self, n)
	if err != nil {
		return nil, fmt.Errorf("bare fleet: %w", err)
	}
	dir, err := os.MkdirTemp("", "poolbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cfgFile, logFile := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "daemon.log")
	if err := os.WriteFile(cfgFile, scaleConfig(n), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(p.self, "daemon", "-config", cfgFile, "-log", logFile)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := startOwned(cmd); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	stopped := false
	defer func() {
		if !stopped {
			_, _ = stopDaemon(cmd)
		}
	}()
	base, err := readAddr(out)
	if err != nil {
		return nil, err
	}
	polled, err := waitAllReady(ctx, base, n, t0)
	if err != nil {
		return nil, fmt.Errorf("%w (daemon log: %s)", err, logFile)
	}
	allReady, err := lastReadyRecord(logFile, n, t0)
	if err != nil {
		return nil, err
	}
	if err := sleep(ctx, p.settle); err != nil {
		return nil, err
	}
	rss, err := procStatus(pid, "VmRSS")
	if err != nil {
		return nil, err
	}
	hwm, _ := procStatus(pid, "VmHWM")
	threads, _ := procStatus(pid, "Threads") // procStatus scales by 1024 (kB)
	idle, err := idleCPU(ctx, pid, p.cpuWindow)
	if err != nil {
		return nil, err
	}
	engines := childrenOf(pid)
	var engRSS int64
	for _, e := range engines {
		r, _ := procStatus(e, "VmRSS")
		engRSS += r
	}
	stopTook, err := stopDaemon(cmd)
	stopped = true
	if err != nil {
		return nil, err
	}
	if left := sweep(p.runID); left > 0 {
		return nil, fmt.Errorf("%d processes outlived the daemon (killed now)", left)
	}
	var rssT, readyT, cpuT *target
	if t, ok := rssTargets[n]; ok {
		rssT = atMost(t)
	}
	if t, ok := idleCPUTargets[n]; ok {
		cpuT = atMost(t)
	}
	if t, ok := readyTargets[n]; ok {
		readyT = ratioAtMost(t)
	}
	one := float64(oneRSS) / mib
	return []row{
		newRow(sec, fmt.Sprintf("daemon exec → all %d pools ready", n), allReady.Seconds(), "s", bareAll.read.Seconds(), "bare: exec all, last ready line read", readyT),
		newRow(sec, "context: the same, seen by a GET /v1/pools poll every 100 ms", polled.Seconds(), "s", bareAll.stamp.Seconds(), "bare: last simulator's own ready stamp", nil),
		newRow(sec, "daemon idle RSS (VmRSS)", float64(rss)/mib, "MiB", one, "one idle sim, same binary", rssT),
		newRow(sec, "daemon peak RSS (VmHWM)", float64(hwm)/mib, "MiB", one, "one idle sim, same binary", nil),
		newRow(sec, fmt.Sprintf("daemon idle CPU, utime+stime over %s", p.cpuWindow), idle.stat, "ms/min", -1, "", cpuT),
		newRow(sec, "context: the same window by schedstat (ns resolution)", idle.sched, "ms/min", -1, "", nil),
		newRow(sec, "context: daemon OS threads (/proc/PID/status Threads)", float64(threads/1024), "threads", -1, "", nil),
		newRow(sec, fmt.Sprintf("context: engines' RSS sum (%d engines, not counted)", len(engines)), float64(engRSS)/mib, "MiB", -1, "", nil),
		newRow(sec, "context: daemon SIGTERM → exit", stopTook.Seconds(), "s", -1, "", nil),
	}, nil
}

// scaleConfig is a daemon config with n simulated pools that load at once;
// liveness is left at its 5 s default so idle CPU is what production sees.
func scaleConfig(n int) []byte {
	var b strings.Builder
	b.WriteString("listen: 127.0.0.1:0\nshutdown_deadline: 10s\ngpu: {require_nvidia: false}\nlog: {format: json, level: info}\n")
	b.WriteString("defaults: {stop_grace: 5s, startup_timeout: 60s}\npools:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - id: p%03d\n    engine: llamacpp\n    model_ref: bench/p%03d\n", i, i)
		b.WriteString(`    command: ["${SELF}", sim-engine, --host, "${HOST}", --port, "${PORT}", --model, "${MODEL_REF}", --load-time, "0"]` + "\n")
		b.WriteString("    env: {GORACE: atexit_sleep_ms=0}\n")
	}
	return []byte(b.String())
}

// readAddr reads the daemon's "listening on" line.
func readAddr(out io.ReadCloser) (string, error) {
	ch := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), listeningPrefix); ok {
				ch <- "http://" + a
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case a := <-ch:
		return a, nil
	case <-time.After(stateWait):
		return "", fmt.Errorf("daemon did not print its address within %s", stateWait)
	}
}

// lastReadyRecord reads the daemon's JSON log and returns the time, since
// t0, of the last of n pools' first "pool.state" record to ready: when the
// daemon knew all were ready, at the resolution of its own clock rather
// than of a poll. The daemon runs on the same host, so its clock is ours.
func lastReadyRecord(logFile string, n int, t0 time.Time) (time.Duration, error) {
	f, err := os.Open(logFile)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	first := map[string]time.Time{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r struct {
			Time   time.Time `json:"time"`
			Msg    string    `json:"msg"`
			PoolID string    `json:"pool_id"`
			To     string    `json:"to"`
		}
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.Msg != "pool.state" || r.To != string(actors.StateReady) {
			continue
		}
		if _, ok := first[r.PoolID]; !ok {
			first[r.PoolID] = r.Time
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("daemon log %s: %w", logFile, err)
	}
	if len(first) != n {
		return 0, fmt.Errorf("daemon log %s: %d of %d pools logged pool.state to ready", logFile, len(first), n)
	}
	var last time.Time
	for _, at := range first {
		if at.After(last) {
			last = at
		}
	}
	return last.Sub(t0), nil
}

// waitAllReady polls GET /v1/pools until n pools are ready; it returns the
// time since t0.
func waitAllReady(ctx context.Context, base string, n int, t0 time.Time) (time.Duration, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	limit := 60 * time.Second
	ready := 0
	for time.Since(t0) < limit {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/pools", nil)
		resp, err := client.Do(req)
		if err == nil {
			var pr struct{ Pools []actors.PoolStatus }
			err = json.NewDecoder(resp.Body).Decode(&pr)
			drain(resp)
			ready = 0
			for _, p := range pr.Pools {
				if p.State == actors.StateReady {
					ready++
				}
			}
			if err == nil && ready == n {
				return time.Since(t0), nil
			}
		}
		if err := sleep(ctx, allReadyPoll); err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("only %d of %d pools ready after %s", ready, n, limit)
}

// idleMsPerMin is a daemon's CPU use over an idle window, in ms of CPU per
// minute: stat from utime+stime of /proc/PID/stat (10 ms ticks, so a 30 s
// window resolves 20 ms/min), sched from the threads' schedstat run times
// (ns; a thread that exits in the window takes its time with it).
type idleMsPerMin struct{ stat, sched float64 }

// idleCPU measures pid's idle CPU over window.
func idleCPU(ctx context.Context, pid int, window time.Duration) (idleMsPerMin, error) {
	_, _, t0, err := procStat(pid)
	if err != nil {
		return idleMsPerMin{}, err
	}
	c0, err := cpuTime(pid)
	if err != nil {
		return idleMsPerMin{}, err
	}
	w0 := time.Now()
	if err := sleep(ctx, window); err != nil {
		return idleMsPerMin{}, err
	}
	_, _, t1, err := procStat(pid)
	if err != nil {
		return idleMsPerMin{}, err
	}
	c1, err := cpuTime(pid)
	if err != nil {
		return idleMsPerMin{}, err
	}
	perMin := float64(time.Minute) / float64(time.Since(w0))
	ticks := time.Duration(t1-t0) * time.Second / clockTicks
	return idleMsPerMin{
		stat:  float64(ticks) / float64(time.Millisecond) * perMin,
		sched: float64(c1-c0) / float64(time.Millisecond) * perMin,
	}, nil
}

// stopDaemon sends SIGTERM and waits; past daemonStopWait it SIGKILLs.
func stopDaemon(cmd *exec.Cmd) (time.Duration, error) {
	defer untrack(cmd.Process.Pid)
	t0 := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return time.Since(t0), fmt.Errorf("daemon exit: %w", err)
		}
		return time.Since(t0), nil
	case <-time.After(daemonStopWait):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return time.Since(t0), fmt.Errorf("daemon still running %s after SIGTERM; killed", daemonStopWait)
	}
}

// fleetTimes are a bare fleet's times from the first exec.
type fleetTimes struct {
	read  time.Duration // the last ready line was read: the supervisor knows all are ready
	stamp time.Duration // the last simulator's own ready stamp
}

// bareFleet execs n simulators back to back and returns the time until it
// had read the last one's ready line (and that simulator's own stamp), and
// the RSS of one of them. All are stopped before it returns. A simulator
// that loses its port to a race is started again, as the daemon would.
func bareFleet(ctx context.Context, self string, n int) (fleetTimes, int64, error) {
	t0 := time.Now()
	sims := make([]*bareSim, n)
	defer func() {
		for _, s := range sims {
			if s != nil {
				_ = s.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
		for _, s := range sims {
			if s != nil {
				_, _ = s.signalAndWait(syscall.SIGTERM, 10*time.Second)
			}
		}
	}()
	start := func(i int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err := startBareSim(self, "--load-time", "0")
		sims[i] = s
		return err
	}
	for i := range sims {
		if err := start(i); err != nil {
			return fleetTimes{}, 0, err
		}
	}
	var lastRead, lastStamp time.Time
	for i := range sims {
		at, err := sims[i].waitReady(60 * time.Second)
		for try := 0; errors.Is(err, errExitedEarly) && try < 3; try++ {
			if err = start(i); err == nil {
				at, err = sims[i].waitReady(60 * time.Second)
			}
		}
		if err != nil {
			return fleetTimes{}, 0, err
		}
		if at.After(lastStamp) {
			lastStamp = at
		}
		if r := sims[i].out.readAt; r.After(lastRead) { // set before ready was closed
			lastRead = r
		}
	}
	rss, err := procStatus(sims[0].cmd.Process.Pid, "VmRSS")
	return fleetTimes{read: lastRead.Sub(t0), stamp: lastStamp.Sub(t0)}, rss, err
}
