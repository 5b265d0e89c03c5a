// Package supervisor is the daemon: it builds the actor system from the
// config, serves the HTTP API, speaks to systemd, and applies SIGHUP config
// changes. Only this package and cmd see every other package.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/engine/cgroup"
	"github.com/pool-managerd/pool-managerd/engine/pidrec"
	"github.com/pool-managerd/pool-managerd/gpu"
	"github.com/pool-managerd/pool-managerd/internal/clock"
	"github.com/pool-managerd/pool-managerd/supervisor/sdnotify"
)

// Version is the daemon's version, set at build time with
// -ldflags "-X github.com/pool-managerd/pool-managerd/supervisor.Version=…".
var Version = "0.1.0-dev"

// askTimeout bounds every request the API makes to an actor. The registry
// answers in microseconds; hitting this means the actor system is wedged.
const askTimeout = 5 * time.Second

// shutdownSlack is added to shutdown_deadline + the longest stop_grace before
// the daemon stops waiting for engines and kills what is left.
const shutdownSlack = 5 * time.Second

// Options configures a Daemon.
type Options struct {
	Config   *config.Config
	Logger   *slog.Logger
	SelfExe  string
	Guard    gpu.Guard // nil: opened from Config.GPU
	Token    string    // API bearer token; "" = none
	Notifier *sdnotify.Notifier
	Clock    clock.Clock // every timing decision of pools, registry and GPU guard; nil: clock.Real

	// WriteToken, used only when Token is "", is the bearer token that
	// requests other than GET and HEAD need (every mutating endpoint),
	// while reads stay open. The daemon generates one when it runs as root
	// on TCP without a token; WriteTokenFile is where it was written, for
	// the 401 message.
	WriteToken, WriteTokenFile string
	// EventWriteTimeout is how long a /v1/events write may wait for a
	// client that does not read before the client is dropped (0: 10 s).
	EventWriteTimeout time.Duration
}

// Daemon is one running pool-managerd.
type Daemon struct {
	opts         Options
	cfg          *config.Config
	log          *slog.Logger
	sys          *actor.ActorSystem
	reg          *actor.PID
	pools        map[string]*actor.PID // owned by the goroutine that calls Start/Reconfigure/Shutdown
	metrics      *Metrics
	guard        gpu.Guard
	notify       *sdnotify.Notifier
	bootGC       *bootGC // the collector's relaxed target while the pools start; nil: none
	srv          *http.Server
	ln           net.Listener
	ready        atomic.Bool
	stopWD       context.CancelFunc
	wdDone       chan struct{} // closed when the watchdog goroutine has returned
	shutdownOnce sync.Once
	view         actors.RegistryView // the registry's published state: queries read it without a round trip
	readiness    *http.Client        // readiness probes (a fresh connection each)
	// quit is closed when the shutdown begins: event streams end, and
	// requests that would start engines or hand out work are refused.
	quit chan struct{}
	// stopped is closed once the shutdown has stopped every pool, just
	// before the actor system goes: background loops end.
	stopped chan struct{}
	// streams counts the open /v1/events streams (a gauge in /metrics).
	streams atomic.Int64

	// hurryMu guards hurried and stopping. stopping is the pool actors as
	// the shutdown found them, set once by the goroutine that owns pools.
	hurryMu  sync.Mutex
	hurried  bool
	stopping []*actor.PID

	cgroups *cgroup.Parent // engines' cgroup parent; nil = marker containment
	// poolCfgs is each pool's config by id, for API handlers that check a
	// request against it (reload_allowed); replaced whole by Reconfigure.
	poolCfgs atomic.Pointer[map[string]config.Pool]
}

