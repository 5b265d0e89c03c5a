package actors

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/engine/cgroup"
	"github.com/pool-managerd/pool-managerd/gpu"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// PoolDeps is what a pool actor needs from the daemon.
type PoolDeps struct {
	Registry *actor.PID
	Guard    gpu.Guard
	Clock    clock.Clock    // every timing decision and stamp of the pool and its engines; nil: clock.Real
	Logger   *slog.Logger   // already carries nothing pool-specific
	SelfExe  string         // ${SELF}: the pool-managerd binary
	StateDir string         // pid records; "" = none
	Cgroups  *cgroup.Parent // engines' cgroup parent; nil = marker containment
	// ProbeClient serves liveness probes, metrics scrapes, the facts query
	// and the canary; nil (what the daemon passes): a client of the pool's
	// own, engine.NewPoolProbeClient(ProbeDial), whose every connection the
	// pool closes before it signals its engine to stop, and whose dials it
	// refuses from then until it starts the next engine (see stopEngine). A
	// client given here only has its idle connections closed at each stop
	// (CloseIdleConnections, which a concurrent request can undo for a dial
	// still in progress), and a client shared by pools costs them their
	// kept-alive connections at every stop.
	ProbeClient *http.Client
	// ProbeDial makes the connections of the pool's own probe client (used
	// only when ProbeClient is nil); nil: a net.Dialer. Tests use it to
	// hold a connection back.
	ProbeDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ReadinessClient serves readiness probes; nil: engine.NewReadinessClient()
	// (a fresh connection per probe).
	ReadinessClient *http.Client
	Observer        Observer
	OnLogDrop       func(poolID string, lines, bytes int) // engine output was rate-limited away or cut (see engine.Sink.SetOnDrop)

	// probeConns is the set of connections of the pool's own probe client
	// (nil when ProbeClient was given).
	probeConns *engine.ProbeConns

	// readinessPoll replaces the readiness poll schedule (tests only: a huge
	// one leaves output-triggered probes alone); nil: readinessPoll.
	readinessPoll func(sinceSpawn time.Duration) time.Duration
}

// Engine output handling: how many lines each pool keeps in memory for
// GET /logs and crash forensics, and how many per second reach the journal.
const (
	logRingLines = 1000
	logRatePerS  = 200
	logBurst     = 400
)

// readinessPoll is how often a preloading engine's readiness endpoint is
// polled, by time since spawn: fast at first (small models load in
// seconds), then slower so a 10-minute vLLM load or 256 pools preloading at
// once do not cost a core in probes. Every line the engine prints also
// triggers a probe (see pollReadiness), and engines print as they become
// ready, so the poll is the fallback for a silent engine and backs off
// early; every step stays within "a ready engine is seen as ready within
// tens of milliseconds".
func readinessPoll(sinceSpawn time.Duration) time.Duration {
	switch {
	case sinceSpawn < time.Second:
		return 10 * time.Millisecond
	case sinceSpawn < 10*time.Second:
		return 25 * time.Millisecond
	default:
		return 50 * time.Millisecond
	}
}

// notFoundPoll is the readiness poll while the engine answers 404 or 405:
// it is up and lacks the path, so polling every 10 ms would only fill its
// access log (and ours) until someone fixes the config.
const notFoundPoll = time.Second

// leaseCountGrace is how long a drain past its deadline waits for the
// registry's lease count before stopping the engine regardless.
const leaseCountGrace = time.Second

// killWait bounds how long an actor that is being stopped waits for its
// engine's process group to die after SIGKILL.
const killWait = 5 * time.Second

// generations numbers every abandoned unit of work across all pool actors,
// so a restarted actor (a fresh struct) never mistakes a result of its
// predecessor's goroutines for its own.
var generations atomic.Uint64

// Timer kinds.
const (
	tStartup = "startup_timeout"
	tStall   = "stall_timeout"
	tRestart = "restart"
	tDrain   = "drain_deadline"
)

