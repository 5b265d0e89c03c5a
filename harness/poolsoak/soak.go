// The run: set up, start the daemon, chaos with a daemon crash in the
// middle, then the final checks (check.go) and the report.

package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Bounds of the steps outside chaos. Named so a slow CI box can be reasoned
// about: none of them is hit on a healthy run.
const (
	daemonUpLimit   = 20 * time.Second // /readyz answers after a start
	daemonExitLimit = 20 * time.Second // SIGTERM → exit: shutdown_deadline 2s + stop grace + the daemon's 5s slack
	pdeathsigWait   = 2 * time.Second  // engines of a SIGKILLed daemon die of Pdeathsig by then
	pollEvery       = 100 * time.Millisecond
)

type soak struct {
	o        options
	out      io.Writer
	runID    string
	self     string
	dir      string
	cfg      string
	ids      []string
	api      *api
	down     atomic.Bool            // the daemon is down on purpose
	gen      atomic.Int64           // daemon generation: 1, then 2 after the crash
	d        *daemonProc            // only the run goroutine touches it
	dlog     atomic.Pointer[string] // the current daemon's log file, for the chaos workers
	led      *ledger
	gate     sync.RWMutex // chaos actions hold it shared; quiet points hold it alone
	bg       sync.WaitGroup
	start    time.Time
	orphans0 int64 // reaper's count at the start

	mu        sync.Mutex
	failures  []string
	notes     map[string]int
	pgids     map[int]string // every engine process group seen → pool id
	planted   map[int]bool
	snapshot  []poolStatus
	actions   map[string]int
	survivors []proc
	escaped   []proc // planted escapees alive after the daemon stopped

	escPlanted   int            // escapees the escaping engines planted
	escPlantedBy map[string]int // … by kind
	samples      []sample
	checks       []checkResult
	ready        string // "6/6"
}

func newSoak(o options, out io.Writer) (*soak, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	runID := fmt.Sprintf("%012x", rand.Uint64()>>16) // not from -seed: two runs with one seed must not share it
	s := &soak{o: o, out: out, self: self, runID: runID, led: newLedger(o.plantNegative),
		notes: map[string]int{}, pgids: map[int]string{}, planted: map[int]bool{}, actions: map[string]int{}}
	if s.dir, err = os.MkdirTemp("", "poolsoak-"); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s.cfg = filepath.Join(s.dir, "pool-managerd.yaml")
	extra := adversaryPools(o, s.escapeLog())
	if s.ids, err = writeConfig(s.cfg, addr, filepath.Join(s.dir, "state"), o.pools, o.hangAfter, extra); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	s.api = newAPI(addr, &s.down, s.fail, s.note)
	return s, nil
}

// freeAddr is a loopback address that was free a moment ago; both daemons
// of the run listen on it.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (s *soak) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failures) < 100 {
		s.failures = append(s.failures, msg)
	}
	if s.o.verbose {
		fmt.Fprintf(s.out, "%7.2fs FAIL %s\n", time.Since(s.start).Seconds(), msg)
	}
}

// note records something worth a line in the report that is not a failure.
func (s *soak) note(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notes[fmt.Sprintf(format, args...)]++
}

func (s *soak) logf(format string, args ...any) {
	if s.o.verbose {
		s.mu.Lock()
		defer s.mu.Unlock()
		fmt.Fprintf(s.out, "%7.2fs %s\n", time.Since(s.start).Seconds(), fmt.Sprintf(format, args...))
	}
}

func (s *soak) count(action string) {
	s.mu.Lock()
	s.actions[action]++
	s.mu.Unlock()
}