// New builds a daemon; nothing runs until Start.
func New(o Options) (*Daemon, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	o.Clock = clock.OrReal(o.Clock)
	if o.Notifier == nil {
		o.Notifier = sdnotify.New(o.Logger)
	}
	if err := CheckUsers(o.Config.Pools); err != nil {
		return nil, err
	}
	if dir := o.Config.StateDir; dir != "" {
		// Created 0700; refused when others could plant records in it
		// (a planted record would have the daemon SIGKILL what it names).
		if err := pidrec.PrepareDir(dir); err != nil {
			return nil, err
		}
	}
	cgroups, err := cgroup.Setup(o.Config.CgroupParent, o.Logger.With("component", "cgroup"))
	if err != nil {
		return nil, err
	}
	d := &Daemon{opts: o, cfg: o.Config, log: o.Logger, pools: map[string]*actor.PID{}, notify: o.Notifier,
		readiness: engine.NewReadinessClient(), quit: make(chan struct{}), stopped: make(chan struct{}), cgroups: cgroups}
	containment := engine.ContainMarker
	if cgroups != nil {
		containment = engine.ContainCgroup
	}
	d.log.Info("daemon.containment", "kind", containment, "cgroup_parent", cgroupPath(cgroups))
	d.metrics = NewMetrics(d.snapshot)
	d.setPoolConfigs(o.Config.Pools)
	d.metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "event_streams",
		Help: "Open GET /v1/events streams."}, func() float64 { return float64(d.streams.Load()) }))
	d.guard = o.Guard
	if d.guard == nil {
		d.guard = gpu.Open(gpu.Options{RequireNVIDIA: o.Config.GPU.RequireNVIDIA, MinDriverVersion: o.Config.GPU.MinDriverVersion,
			Logger: o.Logger.With("component", "gpu"), OnXID: d.metrics.XID, Clock: o.Clock})
	}
	return d, nil
}

func cgroupPath(p *cgroup.Parent) string {
	if p == nil {
		return ""
	}
	return p.Path
}

// CheckStateDir is the -check-config side of the start's state_dir check:
// a state_dir others could write (or not owned by the daemon's user) is
// refused. A missing one is fine: the start creates it 0700; one that is not
// a directory is left to -check-config's host warnings (and fails the start).
func CheckStateDir(cfg *config.Config) error {
	if cfg.StateDir == "" {
		return nil
	}
	if fi, err := os.Lstat(cfg.StateDir); err != nil || !fi.IsDir() {
		return nil // missing or unusable: the start creates it or fails (and -check-config warns)
	}
	return pidrec.CheckDir(cfg.StateDir)
}

// CheckUsers refuses pools whose `user:` the daemon cannot apply (unknown
// user, or the daemon is not root): better a clear start-up error than an
// engine that silently runs as the wrong user. Each problem is one line,
// `pool ID: user "NAME": why`. New, SIGHUP and -check-config all use it.
func CheckUsers(pools []config.Pool) error {
	var errs []error
	for _, p := range pools {
		if p.User == "" {
			continue
		}
		if _, err := engine.LookupCredential(p.User); err != nil { // its error does not repeat the name
			hint := ""
			if err.Error() == "unknown user" {
				hint = fmt.Sprintf(" (create it: useradd --system --no-create-home --shell /usr/sbin/nologin %s)", p.User)
			}
			errs = append(errs, fmt.Errorf("pool %s: user %q: %w%s", p.ID, p.User, err, hint))
		}
	}
	return errors.Join(errs...)
}

// Handler is the HTTP API (for tests and for Start).
func (d *Daemon) Handler() http.Handler { return d.routes() }

