// The final checks and the accounting report.

package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Bounds of the final checks: how long a transient state (an engine being
// torn down, a zombie not yet reaped) may take to clear before it counts.
const (
	leftoverSettle = 3 * time.Second
	afterExitWait  = 2 * time.Second
	sampleRounds   = 3
	sampleGap      = 250 * time.Millisecond
)

// sample is the daemon's goroutine and fd count at a quiet point.
type sample struct {
	label      string
	gen        int
	goroutines int
	fds        int
}

// final settles the pools and runs every end-of-run check, the last ones
// after the daemon's SIGTERM exit.
func (s *soak) final(ctx context.Context, base sample) {
	s.mu.Lock()
	detail := "every answer per docs/contract.md §4, no lease lost, no negative count"
	if n := len(s.failures); n > 0 {
		detail = fmt.Sprintf("%d problem(s), listed below", n)
	}
	s.checks = append(s.checks, checkResult{"during chaos", detail, len(s.failures) == 0})
	s.mu.Unlock()
	ok := s.check("pools ready", func() string {
		_, err := s.settle(ctx)
		if err != nil {
			s.fail("at the end: %v", err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.ready
	})
	if ok {
		s.check("leftovers (daemon up)", s.leftoversRunning(ctx))
		s.check("leases", func() string { return s.checkLeases(ctx) })
	}
	s.check("goroutines, fds", func() string {
		end := s.sample(ctx, fmt.Sprintf("gen %d, end", s.gen.Load()))
		s.compare(base, end)
		return s.growth()
	})
	s.check("daemon SIGTERM", func() string {
		s.down.Store(true)
		start := time.Now()
		s.d.signal(syscall.SIGTERM)
		if !s.d.wait(daemonExitLimit) {
			s.fail("daemon still running %v after SIGTERM", daemonExitLimit)
			return "no exit"
		}
		if s.d.err != nil {
			s.fail("daemon exit after SIGTERM: %v (want status 0)", s.d.err)
		}
		return fmt.Sprintf("exit 0 in %v", time.Since(start).Round(time.Millisecond))
	})
	s.check("leftovers (daemon gone)", s.noneLeft)
	if s.o.hostileAPI {
		s.check("hostile API", s.hostileRan)
	}
	s.check("daemon logs", s.scanLogs)
}

// check runs one named check and records whether it added failures.
func (s *soak) check(name string, fn func() string) bool {
	s.mu.Lock()
	n := len(s.failures)
	s.mu.Unlock()
	detail := fn()
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := len(s.failures) == n
	s.checks = append(s.checks, checkResult{name, detail, ok})
	return ok
}

type checkResult struct {
	name, detail string
	ok           bool
}

// leftoversRunning: with the daemon up, every process of the run must be
// the daemon or in the process group of an engine the API shows now.
func (s *soak) leftoversRunning(ctx context.Context) func() string {
	return func() string {
		deadline := time.Now().Add(leftoverSettle)
		for {
			pools, err := s.api.pools(ctx)
			current := map[int]bool{}
			markers := map[string]bool{} // of the current engines: their escapees are theirs
			for _, p := range pools {
				if p.PID != nil {
					current[*p.PID] = true
					if m := engineMarker(*p.PID); m != "" {
						markers[m] = true
					}
				}
			}
			var left []proc
			all := scanRun(s.runID)
			for _, p := range all {
				if p.pid != s.d.pid && !current[p.pgid] && !markers[engineMarker(p.pid)] {
					left = append(left, p)
				}
			}
			if err == nil && len(left) == 0 {
				return fmt.Sprintf("0 (%d live processes, %d engine groups seen in the run)", len(all), s.groupsSeen())
			}
			if time.Now().After(deadline) {
				for _, p := range left {
					s.fail("leftover process of %s: %s", s.groupOf(p.pgid), p)
				}
				return fmt.Sprintf("%d left behind", len(left))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// noneLeft: once the daemon has exited, no process of the run may exist.
func (s *soak) noneLeft() string {
	deadline := time.Now().Add(afterExitWait)
	for {
		left := scanRun(s.runID)
		if len(left) == 0 {
			return "0"
		}
		if time.Now().After(deadline) {
			var escaped []proc
			for _, p := range left {
				if kind := escapeeKind(p); kind != "" {
					escaped = append(escaped, p)
					s.fail("escapee (%s) outlived the daemon: %s", kind, p)
				} else {
					s.fail("process of %s outlived the daemon: %s", s.groupOf(p.pgid), p)
				}
			}
			s.mu.Lock()
			s.escaped = escaped
			s.mu.Unlock()
			return fmt.Sprintf("%d outlived the daemon (%d of them escapees)", len(left), len(escaped))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *soak) groupOf(pgid int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := s.pgids[pgid]; ok {
		return fmt.Sprintf("%s's engine group %d", id, pgid)
	}
	return fmt.Sprintf("untracked group %d", pgid)
}

func (s *soak) groupsSeen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pgids)
}

// checkLeases compares, pool by pool, the daemon's active_leases with the
// leases the soak holds, then releases them all and expects 0 everywhere.
// A pool that restarts during the comparison makes it start over.
func (s *soak) checkLeases(ctx context.Context) string {
	for attempt := 1; ; attempt++ {
		before, err := s.api.pools(ctx)
		if err != nil {
			s.fail("lease check: %v", err)
			return "no answer"
		}
		if s.compareLeases(ctx, before) {
			break
		}
		if attempt == 5 {
			s.fail("lease check: pools kept leaving ready during the comparison")
			return "no stable point"
		}
		if _, err := s.settle(ctx); err != nil {
			s.fail("lease check: %v", err)
			return "pools not ready"
		}
	}
	held := s.led.size()
	for _, ls := range s.led.all() {
		s.release(ctx, ls)
	}
	after, err := s.api.pools(ctx)
	if err != nil {
		s.fail("lease check: %v", err)
		return "no answer"
	}
	for _, p := range after {
		if p.ActiveLeases != 0 {
			s.fail("pool %s: %d active leases after the soak released all its leases", p.PoolID, p.ActiveLeases)
		}
		if exp := s.led.expected(p.PoolID); exp != 0 {
			s.fail("pool %s: the soak's own ledger says %d leases after releasing every lease (negative: a release was booked twice)", p.PoolID, exp)
		}
	}
	return fmt.Sprintf("daemon == soak on %d pools with %d held; 0 after releasing all", len(after), held)
}

// compareLeases decides each held lease from the pool's ready_since_ms (see
// leases.go), releases the uncertain ones, and compares the counts. It
// returns false when a pool left ready meanwhile.
func (s *soak) compareLeases(ctx context.Context, before []poolStatus) bool {
	since := map[string]int64{}
	for _, p := range before {
		if p.State != "ready" || p.ReadySinceMS == nil {
			return false
		}
		since[p.PoolID] = *p.ReadySinceMS
	}
	gen := int(s.gen.Load())
	var dropped, uncertain []*lease
	for _, ls := range s.led.all() {
		r, known := since[ls.pool]
		switch {
		case !known:
			s.fail("lease %s names pool %q, which the daemon does not list", ls.id, ls.pool)
			dropped = append(dropped, ls)
		case ls.gen < gen || ls.respMS < r:
			dropped = append(dropped, ls)
		case ls.genAtRequest != ls.gen || ls.reqMS <= r:
			uncertain = append(uncertain, ls)
		}
	}
	s.led.drop(dropped)
	for _, ls := range uncertain {
		s.release(ctx, ls)
	}
	after, err := s.api.pools(ctx)
	if err != nil {
		return false
	}
	for _, p := range after {
		if p.State != "ready" || p.ReadySinceMS == nil || *p.ReadySinceMS != since[p.PoolID] {
			return false
		}
	}
	for _, p := range after {
		exp := s.led.expected(p.PoolID)
		switch {
		case exp < 0:
			s.fail("pool %s: the soak's own ledger holds %d leases (negative: a release was booked twice)", p.PoolID, exp)
		case p.ActiveLeases != exp:
			s.fail("pool %s: the daemon reports %d active leases, the soak holds %d", p.PoolID, p.ActiveLeases, exp)
		}
	}
	return true
}

// sample reads the daemon's go_goroutines and open fds at a quiet point:
// the least of a few readings, after closing our idle connections, whose
// server goroutines would otherwise count.
func (s *soak) sample(ctx context.Context, label string) sample {
	out := sample{label: label, gen: int(s.gen.Load()), goroutines: -1, fds: -1}
	for i := range sampleRounds {
		if i > 0 {
			time.Sleep(sampleGap)
		}
		s.api.hc.CloseIdleConnections()
		if g, err := s.api.metric(ctx, "go_goroutines"); err == nil && (out.goroutines < 0 || int(g) < out.goroutines) {
			out.goroutines = int(g)
		}
		if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.d.pid)); err == nil && (out.fds < 0 || len(fds) < out.fds) {
			out.fds = len(fds)
		}
	}
	s.mu.Lock()
	s.samples = append(s.samples, out)
	s.mu.Unlock()
	s.logf("sample %s: %d goroutines, %d fds", label, out.goroutines, out.fds)
	return out
}

// compare fails the run when the daemon grew between two samples of the
// same daemon process.
func (s *soak) compare(a, b sample) {
	switch {
	case a.goroutines < 0 || b.goroutines < 0 || a.fds < 0 || b.fds < 0:
		s.fail("could not sample the daemon (%s: %d goroutines %d fds; %s: %d, %d)", a.label, a.goroutines, a.fds, b.label, b.goroutines, b.fds)
	case b.goroutines > a.goroutines+s.o.goroutineSlack:
		s.fail("daemon gen %d goroutines grew from %d (%s) to %d (%s), slack %d", a.gen, a.goroutines, a.label, b.goroutines, b.label, s.o.goroutineSlack)
	case b.fds > a.fds+s.o.fdSlack:
		s.fail("daemon gen %d fds grew from %d (%s) to %d (%s), slack %d", a.gen, a.fds, a.label, b.fds, b.label, s.o.fdSlack)
	}
}

// growth describes the samples, gen by gen: "gen 1: 41→43 goroutines, 30→30 fds; …".
func (s *soak) growth() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for i := 0; i+1 < len(s.samples); i += 2 {
		a, b := s.samples[i], s.samples[i+1]
		parts = append(parts, fmt.Sprintf("gen %d: %d→%d goroutines, %d→%d fds", a.gen, a.goroutines, b.goroutines, a.fds, b.fds))
	}
	return strings.Join(parts, "; ") + fmt.Sprintf(" (slack +%d, +%d)", s.o.goroutineSlack, s.o.fdSlack)
}

// scanLogs fails the run on a data race, panic or fatal error in any
// daemon log (engine output is forwarded there too).
func (s *soak) scanLogs() string {
	logs, _ := filepath.Glob(filepath.Join(s.dir, "daemon-*.log"))
	lines := 0
	for _, path := range logs {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			lines++
			t := sc.Text()
			for _, bad := range []string{"DATA RACE", "panic:", "fatal error:", `"msg":"api.panic"`, `"msg":"api.internal_error"`} {
				if strings.Contains(t, bad) {
					s.fail("%s: %s", filepath.Base(path), truncate(t, 300))
				}
			}
		}
		f.Close()
	}
	return strconv.Itoa(len(logs)) + " logs, " + strconv.Itoa(lines) + " lines, no race/panic"
}

// faultFlags are the fault and mode flags of the run, for the rerun line.
func (s *soak) faultFlags() string {
	var out string
	for _, f := range []struct {
		on   bool
		name string
	}{
		{s.o.plantEscapes, "-plant-escapes"}, {s.o.hostileAPI, "-hostile-api"}, {s.o.crashCleanup, "-crash-cleanup"},
		{s.o.plantLeftover, "-plant-leftover"}, {s.o.plantNegative, "-plant-negative-lease"},
	} {
		if f.on {
			out += " " + f.name
		}
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// report prints the accounting and says whether the run passed.
func (s *soak) report() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.out
	fmt.Fprintf(w, "\n== poolsoak accounting (run %s, seed %d, %d pools, chaos %v, %v in all) ==\n",
		s.runID, s.o.seed, s.o.pools, s.o.duration, time.Since(s.start).Round(time.Second))
	var acts []string
	for _, k := range sortedKeys(s.actions) {
		acts = append(acts, fmt.Sprintf("%d %s", s.actions[k], k))
	}
	fmt.Fprintf(w, "chaos:       %s\n", strings.Join(acts, ", "))
	if len(s.survivors) > 0 || s.actions["daemon SIGKILL + restart"] > 0 {
		what := "left for the new daemon's start-up sweep: leaders by their pid records, workers by their engine's marker"
		if s.o.crashCleanup {
			what = "engine workers killed by the soak, as systemd's KillMode=mixed would; engine leaders left for the sweep"
		}
		fmt.Fprintf(w, "daemon kill: %d processes outlived the SIGKILLed daemon (%s)\n", len(s.survivors), what)
		for _, p := range s.survivors {
			fmt.Fprintf(w, "               %s\n", p)
		}
	}
	if s.o.plantEscapes {
		alive, aliveByKind := countEscapees(s.escaped)
		fmt.Fprintf(w, "escapes:     %d planted (%s), %d alive after the daemon stopped (%s)\n",
			s.escPlanted, describeKinds(s.escPlantedBy), alive, describeKinds(aliveByKind))
	}
	fmt.Fprintf(w, "reaped:      %d orphaned processes re-parented to the soak (engines' children, engines of the killed daemon)\n",
		theReaper().orphans.Load()-s.orphans0)
	acq, placed, rel, gone := s.led.stats()
	fmt.Fprintf(w, "leases:      %d granted (%d by placement), %d released by the soak, %d dropped by the daemon\n", acq, placed, rel, gone)
	restarts := []string{}
	for _, p := range s.snapshot {
		restarts = append(restarts, fmt.Sprintf("%s %d", p.PoolID, p.RestartCount))
	}
	fmt.Fprintf(w, "restarts:    %s (daemon gen %d)\n", strings.Join(restarts, ", "), s.gen.Load())
	for i, line := range s.api.summary() {
		if i == 0 {
			fmt.Fprintf(w, "api:         %s\n", line)
		} else {
			fmt.Fprintf(w, "               %s\n", line)
		}
	}
	for _, n := range sortedKeys(s.notes) {
		fmt.Fprintf(w, "note:        %s (×%d)\n", n, s.notes[n])
	}
	fmt.Fprintln(w, "checks:")
	for _, c := range s.checks {
		status := "ok"
		if !c.ok {
			status = "FAIL"
		}
		fmt.Fprintf(w, "  %-4s %-24s %s\n", status, c.name, c.detail)
	}
	if len(s.failures) == 0 && len(s.checks) > 0 {
		fmt.Fprintf(w, "PASS\n")
		return true
	}
	fmt.Fprintf(w, "FAIL: %d problem(s); run dir kept: %s\n", len(s.failures), s.dir)
	for _, f := range s.failures {
		fmt.Fprintf(w, "  - %s\n", f)
	}
	fmt.Fprintf(w, "rerun: go run ./harness/poolsoak -duration %v -pools %d -seed %d%s\n", s.o.duration, s.o.pools, s.o.seed, s.faultFlags())
	return false
}