// run does the whole soak and prints the accounting; true when it passed.
func (s *soak) run(ctx context.Context) (passed bool) {
	s.start = time.Now()
	s.orphans0 = theReaper().orphans.Load()
	fmt.Fprintf(s.out, "poolsoak: run %s, seed %d, %d pools, chaos %v, dir %s\n", s.runID, s.o.seed, s.o.pools, s.o.duration, s.dir)
	defer func() {
		if p := recover(); p != nil {
			s.fail("panic: %v\n%s", p, debug.Stack())
		}
		s.escPlanted, s.escPlantedBy = s.escapesPlanted() // before cleanup removes the run directory
		s.cleanup()
		passed = s.report()
	}()
	if !s.startDaemon(ctx) {
		return
	}
	if s.o.plantLeftover {
		s.plantLeftover()
	}
	tracking, stopTracking := context.WithCancel(ctx)
	defer stopTracking()
	go s.track(tracking)
	if _, err := s.settle(ctx); err != nil {
		s.fail("first start: %v", err)
		return
	}
	base1 := s.sample(ctx, "gen 1, first all-ready")

	chaosStart := time.Now()
	chaos, stopChaos := context.WithCancel(ctx)
	defer stopChaos()
	var workers sync.WaitGroup
	for i := range 5 {
		r := rand.New(rand.NewPCG(s.o.seed, uint64(i)))
		workers.Add(1)
		go func() {
			defer workers.Done()
			defer s.recoverWorker()
			if i < 2 {
				s.chaosLoop(chaos, r)
			} else {
				s.leaseLoop(chaos, r)
			}
		}()
	}
	end := chaosStart.Add(s.o.duration)
	base2 := base1
	if sleepCtx(ctx, time.Until(chaosStart.Add(s.o.duration/2))) {
		base2 = s.crash(ctx, base1, rand.New(rand.NewPCG(s.o.seed, 99)))
	}
	sleepCtx(ctx, time.Until(end))
	stopChaos()
	workers.Wait()
	s.bg.Wait()
	if ctx.Err() != nil {
		s.fail("interrupted")
		return
	}
	s.final(ctx, base2)
	return
}

func (s *soak) recoverWorker() {
	if p := recover(); p != nil {
		s.fail("panic in a soak worker: %v\n%s", p, debug.Stack())
	}
}

