package actors

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/gpu"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// startPreload begins a new engine attempt: guardrail, model check, spawn and
// readiness polling run in a goroutine that reports back with messages.
func (a *pool) startPreload(reason string) {
	a.abandonRun()
	// The previous engine is gone (every caller starts a preload with no
	// engine held): the probe client may connect again, to the new one.
	if c := a.d.probeConns; c != nil {
		c.Reopen()
	}
	a.cancelTimer(tRestart)
	a.restartDue = false
	a.restarting = reason == reasonRestart
	a.liveFails = 0
	a.preloadStart = a.now()
	a.activity.Store(a.preloadStart.UnixNano())
	a.transition(StatePreload, reason)
	a.armTimer(tStartup, a.cfg.StartupTimeout)
	if a.cfg.StallTimeout > 0 {
		a.armTimer(tStall, a.cfg.StallTimeout)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	done := make(chan struct{})
	a.preloadDone = done
	gen, cfg := a.gen, a.cfg // read here: the goroutine may not touch actor fields
	a.startDigest(cfg.ModelRef)
	go func() {
		defer close(done)
		a.preload(ctx, gen, cfg)
	}()
	// Let the preload run on this thread now (it is next in line here)
	// rather than after the rest of this message (a crash's log records,
	// the status publish) or on another thread woken for it: its checks and
	// the engine's exec are what a restart waits for.
	runtime.Gosched()
}

// abandonRun makes every goroutine result of the current generation stale and
// cancels its probes and preload timers.
func (a *pool) abandonRun() {
	a.gen = generations.Add(1)
	if a.cancel != nil {
		a.cancel()
		a.cancel = nil
	}
	a.cancelTimer(tStartup)
	a.cancelTimer(tStall)
}

// preload runs outside the actor: it may read only its arguments, a.d, a.sink
// and atomics.
func (a *pool) preload(ctx context.Context, gen uint64, cfg config.Pool) {
	send := func(m PoolMessage) { SendPool(a.root, a.self, m) }
	if filepath.IsAbs(cfg.ModelRef) {
		if _, err := os.Stat(cfg.ModelRef); err != nil {
			send(&spawnFailed{gen: gen, reason: ReasonModelMissing, err: fmt.Errorf("model_ref: %w", err)})
			return
		}
	}
	if err := engine.CheckHostRAM(cfg.MinFreeRAMMiB); err != nil {
		send(&spawnFailed{gen: gen, reason: ReasonInsufficientRAM, err: err})
		return
	}
	devs, err := a.d.Guard.Check(ctx, gpu.Requirements{PoolID: cfg.ID, Devices: cfg.Devices, MinFreeVRAMMiB: cfg.MinFreeVRAMMiB})
	if err != nil {
		send(&spawnFailed{gen: gen, reason: ReasonGuardrail, err: err})
		return
	}
	// The engine's start and end reach the actor straight from the engine's
	// supervising goroutine (Launch's OnStart and OnDone), not relayed
	// through this one.
	adopted := new(atomic.Bool)
	proc, url, err := a.spawn(cfg, devs,
		func(p *engine.Process, url string) {
			send(&spawned{gen: gen, adopted: adopted, proc: p, url: url, devices: devs})
		},
		func(p *engine.Process) { send(&exited{proc: p}) })
	if err != nil {
		send(&spawnFailed{gen: gen, reason: ReasonSpawnError, err: err})
		return
	}
	// Abandoned while spawning: the actor will not adopt it (a stale
	// spawn, which it stops too), and an actor that is gone never will.
	if ctx.Err() != nil && !adopted.Load() {
		a.killAbandoned(proc)
		return
	}
	a.pollReadiness(ctx, gen, proc, url+cfg.Readiness.Path, cfg.Readiness.Timeout)
	// The actor cancels ctx only after changing generation, so an engine it
	// had not adopted by then never will be (even if the actor is gone).
	if ctx.Err() != nil && !adopted.Load() {
		a.killAbandoned(proc)
	}
}

// killAbandoned kills an engine whose preload was abandoned before the actor
// took it over (drain, reload or actor stop during the spawn). Stop(0) is
// the engine's whole cleanup: group, cgroup or marked processes, pid record.
func (a *pool) killAbandoned(p *engine.Process) {
	p.Stop(0)
}

// spawn launches one engine: engine.Launch does the port, placeholders,
// environment, credentials, containment and pid record; the actor only maps
// its config onto the launch. onStart and onDone are LaunchSpec's.
func (a *pool) spawn(cfg config.Pool, devs []gpu.Device, onStart func(*engine.Process, string), onDone func(*engine.Process)) (*engine.Process, string, error) {
	return engine.Launch(engine.LaunchSpec{OnStart: onStart, OnDone: onDone,
		PoolID: cfg.ID, Command: cfg.Command, Env: cfg.Env, ExtraEnv: gpu.CUDAEnv(devs),
		Host: cfg.Host, Port: cfg.Port, ModelRef: cfg.ModelRef, SelfExe: a.d.SelfExe, User: cfg.User,
		StateDir: a.d.StateDir, Cgroups: a.d.Cgroups, Sink: a.sink, Logger: a.log, Clock: a.d.Clock,
	})
}

// pollReadiness probes until the engine answers 2xx, the engine exits or the
// attempt is abandoned. Each change of answer counts as activity for the
// stall timeout.
//
// Besides the poll (readinessPoll), a line the engine prints triggers a
// probe at once (engines print "model loaded", "listening", "Application
// startup complete" as they become ready), so the poll period is not the
// detection lag. Output probes are bounded: at most one per wait between
// two probes, none sooner than outputProbeGap after the last probe began,
// and a token bucket (outputProbeBurst, outputProbeRate) caps them for an
// engine that prints all the time. Many engines log every request, so
// output during a probe or within probeEchoWindow of its end is taken for
// that probe's access-log line: it earns one follow-up probe
// probeEchoFollow after the probe (a ready line that happened to come then
// is not missed), and a follow-up's own echo earns nothing, so an engine's
// logging of our probes cannot keep probes going by itself. While the
// engine answers 404 or 405 output triggers nothing.
func (a *pool) pollReadiness(ctx context.Context, gen uint64, proc *engine.Process, url string, timeout time.Duration) {
	poll := a.d.readinessPoll
	if poll == nil {
		poll = readinessPoll
	}
	a.pollReadinessWith(ctx, gen, proc, url, timeout, poll)
}

// Output-triggered readiness probes (see pollReadiness).
const (
	outputProbeGap   = 2 * time.Millisecond // no output probe sooner than this after the last probe began
	probeEchoWindow  = time.Millisecond     // output this soon after a probe ends is its access-log line
	probeEchoFollow  = 3 * time.Millisecond // the follow-up after an echo, from the probe's end
	outputProbeBurst = 20                   // output probes allowed at once...
	outputProbeRate  = 10                   // ...and per second, sustained
)

// pollReadinessWith is pollReadiness with the poll schedule as a parameter.
func (a *pool) pollReadinessWith(ctx context.Context, gen uint64, proc *engine.Process, url string, timeout time.Duration, poll func(sinceSpawn time.Duration) time.Duration) {
	client, clk := a.d.ReadinessClient, a.d.Clock
	timer, fired := clk.NewTimer(0)
	defer timer.Stop()
	<-fired
	last := -1
	notFoundLogged := false
	tokens, refilled := float64(outputProbeBurst), clk.Now()
	followUp := false // the probe about to run is an echo's follow-up
	for {
		began := clk.Now()
		r := engine.Probe(ctx, client, url, timeout)
		ended := clk.Now()
		a.d.Observer.Probe(a.id, "readiness", r.Duration)
		if r.Status != last {
			last = r.Status
			a.activity.Store(ended.UnixNano())
		}
		if r.OK() {
			SendPool(a.root, a.self, &probeReady{gen: gen})
			return
		}
		wait := poll(ended.Sub(proc.StartedAt()))
		output := proc.Output()
		if r.Err == nil && (r.Status == http.StatusNotFound || r.Status == http.StatusMethodNotAllowed) {
			// The server is up and says the path does not exist: that rarely
			// changes, so say what to configure (once) and stop hammering it.
			if !notFoundLogged {
				notFoundLogged = true
				a.log.Warn("probe.readiness_path_missing", "url", url, "status", r.Status,
					"detail", "the engine answers but has no such path; set the pool's readiness: {path: ...} (and liveness:) to a path it serves")
			}
			wait = notFoundPoll
			output = nil // it logs our probes: output must not bring them back
		}
		timer.Reset(wait)
		wasFollowUp := followUp
		followUp = false
		armed := false // an output probe is scheduled in this wait
		// schedule arms an output probe at (or after) at; true: probe now.
		schedule := func(at time.Time, echo bool) bool {
			now := clk.Now()
			if armed {
				return false
			}
			tokens = min(outputProbeBurst, tokens+now.Sub(refilled).Seconds()*outputProbeRate)
			refilled = now
			if tokens < 1 {
				return false
			}
			tokens--
			armed, followUp = true, echo
			if g := began.Add(outputProbeGap); at.Before(g) {
				at = g
			}
			d := at.Sub(now)
			if d <= 0 || !timer.Stop() { // !Stop: the poll is due anyway
				return true
			}
			timer.Reset(d)
			return false
		}
		echoed := false
		select { // output printed during the probe: most likely its own access-log line
		case <-output:
			echoed = true
		default:
		}
		if echoed && !wasFollowUp && schedule(ended.Add(probeEchoFollow), true) {
			continue
		}
	waiting:
		for {
			select {
			case <-ctx.Done():
				return
			case <-proc.Done():
				return
			case <-fired:
				break waiting
			case <-output:
				now := clk.Now()
				if now.Sub(ended) < probeEchoWindow {
					if !wasFollowUp && schedule(ended.Add(probeEchoFollow), true) {
						break waiting
					}
					continue
				}
				if schedule(now, false) {
					break waiting
				}
			}
		}
	}
}

// onSpawned adopts the engine a preload spawned, when it is the current
// attempt's (same generation), the pool is still in preload and holds no
// engine; anything else is stale and its engine is stopped in the
// background, never left running. Adopting records pid, url, containment,
// start time and devices, counts the start, and counts a restart
// (restart_count, restarts_total with the failure's reason) when the attempt
// followed a failure. The pool stays in preload until readiness answers.
// The status is published before engine.spawned is logged.
func (a *pool) onSpawned(m *spawned) {
	if m.gen != a.gen || a.st.State != StatePreload || a.proc != nil {
		a.log.Info("engine.stale_spawn", "pid", m.proc.Pid())
		go a.stopProc(m.proc, a.cfg.StopGrace) // abandoned attempt: its engine must not survive
		return
	}
	m.adopted.Store(true)
	a.proc, a.stopReq = m.proc, false
	a.st.Starts++
	if a.restarting { // restart_count and restarts_total count the same thing
		a.st.RestartCount++
		a.d.Observer.Restart(a.cfg.ID, a.restartReason)
	}
	pid := m.proc.Pid()
	a.st.PID, a.st.URL, a.st.Live = &pid, ptr(m.url), true
	a.st.Containment = m.proc.Containment()
	a.st.StartedAtMS = ptr(m.proc.StartedAt().UnixMilli())
	if m.devices != nil {
		a.st.Devices = m.devices
	}
	a.dirty = true
	a.publish() // the new pid reaches the registry (and the API) before the record is written
	a.log.Info("engine.spawned", "pid", pid, "url", m.url, "engine", a.cfg.Engine,
		"engine_version", a.cfg.EngineVersion, "restart_count", a.st.RestartCount, "starts", a.st.Starts)
}

// stopProc stops an engine; it runs in a goroutine. The engine's Stop also
// kills whatever it left (its cgroup, or every process carrying its marker)
// and removes its pid record once nothing is left.
func (a *pool) stopProc(p *engine.Process, grace time.Duration) engine.Exit {
	return p.Stop(grace)
}

// becomeReady handles the first readiness success of the current attempt
// (preload, with its engine adopted; Receive checks): it cancels the startup
// and stall timers, tells the policy (reset_after counts from now), resets
// consecutive_failures, goes to ready, and starts liveness and, with
// metrics_path, the queue scraper for this engine. A reload in phase new
// ends succeeded; one in phase rollback ends rolled_back.
func (a *pool) becomeReady() {
	a.abandonTimersOnly()
	now := a.now()
	a.policy.Ready(now)
	a.st.ConsecutiveFailures = 0
	a.st.LastHeartbeatMS = ptr(now.UnixMilli())
	a.d.Observer.Preload(a.cfg.ID, "ready", now.Sub(a.preloadStart))
	a.transition(StateReady, "readiness probe succeeded")
	a.log.Info("engine.ready", "pid", a.procPid(), "duration_ms", now.Sub(a.preloadStart).Milliseconds())
	if a.cancel != nil {
		a.cancel() // the preload's context: its goroutine is done
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.readyCtx, a.canaryRunning, a.canaryAt, a.busyAt = ctx, false, now, time.Time{}
	if a.wantsFacts() {
		go a.queryFacts(ctx, a.gen, a.cfg.Engine, *a.st.URL)
	}
	a.queue, a.queueAt, a.scrapeKick, a.scrapeFast = engine.Queue{}, time.Time{}, nil, nil
	var scrapeTick chan struct{} // the liveness probe's wake-up, passed on to the scraper
	if a.cfg.MetricsPath != "" {
		a.scrapeKick, a.scrapeFast, scrapeTick = make(chan struct{}, 1), new(atomic.Bool), make(chan struct{}, 1)
		go a.scrapeMetrics(ctx, a.gen, *a.st.URL+a.cfg.MetricsPath, a.cfg.Liveness, engine.QueueSeriesFor(a.cfg.Engine), scrapeTick, a.scrapeKick, a.scrapeFast)
	}
	go a.liveness(ctx, a.gen, a.proc, *a.st.URL+a.cfg.Liveness.Path, a.cfg.Liveness, scrapeTick)
	if r := a.reload; r != nil {
		if r.phase == "new" {
			a.finishReload("succeeded", false, "")
		} else if r.phase == "rollback" {
			a.finishReload("rolled_back", true, r.err)
		}
	}
}

// abandonTimersOnly cancels the preload's timers (startup, stall) without
// abandoning the preload goroutine: a preload that became ready, or is
// being drained, keeps its engine.
func (a *pool) abandonTimersOnly() {
	a.cancelTimer(tStartup)
	a.cancelTimer(tStall)
}

// procPid is the current engine's pid, 0 without one (for logs).
func (a *pool) procPid() int {
	if a.proc == nil {
		return 0
	}
	return a.proc.Pid()
}

// Liveness of a ready (or draining) engine.
//
// Every liveness.interval the liveness path is probed. A probe that answers
// 2xx is a heartbeat. A probe that answers anything else, or cannot connect,
// is a failure; failure_threshold of them in a row fail the engine. A probe
// that times out is judged by what the engine did while the probe waited:
//
//   - its process is stopped (state T or t in /proc: SIGSTOP, a tracer):
//     frozen, a failure;
//   - it wrote output, or its threads used at least busyCPUShare of a core
//     (and busyCPUMin), or a metrics reading taken since the previous probe
//     showed requests in flight: busy. An engine whose HTTP threads are all
//     taken by long completions (llama-server has max(parallel+2, cores-1)
//     of them unless --threads-http says otherwise) answers nothing, metrics
//     included, until one finishes, yet it is working. A busy timeout
//     neither counts nor breaks the run of failures; it is logged as
//     probe.liveness_busy;
//   - otherwise (no output, no CPU, nothing in flight: a deadlock): a failure.
//
// Busy is believed for at most liveness.busy_grace without any successful
// probe: an engine that spins or logs but never answers is failed then. A
// busy_grace of 0 makes every timeout a failure.
//
// The evidence is taken over the probe's own wait, not since the previous
// probe: llama-server logs every request, so the line for the previous
// (successful) probe would otherwise count as work.
//
// The CPU bar is low on purpose: a deadlocked or idle engine uses next to
// none (0-1 clock ticks in a probe's wait), while a working engine starved
// by a loaded host (many engines on few cores) may get only a few percent
// of a core and must still count as working.
const (
	busyCPUShare = 2                     // percent of one core over the probe's wait
	busyCPUMin   = 20 * time.Millisecond // at least this much CPU (2 clock ticks)
)

// scrapeFastEvery is how often the scraper reads the engine's queue while a
// drain waits for in-flight requests to finish.
const scrapeFastEvery = 200 * time.Millisecond

// liveness probes every interval while the engine is ready or draining; it
// may read only its arguments, a.d and atomics. Each time it wakes to probe
// it first passes the tick on to scrapeTick (without waiting; nil: no
// scraper), so the engine's metrics are read in the same wake-up.
func (a *pool) liveness(ctx context.Context, gen uint64, proc *engine.Process, url string, cfg config.Probe, scrapeTick chan<- struct{}) {
	prevEnd := a.d.Clock.Now()
	stat, _ := engine.OpenProcStat(proc.Pid()) // a failed open fails each Read, as a failed read would
	defer stat.Close()
	for {
		tick := make(chan struct{})
		t := a.d.Clock.AfterFunc(untilTick(a.d.Clock.Now(), cfg.Interval), func() { close(tick) })
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-tick:
		}
		if scrapeTick != nil {
			select {
			case scrapeTick <- struct{}{}:
			default: // the scraper is still at the previous one
			}
		}
		before, statErr := stat.Read()
		start := a.d.Clock.Now()
		r := engine.Probe(ctx, a.d.ProbeClient, url, cfg.Timeout)
		if ctx.Err() != nil {
			return
		}
		a.d.Observer.Probe(a.id, "liveness", r.Duration)
		m := &livenessResult{gen: gen, res: r, since: prevEnd}
		if !r.OK() && isTimeout(r.Err) {
			m.timedOut = true
			after, err := stat.Read()
			if err == nil && statErr == nil {
				m.stopped = after.Stopped() || before.Stopped()
				m.busy = workEvidence(proc, start, a.d.Clock.Since(start), after.CPU-before.CPU)
			} else if proc.LastActivity().After(start) {
				m.busy = "output while the probe waited"
			}
			if m.stopped {
				m.busy = ""
			}
		}
		prevEnd = a.d.Clock.Now()
		SendPool(a.root, a.self, m)
	}
}

// untilTick is the time from now to the next multiple of interval since
// the Unix epoch, in (0, interval]. Liveness probes fall on that grid, so
// every pool with the same interval probes in the same instant: an idle
// daemon wakes once per interval for all its pools instead of once per
// pool, and each pool is still probed every interval (the first probe comes
// at most one interval after the engine became ready).
func untilTick(now time.Time, interval time.Duration) time.Duration {
	if interval <= 0 {
		return interval
	}
	return interval - time.Duration(now.UnixNano()%int64(interval))
}

// workEvidence describes what shows the engine worked in the wall time
// since start ("" if nothing does): output lines, or CPU time used. start
// is on the pool's clock, as the engine's activity stamps are.
func workEvidence(proc *engine.Process, start time.Time, wall, cpu time.Duration) string {
	var ev []string
	if proc.LastActivity().After(start) {
		ev = append(ev, "output while the probe waited")
	}
	if cpu >= busyCPUMin && cpu*100 >= wall*busyCPUShare {
		ev = append(ev, fmt.Sprintf("%s CPU in %s", cpu.Round(10*time.Millisecond), wall.Round(10*time.Millisecond)))
	}
	return strings.Join(ev, ", ")
}

// isTimeout reports a probe or scrape that gave up waiting (as opposed to
// a refused connection or an HTTP error answer).
func isTimeout(err error) bool {
	if err == nil {
		return false
	}
	var te interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &te) && te.Timeout())
}