// Start listens (ln nil: on the configured address), sweeps orphans,
// starts the actor system and every pool, and begins serving the API on ln.
func (d *Daemon) Start(ln net.Listener) error {
	// Listen first: a taken port or socket path (another daemon, maybe on
	// the same state_dir) must stop this one before its sweep could kill
	// the other's engines, and before any engine starts.
	if ln == nil {
		var err error
		if ln, err = Listen(d.cfg.Listen); err != nil {
			return err
		}
	}
	if dir := d.cfg.StateDir; dir != "" {
		if n, err := pidrec.Sweep(dir, d.log); err != nil {
			d.log.Warn("orphan.sweep_failed", "err", err)
		} else if n > 0 {
			d.log.Warn("orphan.sweep", "killed", n)
		}
	}
	if d.cgroups != nil { // after the sweep: the cgroups it could name are gone already
		if n := d.cgroups.RemoveStale(time.Minute); n > 0 {
			d.log.Info("cgroup.stale_removed", "count", n, "parent", d.cgroups.Path)
		}
	}
	d.sys = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(warnOnly{d.log.Handler().WithAttrs([]slog.Attr{slog.String("component", "protoactor")})})
	}))
	d.ln = ln
	d.reg = d.sys.Root.Spawn(actors.NewPublishingRegistryProps(d.opts.Clock, d.log.With("component", "registry"), &d.view))
	d.bootGC = newBootGC(d.opts.Clock, bootGCMax) // until no pool preloads (trackStatus)
	for _, p := range d.cfg.Pools {
		d.spawnPool(p)
	}
	d.awaitRegistered()
	go d.forwardGPUEvents()
	go d.refreshDevices()
	go d.trackStatus()
	d.srv = &http.Server{Handler: d.routes(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelWarn)}
	// No WriteTimeout: /v1/events streams and reload?wait=true may run long;
	// those handlers bound themselves by the request context, and each
	// event-stream write has a deadline of its own (getEvents).
	go func() {
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("api.serve_failed", "err", err)
		}
	}()
	d.ready.Store(true)
	d.log.Info("daemon.started", "listen", ln.Addr().String(), "pools", len(d.cfg.Pools), "version", Version)
	d.notify.Ready()
	wd, cancel := context.WithCancel(context.Background())
	d.stopWD = cancel
	d.wdDone = make(chan struct{})
	go func() {
		defer close(d.wdDone)
		d.notify.RunWatchdog(wd, d.ping)
	}()
	return nil
}

// Addr is where the API listens.
func (d *Daemon) Addr() net.Addr { return d.ln.Addr() }

// Listen opens "host:port" or "unix:/path".
//
// A unix socket path is taken with care, because the daemon usually runs as
// root: whatever is at the path and is not a socket (a regular file, a
// directory) is never removed, and Listen fails naming it; a socket that
// another process answers on (a second daemon) is left alone and Listen
// fails; only a stale socket, where a connect is refused, is removed. The
// socket gets mode 0660. Closing the listener unlinks the path only while it
// is still the socket this listener bound (same device and inode), so a
// daemon never removes the socket of another that took the path since.
func Listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return listenUnix(addr, path)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

// staleProbe bounds the connect that tells a live socket from a stale one.
const staleProbe = 2 * time.Second

func listenUnix(addr, path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen %s: %s exists and is not a socket (%s); refusing to remove it", addr, path, fileKind(fi.Mode()))
		}
		c, err := net.DialTimeout("unix", path, staleProbe)
		switch {
		case err == nil:
			c.Close()
			return nil, fmt.Errorf("listen %s: another process answers on %s (is another pool-managerd running?); refusing to take it over", addr, path)
		case errors.Is(err, syscall.ECONNREFUSED): // nobody listens: left by a daemon that died
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("listen %s: remove stale socket: %w", addr, err)
			}
		default:
			return nil, fmt.Errorf("listen %s: cannot tell whether the socket at %s is stale: %w", addr, path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	// bind fails (EADDRINUSE) if anything appeared at the path meanwhile:
	// it never replaces a file.
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // the net package would unlink whatever is at the path
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		ul.Close()
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	_ = os.Chmod(path, 0o660)
	return &unixListener{UnixListener: ul, path: path, dev: uint64(st.Dev), ino: st.Ino}, nil
}

// unixListener is a unix socket listener that, on Close, unlinks its path
// only while it still names the socket it bound.
type unixListener struct {
	*net.UnixListener
	path     string
	dev, ino uint64
	once     sync.Once
}

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		var st syscall.Stat_t
		if syscall.Lstat(l.path, &st) == nil && uint64(st.Dev) == l.dev && st.Ino == l.ino {
			_ = os.Remove(l.path)
		}
	})
	return err
}

// fileKind names the type of a file in an error message.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeDevice != 0:
		return "a device"
	case m.IsRegular():
		return "a regular file"
	}
	return "file mode " + m.String()
}

// awaitRegistered waits until the registry lists every configured pool, so
// the API never answers POOL_NOT_FOUND for a configured pool and READY=1 means
// every pool actor runs. Pool actors register themselves as their first act,
// so this takes microseconds; the bound only guards against a wedged system.
func (d *Daemon) awaitRegistered() {
	deadline := time.Now().Add(askTimeout)
	for time.Now().Before(deadline) {
		if d.view.Load().Len() >= len(d.cfg.Pools) { // a count: no copy of every status on each poll
			return
		}
		time.Sleep(time.Millisecond)
	}
	d.log.Error("daemon.registration_slow", "pools", len(d.cfg.Pools))
}