type pool struct {
	id  string // never changes; goroutines may read it
	d   PoolDeps
	cfg config.Pool
	log *slog.Logger
	// logHold puts log (and sink) records aside while an exit is handled,
	// so a relaunch begins before they are written (see onExited).
	logHold *logHold
	sink    *engine.Sink
	policy  *Policy
	self    *actor.PID
	root    *actor.RootContext

	st      PoolStatus
	pending []Transition
	dirty   bool

	gen          uint64             // bumped whenever running work (spawn, probes) is abandoned
	cancel       context.CancelFunc // cancels the goroutines of gen
	preloadDone  chan struct{}      // closed when the latest preload goroutine has returned
	proc         *engine.Process    // the engine, until its stop completes
	stopReq      bool               // we asked proc to stop
	afterStop    func()             // continuation once proc is gone
	preloadStart time.Time
	activity     atomic.Int64 // unix nanos (on d.Clock) of the last readiness-probe change (stall detection)
	liveFails    int
	restartDue   bool

	restarting    bool   // the current preload is a restart after a failure
	restartReason string // the failure it restarts from (restarts_total's reason)

	// The engine's own metrics (metrics_path), scraped on their own schedule.
	scrapeKick chan struct{} // asks the scraper of the current engine for a reading now
	scrapeFast *atomic.Bool  // the scraper polls quickly (a drain waits on in-flight requests)
	queue      engine.Queue  // the last successful reading that reported a queue
	queueAt    time.Time     // when its scrape began; zero: none for this engine

	timers map[string]timerRef
	token  uint64

	digestOf string // the model_ref the status's model_digest belongs to

	// The canary of a ready engine (canary.idle_after; see canary.go).
	readyCtx      context.Context // cancelled when the ready engine's goroutines are abandoned
	canaryRunning bool            // an idle canary is in flight
	canaryAt      time.Time       // when the last canary finished
	busyAt        time.Time       // the last metrics reading with requests in flight

	cid             string // correlation id of the command being handled; "" otherwise
	drain           *drainOp
	drainDeadlineAt time.Time
	reload          *reloadOp
}

type timerRef struct {
	token uint64
	t     clock.Timer
}

type drainOp struct {
	start          time.Time
	reason         string
	leases         int // -1: not yet told by the registry
	queue          drainQueue
	inFlight       float64 // the engine's in-flight requests, when queue is queueKnown
	zeros          int     // readings in a row, since the drain began, with nothing in flight
	deadlinePassed bool
	stopping       bool
	then           func() // reload continues here instead of going to stopped
}

type reloadOp struct {
	old, new config.Pool
	start    time.Time
	phase    reloadPhase
	err      string
	result   chan ReloadResult
}

// ---- internal messages (results of goroutines, timers) ----

type spawned struct {
	gen     uint64
	adopted *atomic.Bool // set by the actor when it takes the engine over
	proc    *engine.Process
	url     string
	devices []gpu.Device
}
type spawnFailed struct {
	gen    uint64
	reason FailureReason
	err    error
}
type exited struct{ proc *engine.Process }
type probeReady struct{ gen uint64 }
type livenessResult struct {
	gen uint64
	res engine.ProbeResult
	// Set for a probe that timed out (see liveness): what the engine did
	// while the probe waited.
	timedOut bool
	since    time.Time // the end of the previous probe
	busy     string    // evidence of work ("" none): output, CPU time
	stopped  bool      // the engine process is stopped (SIGSTOP or a tracer)
}
type engineStopped struct {
	proc *engine.Process
	exit engine.Exit
}
type engineMetrics struct {
	gen uint64
	q   engine.Queue
	err error
	at  time.Time // when the scrape began (the pool's clock)
}
type engineFactsMsg struct {
	gen   uint64
	facts engine.Facts
	err   error
}
type modelDigestMsg struct {
	path   string
	digest string
	err    error
}
type timerFired struct {
	kind  string
	token uint64
}