// startDaemon starts the next daemon generation and waits for /readyz.
func (s *soak) startDaemon(ctx context.Context) bool {
	gen := s.gen.Add(1)
	d, err := startDaemon(s.self, s.cfg, filepath.Join(s.dir, fmt.Sprintf("daemon-%d.log", gen)), s.runID)
	if err != nil {
		s.fail("%v", err)
		return false
	}
	s.d = d
	s.dlog.Store(&d.log)
	s.logf("daemon gen %d started, pid %d", gen, d.pid)
	deadline := time.Now().Add(daemonUpLimit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-d.done:
			s.fail("daemon gen %d exited at start: %v (log %s)", gen, d.err, d.log)
			return false
		default:
		}
		s.down.Store(true) // connection refused is expected until it listens
		an, err := s.api.call(ctx, "GET", "/readyz", nil, 200)
		if err == nil && an.status == 200 {
			s.down.Store(false)
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.fail("daemon gen %d: /readyz not 200 within %v (log %s)", gen, daemonUpLimit, d.log)
	return false
}

// crash takes a quiet sample of daemon gen 1, SIGKILLs it while chaos runs,
// starts gen 2 on the same config and state_dir, and returns gen 2's first
// all-ready sample.
func (s *soak) crash(ctx context.Context, base sample, r *rand.Rand) sample {
	s.gate.Lock()
	if _, err := s.settle(ctx); err != nil {
		s.fail("before the daemon crash: %v", err)
	}
	s.compare(base, s.sample(ctx, "gen 1, before SIGKILL"))
	s.gate.Unlock()
	sleepCtx(ctx, time.Duration(200+r.IntN(600))*time.Millisecond)

	s.down.Store(true)
	s.logf("daemon gen %d: SIGKILL", s.gen.Load())
	s.count("daemon SIGKILL + restart")
	s.d.signal(syscall.SIGKILL)
	if !s.d.wait(daemonExitLimit) {
		s.fail("daemon did not die of SIGKILL")
	}
	s.survivors = s.afterCrash()
	if s.o.crashCleanup {
		for _, p := range s.survivors {
			if p.pid != p.pgid { // a worker, not an engine: what KillMode=mixed would take
				_ = syscall.Kill(p.pid, syscall.SIGKILL)
			}
		}
	}
	if !s.startDaemon(ctx) {
		return base
	}
	if !s.o.crashCleanup {
		s.checkSwept()
	}
	s.gate.Lock()
	defer s.gate.Unlock()
	if _, err := s.settle(ctx); err != nil {
		s.fail("after the daemon restart: %v", err)
	}
	return s.sample(ctx, "gen 2, first all-ready")
}

// afterCrash waits (bounded) for the engine leaders of the killed daemon to
// die of Pdeathsig, and returns what of the run is still alive then: engine
// workers (Pdeathsig is not inherited), and any leader that outlived its
// death signal. They are left for the next daemon's start-up sweep, which
// must kill them (leaders by their pid records, workers by their engine's
// marker, see engine/pidrec); checkSwept and the leftover checks tell
// whether it did.
func (s *soak) afterCrash() []proc {
	deadline := time.Now().Add(pdeathsigWait)
	for {
		var alive []proc
		leaders := 0
		for _, p := range scanRun(s.runID) {
			if !s.planted[p.pid] {
				alive = append(alive, p)
				if p.pid == p.pgid && escapeeKind(p) == "" {
					leaders++
				}
			}
		}
		if leaders == 0 || time.Now().After(deadline) {
			return alive
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkSwept fails the run for every crash survivor still alive once the
// new daemon answers: its start-up sweep runs, and waits for what it killed
// to die, before it listens. A pid counts as the survivor only with the
// same process group and command line.
func (s *soak) checkSwept() {
	alive := map[int]proc{}
	for _, p := range scanRun(s.runID) {
		alive[p.pid] = p
	}
	for _, p := range s.survivors {
		if q, ok := alive[p.pid]; ok && q.pgid == p.pgid && q.cmd == p.cmd {
			s.fail("crash survivor outlived the new daemon's start-up sweep: %s", q)
		}
	}
}

// track polls /v1/pools: it records every engine process group and checks
// that no lease count is ever negative.
func (s *soak) track(ctx context.Context) {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.down.Load() {
			continue
		}
		if pools, err := s.api.pools(ctx); err == nil {
			s.observe(pools)
		}
	}
}

func (s *soak) observe(pools []poolStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snapshot = pools
	for _, p := range pools {
		if p.PID != nil {
			s.pgids[*p.PID] = p.PoolID // engines lead their own group
		}
		if p.ActiveLeases < 0 {
			s.failures = append(s.failures, fmt.Sprintf("pool %s: active_leases %d < 0", p.PoolID, p.ActiveLeases))
		}
	}
}

func (s *soak) latest() []poolStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshot
}

// settle brings every pool back to ready: SIGCONT for stopped processes,
// POST start for stopped and failed pools. Bounded by -ready-timeout.
func (s *soak) settle(ctx context.Context) ([]poolStatus, error) {
	deadline := time.Now().Add(s.o.readyTimeout)
	started := map[string]time.Time{}
	var last []poolStatus
	for {
		contStopped(s.runID)
		pools, err := s.api.pools(ctx)
		if err == nil {
			s.observe(pools)
			last = pools
			ready := 0
			for _, p := range pools {
				if p.State == "ready" {
					ready++
				} else if (p.State == "stopped" || p.State == "failed") && time.Since(started[p.PoolID]) > time.Second {
					started[p.PoolID] = time.Now()
					_, _ = s.api.call(ctx, "POST", "/v1/pools/"+p.PoolID+"/start", nil, 200, 202)
				}
			}
			s.mu.Lock()
			s.ready = fmt.Sprintf("%d/%d", ready, len(s.ids))
			s.mu.Unlock()
			if ready == len(s.ids) && len(pools) == len(s.ids) {
				return pools, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("pools not all ready within %v: %s", s.o.readyTimeout, describePools(last))
		}
		time.Sleep(pollEvery)
	}
}

func describePools(pools []poolStatus) string {
	var parts []string
	for _, p := range pools {
		d := p.PoolID + "=" + p.State
		if p.State != "ready" && p.LastError != "" {
			d += " (" + p.LastError + ")"
		}
		parts = append(parts, d)
	}
	return strings.Join(parts, ", ")
}

// plantLeftover starts a sleeper in a process group of its own, marked
// with the run id, and books that group as an engine's: the leftover check
// must report it.
func (s *soak) plantLeftover() {
	cmd := exec.Command(s.self, "sleep", "10m")
	if path, err := exec.LookPath("sleep"); err == nil {
		cmd = exec.Command(path, "600")
	}
	cmd.Env = append(daemonEnv(), runEnv+"="+s.runID)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c, err := spawn(cmd, false)
	if err != nil {
		s.fail("plant leftover: %v", err)
		return
	}
	s.mu.Lock()
	s.pgids[c.pid] = "planted"
	s.planted[c.pid] = true
	s.mu.Unlock()
	fmt.Fprintf(s.out, "poolsoak: planted a leftover: pid %d (%s)\n", c.pid, strings.Join(cmd.Args, " "))
}

// cleanup kills every process of the run, whatever happened, and removes
// the run directory when the run passed (unless -keep).
func (s *soak) cleanup() {
	if s.d != nil {
		s.d.signal(syscall.SIGKILL)
		s.d.wait(5 * time.Second)
	}
	for range 20 {
		if len(killRun(s.runID, nil)) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.mu.Lock()
	failed := len(s.failures) > 0
	s.mu.Unlock()
	if !failed && !s.o.keep {
		_ = os.RemoveAll(s.dir)
	}
}

// sleepCtx sleeps d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// between is a random duration in [lo, hi).
func between(r *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