func (d *Daemon) spawnPool(p config.Pool) {
	props := actors.NewPoolProps(p, actors.PoolDeps{Registry: d.reg, Guard: d.guard, Clock: d.opts.Clock,
		Logger: d.log, SelfExe: d.opts.SelfExe, StateDir: d.cfg.StateDir, Cgroups: d.cgroups, ReadinessClient: d.readiness,
		Observer: d.metrics, OnLogDrop: d.metrics.LogDropped})
	pid, err := d.sys.Root.SpawnNamed(props, "pool/"+p.ID)
	if err != nil {
		pid = d.sys.Root.Spawn(props) // a stale name from a removed pool still stopping
	}
	d.pools[p.ID] = pid
}

func (d *Daemon) ping(ctx context.Context) error {
	if d.sys == nil {
		return errors.New("not started")
	}
	to, err := futureTimeout(ctx, 0)
	if err != nil {
		return err
	}
	_, err = actors.Ask(d.sys.Root, d.reg, &actors.Ping{}, to)
	return err
}

// snapshot is every pool's status, sorted by id, from the registry's
// published state (no round trip; see actors.RegistryView). It fails only
// once the context is done, like the query it replaced.
func (d *Daemon) snapshot(ctx context.Context) ([]actors.PoolStatus, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return d.view.Load().Pools(), nil
}

// ask sends q to pid and waits for its reply, of q's reply type, for at
// most askTimeout and never past ctx's deadline (see actors.Ask for the
// errors; ctx's own error when it is done already). A handler returns such
// an error as is: it is not an API error, so the client gets 500 INTERNAL.
func ask[R any](ctx context.Context, d *Daemon, pid *actor.PID, q actors.Question[R]) (R, error) {
	to, err := futureTimeout(ctx, askTimeout)
	if err != nil {
		var zero R
		return zero, err
	}
	return actors.Ask(d.sys.Root, pid, q, to)
}

// futureTimeout is the timeout of a request future bounded by ctx: the time
// left to ctx's deadline, at most limit (0: no limit but the deadline;
// askTimeout when ctx has none), and at least a millisecond: protoactor
// starts no timer for a duration ≤ 0, so such a future would never end. A
// ctx already done is its error.
func futureTimeout(ctx context.Context, limit time.Duration) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	to := limit
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); to == 0 || left < to {
			to = left
		}
	}
	if to == 0 && limit == 0 {
		to = askTimeout
	}
	return max(to, time.Millisecond), nil
}

// forwardGPUEvents routes NVML health events to the pools; each pool decides
// whether it uses the device.
func (d *Daemon) forwardGPUEvents() {
	ch := d.guard.Events()
	if ch == nil {
		return
	}
	for ev := range ch {
		d.log.Warn("gpu.event", "uuid", ev.UUID, "xid", ev.XID, "device_level", ev.DeviceLevel, "message", ev.Message)
		actors.SendRegistry(d.sys.Root, d.reg, &actors.Broadcast{Msg: &actors.GPUEvent{Event: ev}})
	}
}

// deviceRefresh is how often free VRAM is re-read for placement and metrics.
const deviceRefresh = 15 * time.Second

// refreshDevices keeps the pools' device memory figures current.
func (d *Daemon) refreshDevices() {
	t := time.NewTicker(deviceRefresh)
	defer t.Stop()
	for range t.C {
		if !d.ready.Load() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
		devs, err := d.guard.Snapshot(ctx)
		cancel()
		if err == nil && len(devs) > 0 {
			actors.SendRegistry(d.sys.Root, d.reg, &actors.Broadcast{Msg: &actors.DevicesUpdate{Devices: devs}})
		}
	}
}