// The internal messages are pool messages too (PoolMessage): the actor
// sends them to itself with SendPool.
func (*spawned) poolMessage()        {}
func (*spawnFailed) poolMessage()    {}
func (*exited) poolMessage()         {}
func (*probeReady) poolMessage()     {}
func (*livenessResult) poolMessage() {}
func (*engineStopped) poolMessage()  {}
func (*timerFired) poolMessage()     {}
func (*engineMetrics) poolMessage()  {}
func (*engineFactsMsg) poolMessage() {}
func (*modelDigestMsg) poolMessage() {}

// NewPoolProps builds the props of one pool's actor.
func NewPoolProps(cfg config.Pool, d PoolDeps) *actor.Props {
	d.Clock = clock.OrReal(d.Clock)
	if d.Observer == nil {
		d.Observer = NopObserver{}
	}
	if d.Guard == nil {
		d.Guard = gpu.NoGuard{}
	}
	if d.ProbeClient == nil {
		d.ProbeClient, d.probeConns = engine.NewPoolProbeClient(d.ProbeDial)
	}
	if d.ReadinessClient == nil {
		d.ReadinessClient = engine.NewReadinessClient()
	}
	held := &logHold{}
	log := slog.New(holdHandler{d.Logger.Handler(), held}).With("pool_id", cfg.ID)
	sink := engine.NewSink(log, logRingLines, logRatePerS, logBurst)
	sink.SetClock(d.Clock)
	if d.OnLogDrop != nil {
		sink.SetOnDrop(func(lines, bytes int) { d.OnLogDrop(cfg.ID, lines, bytes) })
	}
	return actor.PropsFromProducer(func() actor.Actor {
		p := &pool{id: cfg.ID, d: d, cfg: cfg, log: log, logHold: held, sink: sink, timers: map[string]timerRef{}}
		p.policy = NewPolicy(cfg.Restart, d.Clock)
		p.st = PoolStatus{PoolID: cfg.ID, State: StateStopped, Devices: []gpu.Device{}, Containment: engine.ContainMarker}
		if d.Cgroups != nil {
			p.st.Containment = engine.ContainCgroup
		}
		p.applyCfgToStatus()
		return p
	})
}

// applyCfgToStatus copies the configured engine, engine version, model and
// slots into the status (any state: at creation and whenever the config
// changes) and marks the status for publishing.
func (a *pool) applyCfgToStatus() {
	a.st.Engine = a.cfg.Engine
	a.st.EngineVersion = a.cfg.EngineVersion
	a.st.ModelRef = a.cfg.ModelRef
	a.st.Slots = a.cfg.Slots
	a.st.EngineVersionSource, a.st.SlotsSource = nil, nil
	if a.cfg.EngineVersion != "" {
		a.st.EngineVersionSource = ptr(SourceConfig)
	}
	if a.cfg.Slots > 0 {
		a.st.SlotsSource = ptr(SourceConfig)
	}
	if a.st.ModelDigest != nil && a.digestOf != a.cfg.ModelRef {
		a.st.ModelDigest = nil
	}
	a.dirty = true
}

// now is the pool's clock (PoolDeps.Clock): every timing decision reads it.
func (a *pool) now() time.Time { return a.d.Clock.Now() }