// scrapeMetrics reads the engine's queue from its metrics_path at once, then
// at every liveness tick (tick: the liveness goroutine passes each of its
// wake-ups on, so scrapes fall on the liveness grid and an idle daemon wakes
// once per interval for both), every scrapeFastEvery while fast is set, and
// when kicked. It runs beside the liveness probe, whatever the probes
// answer, so the pool's engine_metrics show the real queue while probes are
// slow. It may read only its arguments, a.d and atomics.
func (a *pool) scrapeMetrics(ctx context.Context, gen uint64, url string, cfg config.Probe, series engine.QueueSeries, tick, kick <-chan struct{}, fast *atomic.Bool) {
	for {
		at := a.d.Clock.Now()
		q, err := engine.ScrapeQueue(ctx, a.d.ProbeClient, url, cfg.Timeout, series)
		if ctx.Err() != nil {
			return
		}
		SendPool(a.root, a.self, &engineMetrics{gen: gen, q: q, err: err, at: at})
		var soon chan struct{} // fires after scrapeFastEvery while fast; nil otherwise
		var t clock.Timer
		if fast.Load() && cfg.Interval > scrapeFastEvery {
			soon = make(chan struct{})
			t = a.d.Clock.AfterFunc(scrapeFastEvery, func() { close(soon) })
		}
		select {
		case <-ctx.Done():
		case <-kick:
		case <-tick:
		case <-soon:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// onEngineMetrics takes a metrics reading (ready or draining). A failed
// scrape keeps the last reading: the queue is most interesting exactly when
// the engine is too busy to answer. A reading with the same values as the
// status shows changes nothing there (no status publish).
func (a *pool) onEngineMetrics(m *engineMetrics) {
	if m.gen != a.gen || a.proc == nil {
		return
	}
	if m.err == nil {
		var em *EngineMetric
		if m.q.Reported {
			a.queue, a.queueAt = m.q, m.at
			if m.q.InFlight() > 0 {
				a.busyAt = m.at
			}
			em = &EngineMetric{RequestsProcessing: m.q.Processing, RequestsDeferred: m.q.Waiting, Series: m.q.Series}
		} else {
			a.queue, a.queueAt = engine.Queue{}, time.Time{}
		}
		if !sameEngineMetric(a.st.EngineMetrics, em) { // an idle engine's readings repeat: nothing to publish
			a.st.EngineMetrics = em
			a.dirty = true
		}
	} else {
		a.log.Debug("engine.metrics_failed", "pid", a.procPid(), "err", m.err)
	}
	a.drainOnMetrics(m)
}

// sameEngineMetric reports whether two readings show the same values (nil:
// none).
func sameEngineMetric(a, b *EngineMetric) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.RequestsProcessing == b.RequestsProcessing && a.RequestsDeferred == b.RequestsDeferred && slices.Equal(a.Series, b.Series)
}

// onLiveness applies one liveness result (ready or draining; see liveness).
func (a *pool) onLiveness(m *livenessResult) {
	if m.gen != a.gen || a.proc == nil || a.stopReq {
		return
	}
	now := a.now()
	if m.res.OK() {
		a.liveFails = 0
		a.st.LastHeartbeatMS = ptr(now.UnixMilli())
		a.st.Live = true
		a.dirty = true
		a.maybeIdleCanary(now)
		return
	}
	why := probeWhy(m.res)
	busy := m.busy
	if m.timedOut && !m.stopped && !a.queueAt.Before(m.since) && a.queue.InFlight() > 0 {
		ev := fmt.Sprintf("%g requests in flight", a.queue.InFlight())
		if busy != "" {
			busy += ", " + ev
		} else {
			busy = ev
		}
	}
	if grace := a.cfg.Liveness.BusyGrace; busy != "" && grace > 0 {
		var unanswered time.Duration
		if hb := a.st.LastHeartbeatMS; hb != nil {
			unanswered = now.Sub(time.UnixMilli(*hb))
		}
		if unanswered < grace {
			a.log.Warn("probe.liveness_busy", "pid", a.procPid(), "evidence", busy,
				"unanswered_ms", unanswered.Milliseconds(), "busy_grace_ms", grace.Milliseconds(), "last_error", why)
			return
		}
		a.st.Live = false
		a.fail(ReasonLiveness, fmt.Errorf("liveness unanswered for %s although the engine looked busy (%s): past liveness.busy_grace %s: %s",
			unanswered.Round(time.Millisecond), busy, grace, why))
		return
	}
	if m.stopped {
		why += " (the engine process is stopped: SIGSTOP or a tracer)"
	}
	a.liveFails++
	a.log.Warn("probe.liveness_failed", "pid", a.procPid(), "failures", a.liveFails,
		"threshold", a.cfg.Liveness.FailureThreshold, "last_error", why)
	if a.liveFails >= a.cfg.Liveness.FailureThreshold {
		a.st.Live = false
		a.fail(ReasonLiveness, fmt.Errorf("liveness failed %d times in a row: %s", a.liveFails, why))
	}
}

// probeWhy is a failed probe's reason for logs and last_error: its error,
// or the HTTP status it answered with.
func probeWhy(r engine.ProbeResult) string {
	if r.Err != nil {
		return r.Err.Error()
	}
	return "HTTP " + strconv.Itoa(r.Status)
}

// reasonRestart is the preload reason of a restart after a failure: only
// those spawns count in restart_count and restarts_total.
const reasonRestart = "backoff elapsed"

// onExited handles the current engine ending by itself (any state): an exit
// we asked for (stopReq) or of an abandoned engine is onStopped's. It
// classifies the exit from its status and last output lines
// (engine.Classify), logs engine.exited and fails the pool with the class as
// reason and exitMessage as last_error. The records it logs (and those of a
// relaunch it starts: backoff 0) are written once the relaunch has begun.
func (a *pool) onExited(m *exited) {
	if m.proc != a.proc || a.stopReq {
		return // we asked for it (or it is an abandoned engine): onStopped handles it
	}
	// With a backoff of 0 the relaunch starts inside this message: its log
	// records are written after it has begun, not before (same records,
	// same order, same times).
	a.logHold.hold()
	defer a.logHold.release()
	ex := m.proc.Exit()
	a.st.Live = false
	a.dirty = true
	c := engine.Classify(ex, m.proc.RecentLines(engine.CauseWindow))
	attrs := []any{"pid", m.proc.Pid(), "exit_code", ex.Code, "reason", "unexpected", "class", c.Reason}
	if ex.Signal != "" {
		attrs = append(attrs, "signal", ex.Signal)
	}
	a.log.Warn("engine.exited", attrs...)
	a.fail(FailureReason(c.Reason), errors.New(exitMessage(ex, c)))
}

// exitMessage is the last_error of an unexpected exit: its class, how it
// ended, and the engine's line that most likely says why, e.g.
// "model_load_error: engine exited unexpectedly (killed by SIGABRT); cause:
// gguf_init_from_file_impl: invalid magic characters: ...". A line that is
// only the last one, not a recognised cause, reads "last output: ...".
func exitMessage(ex engine.Exit, c engine.Classification) string {
	msg := c.Reason + ": engine exited unexpectedly (" + ex.String() + ")"
	if ex.OOMKilled {
		msg += "; the kernel's OOM killer ended it (host memory)"
	}
	switch {
	case c.Cause == "":
	case c.CauseMatched:
		msg += "; cause: " + truncate(c.Cause, 300)
	default:
		msg += "; last output: " + truncate(c.Cause, 300)
	}
	return msg
}

// truncate cuts s to n bytes, marking the cut with "…".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// fail handles any failure of the current attempt or engine (preload or
// ready, and a draining engine that died): it abandons the attempt, records
// last_error, counts failures_total{reason} and logs pool.failure. In a
// reload, a failing new model is rolled back and a failing rollback ends the
// reload failed. A drain whose engine died is finished. Otherwise the policy
// decides: backoff (next_restart_at; the next preload starts once the delay
// has passed and the engine is gone) or, with the breaker open, failed.
func (a *pool) fail(reason FailureReason, err error) {
	now := a.now()
	if a.st.State == StatePreload {
		a.d.Observer.Preload(a.cfg.ID, "failed", now.Sub(a.preloadStart))
	}
	a.abandonRun()
	a.setError(err.Error())
	a.d.Observer.Failure(a.cfg.ID, string(reason))
	attrs := []any{"reason", reason, "last_error", err.Error()}
	if a.proc != nil {
		attrs = append(attrs, "pid", a.proc.Pid())
	}
	a.log.Warn("pool.failure", attrs...)
	if r := a.reload; r != nil {
		switch r.phase {
		case phaseNew:
			a.rollback(err.Error())
			return
		case phaseRollback:
			a.finishReload(ReloadFailed, false, r.err+"; starting the previous model failed too: "+err.Error())
		}
	}
	if a.drain != nil { // the engine died while draining: the drain is done
		a.stopEngine(func() { a.finishDrain(false) })
		return
	}
	dec := a.policy.Failure(now)
	a.st.ConsecutiveFailures++
	a.restartReason = string(reason) // restarts_total's label once the restart spawns
	if dec.GiveUp {
		a.transition(StateFailed, fmt.Sprintf("breaker open: %d failures within %s (last: %s)", dec.InWindow, a.cfg.Restart.Window, reason))
		a.stopEngine(nil)
		return
	}
	a.st.NextRestartAtMS = ptr(now.Add(dec.Delay).UnixMilli())
	a.transition(StateBackoff, string(reason))
	// A backoff of 0 has passed already: no timer, no message; the preload
	// starts as soon as the engine is gone (at once when it already is).
	a.restartDue = dec.Delay <= 0
	if !a.restartDue {
		a.armTimer(tRestart, dec.Delay)
	}
	a.stopEngine(func() {
		if a.restartDue && a.st.State == StateBackoff {
			a.startPreload(reasonRestart)
		}
	})
}

// stopEngine stops the engine (if any) in a goroutine and runs then once it
// is gone. A later call replaces the continuation of an earlier one. An
// engine that has already ended (Done closed: its group, cgroup and pid
// record are already cleaned up) is taken as stopped at once, in this
// message, so a crash followed by a backoff of 0 respawns without a trip
// through a goroutine and the mailbox. Before it signals a running engine,
// it closes the pool's probe connections and refuses new ones until the
// next startPreload (see the comment below); it is the only place that
// signals an engine the pool has adopted (and so probed) gracefully:
// shutdownNow kills it, and an unadopted engine (killAbandoned, a stale
// spawn) was probed by the readiness client only, which keeps no
// connection.
func (a *pool) stopEngine(then func()) {
	if a.proc == nil {
		a.afterStop = nil
		if then != nil {
			then()
		}
		return
	}
	a.afterStop = then
	if a.stopReq {
		return
	}
	a.stopReq = true
	a.abandonRun()
	p, grace := a.proc, a.cfg.StopGrace
	select {
	case <-p.Done():
		a.onStopped(&engineStopped{proc: p, exit: p.Exit()})
		return
	default:
	}
	// The pool's connections to the engine go before SIGTERM, and so does
	// one whose dial outlives the probe abandonRun just cancelled: net/http
	// keeps such a connection, unused, and an engine shutting down
	// gracefully waits for a connection that never sent a request, as for a
	// busy one (Go's http.Server: up to 5 s). The pool's own probe client
	// closes them all deterministically (ProbeConns.CloseAll: every open
	// connection, and every dial that completes from now until the next
	// engine's startPreload reopens it). CloseIdleConnections alone, all an
	// injected client gets, closes a late connection only until the next
	// request on the transport, and the liveness probe and the metrics
	// scrape run concurrently: one that passed its context check before
	// abandonRun reaches the idle pool after this call and undoes it.
	if c := a.d.probeConns; c != nil {
		c.CloseAll()
	}
	// Also for the pool's own client: the transport forgets the idle
	// connections CloseAll closed, so the next engine's first probe does
	// not pick a dead one.
	a.d.ProbeClient.CloseIdleConnections()
	go func() {
		ex := a.stopProc(p, grace)
		SendPool(a.root, a.self, &engineStopped{proc: p, exit: ex})
	}()
}

// onStopped handles the end of an engine stop we asked for (stopEngine; any
// state): it clears the engine from the status (pid, url, live, started_at,
// engine metrics) and runs the continuation the stop was asked with. A stop
// report for an engine that is no longer current is ignored.
func (a *pool) onStopped(m *engineStopped) {
	if m.proc != a.proc {
		return
	}
	attrs := []any{"pid", m.proc.Pid(), "exit_code", m.exit.Code}
	if m.exit.Signal != "" {
		attrs = append(attrs, "signal", m.exit.Signal)
	}
	a.log.Info("engine.stopped", attrs...)
	a.proc, a.stopReq = nil, false
	a.st.PID, a.st.URL, a.st.Live, a.st.StartedAtMS, a.st.EngineMetrics = nil, nil, false, nil, nil
	a.dirty = true
	then := a.afterStop
	a.afterStop = nil
	if then != nil {
		then()
	}
}

// shutdownNow runs when the actor stops (daemon exit, or a restart after a
// panic): the engine's whole process group is killed before the actor goes.
func (a *pool) shutdownNow() {
	a.abandonRun()
	if done := a.preloadDone; done != nil {
		select { // an engine spawned but not yet adopted is killed by its goroutine
		case <-done:
		case <-time.After(killWait):
		}
	}
	for k := range a.timers {
		a.cancelTimer(k)
	}
	if a.proc != nil {
		p := a.proc
		p.Kill()
		select {
		case <-p.Done():
		case <-time.After(killWait): // its pid record stays for the next start-up sweep
			a.log.Error("engine.kill_timeout", "pid", p.Pid())
		}
		a.proc = nil
	}
}