// trackStatus keeps systemd's STATUS= line in step with pool states.
func (d *Daemon) trackStatus() {
	subscribe := func() chan actors.Transition {
		ch := make(chan actors.Transition, 256)
		actors.SendRegistry(d.sys.Root, d.reg, &actors.Subscribe{Ch: ch})
		return ch
	}
	update := func() { // counts from the snapshot: no copy of every status
		snap := d.view.Load()
		counts := snap.StateCounts()
		d.notify.Status(Summary(counts, snap.Len()))
		d.bootGC.observe(counts)
	}
	follow(subscribe, update, d.stopped)
	// The registry stops with the actor system right after stopped is
	// closed; the last subscription is simply dropped with it.
}

// follow calls update once, then after every burst of transitions, until
// stop is closed. The registry closes the channel of a subscriber that falls
// a full buffer behind: follow then subscribes again and updates, since it
// missed transitions (without this, systemd's STATUS= would freeze).
func follow(subscribe func() chan actors.Transition, update func(), stop <-chan struct{}) {
	ch := subscribe()
	update()
	for {
		select {
		case <-stop:
			return
		case _, ok := <-ch:
			if !ok {
				ch = subscribe()
				update()
				continue
			}
		}
	coalesce: // a burst of transitions is one update
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					ch = subscribe()
					break coalesce
				}
			default:
				break coalesce
			}
		}
		update()
	}
}

// Summary is the one-line pool summary for systemd's STATUS=.
func Summary(counts map[actors.State]int, pools int) string {
	parts := []string{}
	for _, s := range actors.States {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	if len(parts) == 0 {
		return "0 pools"
	}
	return fmt.Sprintf("%d pools: %s", pools, strings.Join(parts, ", "))
}

// Shutdown drains every pool within shutdown_deadline, stops every engine,
// then stops the API and the actor system. No engine outlives it.
func (d *Daemon) Shutdown() { d.shutdownOnce.Do(d.shutdown) }

func (d *Daemon) shutdown() {
	close(d.quit) // first: event streams end, new work is refused
	d.bootGC.stop()
	if d.reg == nil {
		if d.sys != nil {
			d.sys.Shutdown()
		}
		_ = d.guard.Close()
		return // never got as far as starting pools
	}
	// The watchdog stops before STOPPING=1: systemd ignores pings while the
	// unit stops (TimeoutStopSec= bounds the shutdown), and a ping after it
	// would only confuse a reader of the notifications.
	if d.stopWD != nil {
		d.stopWD()
		<-d.wdDone
	}
	d.notify.Stopping()
	d.log.Info("daemon.stopping", "shutdown_deadline_ms", d.cfg.ShutdownDeadline.Milliseconds())
	d.ready.Store(false)
	maxGrace := time.Duration(0)
	for _, p := range d.cfg.Pools {
		maxGrace = max(maxGrace, p.StopGrace)
	}
	done := d.waitAllStopped(d.cfg.ShutdownDeadline + maxGrace + shutdownSlack)
	pids := make([]*actor.PID, 0, len(d.pools))
	for _, pid := range d.pools {
		pids = append(pids, pid)
	}
	d.hurryMu.Lock()
	d.stopping = pids // from now on Hurry reaches them
	deadline := d.cfg.ShutdownDeadline
	if d.hurried { // a second signal came before the shutdown began
		deadline = 0
	}
	for _, pid := range pids {
		actors.SendPool(d.sys.Root, pid, &actors.Drain{Deadline: deadline, Reason: "shutdown"})
	}
	d.hurryMu.Unlock()
	waited := make(chan struct{})
	go d.logShutdownProgress(time.Now().Add(deadline), waited)
	ok := <-done
	close(waited)
	if !ok {
		d.log.Warn("daemon.shutdown_timeout", "detail", "engines still running after the deadline are killed")
	}
	if d.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := d.srv.Shutdown(ctx); err != nil {
			_ = d.srv.Close() // a request that would not end (e.g. reload wait:true): cut it
		}
		cancel()
	}
	for _, pid := range d.pools {
		_ = d.sys.Root.StopFuture(pid).Wait() // the pool's Stopping handler kills any engine left
	}
	if d.stopWD != nil {
		d.stopWD()
	}
	close(d.stopped)
	d.sys.Shutdown()
	_ = d.guard.Close()
	d.log.Info("daemon.stopped")
}