// Receive handles one message; it never blocks.
func (a *pool) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.self, a.root = ctx.Self(), ctx.ActorSystem().Root
		a.st.StateSinceMS = a.now().UnixMilli()
		SendRegistry(ctx, a.d.Registry, &RegisterPool{Status: a.st, PID: a.self})
		a.startPreload("start")
	case *actor.Stopping, *actor.Restarting:
		a.shutdownNow()
	case *actor.Stopped:
	case *spawned:
		a.onSpawned(m)
	case *spawnFailed:
		if m.gen == a.gen && a.st.State == StatePreload {
			a.fail(m.reason, m.err)
		}
	case *exited:
		a.onExited(m)
	case *probeReady:
		if m.gen == a.gen && a.st.State == StatePreload && a.proc != nil {
			if a.cfg.Canary.Enabled {
				a.startCanary()
			} else {
				a.becomeReady()
			}
		}
	case *canaryResult:
		a.onCanary(m)
	case *livenessResult:
		a.onLiveness(m)
	case *engineStopped:
		a.onStopped(m)
	case *timerFired:
		a.onTimer(m)
	case *engineMetrics:
		a.onEngineMetrics(m)
	case *engineFactsMsg:
		a.onEngineFacts(m)
	case *modelDigestMsg:
		a.onModelDigest(m)
	case *Drain:
		a.cid = m.CorrelationID
		a.respond(ctx, a.handleDrain(m))
	case *LeasesChanged:
		a.onLeases(m.Active)
	case *Reload:
		a.cid = m.CorrelationID
		a.respond(ctx, a.handleReload(m))
	case *Start:
		a.cid = m.CorrelationID
		a.respond(ctx, a.handleStart())
	case *GPUEvent:
		a.onGPUEvent(m.Event)
	case *DevicesUpdate:
		a.onDevices(m.Devices)
	case *GetStatus:
		ctx.Respond(&PoolReply{Status: a.st, PID: a.self, Found: true})
	case *GetLogs:
		ctx.Respond(&LogsReply{Lines: a.sink.Tail(m.Tail)})
	default:
		a.log.Warn("pool: unknown message", "type", fmt.Sprintf("%T", m))
	}
	a.publish()
	a.cid = ""
}

// withCID adds the correlation id of the command being handled, if any.
func (a *pool) withCID(attrs []any) []any {
	if a.cid != "" {
		attrs = append(attrs, "correlation_id", a.cid)
	}
	return attrs
}

// respond answers a command after publishing its effect, so a caller that
// queries the registry right after the answer sees the new state (a drained
// pool is "draining" the moment the API says 202).
func (a *pool) respond(ctx actor.Context, r *CommandReply) {
	a.publish()
	ctx.Respond(r)
}

// publish sends the status to the registry when it changed.
func (a *pool) publish() {
	if !a.dirty || a.root == nil {
		return
	}
	st := a.st
	SendRegistry(a.root, a.d.Registry, &StatusUpdate{Status: st, Transitions: a.pending, PID: a.self})
	a.pending, a.dirty = nil, false
}

// transition moves the pool to state to, from whatever state it is in: it
// keeps the status flags that follow from the state (ready, draining,
// ready_since, next_restart_at only in backoff) consistent, queues the
// Transition event for the next publish, and logs pool.state (at warn when
// to is backoff or failed, with last_error). It changes nothing else:
// callers stop engines, arm timers and tell the policy themselves.
func (a *pool) transition(to State, reason string) {
	from := a.st.State
	now := a.now()
	a.st.State = to
	a.st.Ready = to == StateReady
	a.st.Draining = to == StateDraining
	a.st.StateSinceMS = now.UnixMilli()
	if to == StateReady {
		a.st.ReadySinceMS = ptr(now.UnixMilli())
	} else {
		a.st.ReadySinceMS = nil
	}
	if to != StateBackoff {
		a.st.NextRestartAtMS = nil
	}
	a.pending = append(a.pending, Transition{PoolID: a.cfg.ID, From: from, To: to, Reason: reason, AtMS: now.UnixMilli()})
	a.dirty = true
	attrs := []any{"from", from, "to", to, "reason", reason, "engine", a.cfg.Engine,
		"engine_version", a.cfg.EngineVersion, "restart_count", a.st.RestartCount}
	if a.st.PID != nil {
		attrs = append(attrs, "pid", *a.st.PID)
	}
	if a.st.NextRestartAtMS != nil {
		attrs = append(attrs, "next_restart_at", time.UnixMilli(*a.st.NextRestartAtMS).UTC().Format(time.RFC3339Nano),
			"backoff_ms", *a.st.NextRestartAtMS-now.UnixMilli())
	}
	attrs = a.withCID(attrs)
	if to == StateBackoff || to == StateFailed {
		if a.st.LastError != nil {
			attrs = append(attrs, "last_error", *a.st.LastError)
		}
		a.log.Warn("pool.state", attrs...)
		return
	}
	a.log.Info("pool.state", attrs...)
}

// setError records msg as last_error, stamped with the pool's clock (any
// state); last_error stays until the next error.
func (a *pool) setError(msg string) {
	a.st.LastError = ptr(msg)
	a.st.LastErrorAtMS = ptr(a.now().UnixMilli())
	a.dirty = true
}

// ---- timers ----

// armTimer (re)arms the timer of kind (tStartup, tStall, tRestart, tDrain) to
// fire d from now on the pool's clock, replacing any pending one of that
// kind. The firing arrives as a timerFired carrying a fresh token, so a
// timer cancelled or re-armed after it fired is recognised as stale.
func (a *pool) armTimer(kind string, d time.Duration) {
	a.cancelTimer(kind)
	a.token++
	tok, self, root := a.token, a.self, a.root
	t := a.d.Clock.AfterFunc(d, func() { SendPool(root, self, &timerFired{kind: kind, token: tok}) })
	a.timers[kind] = timerRef{token: tok, t: t}
}

// cancelTimer stops the pending timer of kind, if any; a firing already in
// the mailbox is then ignored by onTimer (its token is no longer known).
func (a *pool) cancelTimer(kind string) {
	if r, ok := a.timers[kind]; ok {
		r.t.Stop()
		delete(a.timers, kind)
	}
}

// onTimer handles a timer firing, ignoring stale ones (cancelled or re-armed
// since). tStartup fails a pool still in preload (startup_timeout);
// tStall checks a preload for stall_timeout; tRestart ends a backoff: it
// starts the next preload at once when the pool is in backoff with its old
// engine gone, else the pending stop starts it (restartDue); tDrain ends a
// drain's wait (onDrainDeadline). In any other state a firing does nothing.
func (a *pool) onTimer(m *timerFired) {
	r, ok := a.timers[m.kind]
	if !ok || r.token != m.token {
		return // cancelled or re-armed: stale
	}
	delete(a.timers, m.kind)
	switch m.kind {
	case tStartup:
		if a.st.State == StatePreload {
			a.fail(ReasonStartupTimeout, fmt.Errorf("engine not ready within startup_timeout %s", a.cfg.StartupTimeout))
		}
	case tStall:
		a.checkStall()
	case tRestart:
		a.restartDue = true
		if a.st.State == StateBackoff && a.proc == nil {
			a.startPreload(reasonRestart)
		}
	case tDrain:
		a.onDrainDeadline()
	}
}

// checkStall fails a preload that showed no sign of life (no output line, no
// change in its readiness answer) for stall_timeout.
func (a *pool) checkStall() {
	if a.st.State != StatePreload {
		return
	}
	last := a.preloadStart
	if t := time.Unix(0, a.activity.Load()); t.After(last) { // every stamp here is on a.d.Clock
		last = t
	}
	if a.proc != nil {
		if t := a.proc.LastActivity(); t.After(last) {
			last = t
		}
	}
	idle := a.now().Sub(last)
	if idle >= a.cfg.StallTimeout {
		a.fail(ReasonStallTimeout, fmt.Errorf("engine stalled: no output and no readiness change for %s (stall_timeout %s)", idle.Round(time.Millisecond), a.cfg.StallTimeout))
		return
	}
	a.armTimer(tStall, a.cfg.StallTimeout-idle)
}