// Shutdown progress is logged first after shutdownFirstReport, then every
// shutdownReportEvery, until every pool has stopped: a drain that waits for
// leases is never silent.
const (
	shutdownFirstReport = time.Second
	shutdownReportEvery = 5 * time.Second
)

// logShutdownProgress logs daemon.shutdown_waiting (which pools are not
// stopped yet, in which state, with how many leases, and how long the drains
// may still wait) until done is closed.
func (d *Daemon) logShutdownProgress(deadline time.Time, done <-chan struct{}) {
	t := time.NewTimer(shutdownFirstReport)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
		pools, err := d.snapshot(ctx)
		cancel()
		if err == nil {
			var waiting []string
			for _, p := range pools {
				if p.State == actors.StateStopped || p.State == actors.StateFailed {
					continue
				}
				waiting = append(waiting, fmt.Sprintf("%s: %s, %d lease(s)", p.PoolID, p.State, p.ActiveLeases))
			}
			if len(waiting) > 0 {
				d.log.Info("daemon.shutdown_waiting", "pools", strings.Join(waiting, "; "),
					"remaining_ms", max(0, time.Until(deadline).Milliseconds()),
					"detail", "drains wait for leases until shutdown_deadline; a second SIGINT (Ctrl-C) or SIGTERM stops the engines now")
			}
		}
		t.Reset(shutdownReportEvery)
	}
}

// Hurry cuts the shutdown's drains short (a second SIGTERM or SIGINT): every
// pool stops waiting for its leases and stops its engine now. Called before
// the shutdown has begun, it makes the shutdown drain with deadline 0. Safe
// to call from any goroutine, any number of times.
func (d *Daemon) Hurry() {
	d.hurryMu.Lock()
	defer d.hurryMu.Unlock()
	d.hurried = true
	d.log.Warn("daemon.hurry", "pools", len(d.stopping),
		"detail", "drains stop waiting for leases; engines are stopped now")
	for _, pid := range d.stopping {
		actors.SendPool(d.sys.Root, pid, &actors.Drain{Deadline: 0, Reason: "shutdown"})
	}
}

// waitAllStopped reports true once every pool is stopped (or false at limit).
func (d *Daemon) waitAllStopped(limit time.Duration) <-chan bool {
	ch := make(chan actors.Transition, 1024)
	actors.SendRegistry(d.sys.Root, d.reg, &actors.Subscribe{Ch: ch})
	out := make(chan bool, 1)
	go func() {
		defer actors.SendRegistry(d.sys.Root, d.reg, &actors.Unsubscribe{Ch: ch})
		out <- waitUntil(d.allStopped, ch, 200*time.Millisecond, limit)
	}()
	return out
}

// waitUntil reports true once done holds, checking it at each transition on
// ch and every tick (a backstop if the subscription lags), or false after
// limit. A channel the registry closed (the subscriber fell behind) is set to
// nil, so the loop falls back on the ticker instead of spinning on it.
func waitUntil(done func() bool, ch <-chan actors.Transition, tick, limit time.Duration) bool {
	timeout := time.NewTimer(limit)
	defer timeout.Stop()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		if done() {
			return true
		}
		select {
		case _, ok := <-ch:
			if !ok {
				ch = nil
			}
		case <-t.C:
		case <-timeout.C:
			return false
		}
	}
}

func (d *Daemon) allStopped() bool {
	ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
	defer cancel()
	pools, err := d.snapshot(ctx)
	if err != nil {
		return false
	}
	for _, p := range pools {
		if p.State != actors.StateStopped && p.State != actors.StateFailed || p.PID != nil {
			return false
		}
	}
	return true
}

// warnOnly routes protoactor's own logs through the daemon's handler at WARN
// and above: its INFO chatter (actor started, etc.) is noise in the journal.
type warnOnly struct{ slog.Handler }

func (w warnOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && w.Handler.Enabled(ctx, l)
}
func (w warnOnly) WithAttrs(a []slog.Attr) slog.Handler { return warnOnly{w.Handler.WithAttrs(a)} }
func (w warnOnly) WithGroup(n string) slog.Handler      { return warnOnly{w.Handler.WithGroup(n)} }
