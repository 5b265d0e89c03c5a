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
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/engine/pidrec"
	"github.com/pool-managerd/pool-managerd/gpu"
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
	Clock    actors.Clock
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
	srv          *http.Server
	ln           net.Listener
	ready        atomic.Bool
	stopWD       context.CancelFunc
	shutdownOnce sync.Once
	probe        *http.Client
}

// New builds a daemon; nothing runs until Start.
func New(o Options) (*Daemon, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	if o.Clock == nil {
		o.Clock = actors.RealClock{}
	}
	if o.Notifier == nil {
		o.Notifier = sdnotify.New(o.Logger)
	}
	if err := checkUsers(o.Config.Pools); err != nil {
		return nil, err
	}
	d := &Daemon{opts: o, cfg: o.Config, log: o.Logger, pools: map[string]*actor.PID{}, notify: o.Notifier,
		probe: engine.NewProbeClient()}
	d.metrics = NewMetrics(d.snapshot)
	d.guard = o.Guard
	if d.guard == nil {
		d.guard = gpu.Open(gpu.Options{RequireNVIDIA: o.Config.GPU.RequireNVIDIA, MinDriverVersion: o.Config.GPU.MinDriverVersion,
			Logger: o.Logger.With("component", "gpu"), OnXID: d.metrics.XID})
	}
	return d, nil
}

// checkUsers refuses pools whose `user:` the daemon cannot apply (unknown
// user, or the daemon is not root): better a clear start-up error than an
// engine that silently runs as the wrong user.
func checkUsers(pools []config.Pool) error {
	var errs []error
	for _, p := range pools {
		if p.User == "" {
			continue
		}
		if _, err := engine.LookupCredential(p.User); err != nil {
			errs = append(errs, fmt.Errorf("pool %s: user %q: %w", p.ID, p.User, err))
		}
	}
	return errors.Join(errs...)
}

// Handler is the HTTP API (for tests and for Start).
func (d *Daemon) Handler() http.Handler { return d.routes() }

// Metrics exposes the daemon's metrics registry.
func (d *Daemon) Metrics() *Metrics { return d.metrics }

// Start sweeps orphans, starts the actor system and every pool, and begins
// serving the API on ln (nil: listen on the configured address).
func (d *Daemon) Start(ln net.Listener) error {
	if dir := d.cfg.StateDir; dir != "" {
		if n, err := pidrec.Sweep(dir, d.log); err != nil {
			d.log.Warn("orphan.sweep_failed", "err", err)
		} else if n > 0 {
			d.log.Warn("orphan.sweep", "killed", n)
		}
	}
	d.sys = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(warnOnly{d.log.Handler().WithAttrs([]slog.Attr{slog.String("component", "protoactor")})})
	}))
	if ln == nil { // listen before any engine starts: a taken port spawns nothing
		var err error
		if ln, err = Listen(d.cfg.Listen); err != nil {
			return err
		}
	}
	d.ln = ln
	d.reg = d.sys.Root.Spawn(actors.NewRegistryProps(d.opts.Clock, d.log.With("component", "registry")))
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
	// those handlers bound themselves by the request context.
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
	go d.notify.RunWatchdog(wd, d.ping)
	return nil
}

// Addr is where the API listens.
func (d *Daemon) Addr() net.Addr { return d.ln.Addr() }

// Listen opens "host:port" or "unix:/path".
func Listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("listen %s: remove stale socket: %w", addr, err)
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		_ = os.Chmod(path, 0o660)
		return ln, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

// awaitRegistered waits until the registry lists every configured pool, so
// the API never answers POOL_NOT_FOUND for a configured pool and READY=1 means
// every pool actor runs. Pool actors register themselves as their first act,
// so this takes microseconds; the bound only guards against a wedged system.
func (d *Daemon) awaitRegistered() {
	deadline := time.Now().Add(askTimeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
		pools, err := d.snapshot(ctx)
		cancel()
		if err == nil && len(pools) >= len(d.cfg.Pools) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	d.log.Error("daemon.registration_slow", "pools", len(d.cfg.Pools))
}

func (d *Daemon) spawnPool(p config.Pool) {
	props := actors.NewPoolProps(p, actors.PoolDeps{Registry: d.reg, Guard: d.guard, Clock: d.opts.Clock,
		Logger: d.log, SelfExe: d.opts.SelfExe, StateDir: d.cfg.StateDir, ProbeClient: d.probe,
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
	dl, ok := ctx.Deadline()
	to := askTimeout
	if ok {
		to = time.Until(dl)
	}
	_, err := d.sys.Root.RequestFuture(d.reg, &actors.Ping{}, to).Result()
	return err
}

func (d *Daemon) snapshot(ctx context.Context) ([]actors.PoolStatus, error) {
	r, err := d.ask(ctx, d.reg, &actors.GetPools{})
	if err != nil {
		return nil, err
	}
	return r.(*actors.PoolsReply).Pools, nil
}

func (d *Daemon) ask(ctx context.Context, pid *actor.PID, msg any) (any, error) {
	to := askTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < to {
		to = time.Until(dl)
	}
	return d.sys.Root.RequestFuture(pid, msg, to).Result()
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
		d.sys.Root.Send(d.reg, &actors.Broadcast{Msg: &actors.GPUEvent{Event: ev}})
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
			d.sys.Root.Send(d.reg, &actors.Broadcast{Msg: &actors.DevicesUpdate{Devices: devs}})
		}
	}
}

// trackStatus keeps systemd's STATUS= line in step with pool states.
func (d *Daemon) trackStatus() {
	ch := make(chan actors.Transition, 256)
	d.sys.Root.Send(d.reg, &actors.Subscribe{Ch: ch})
	update := func() {
		ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
		defer cancel()
		if pools, err := d.snapshot(ctx); err == nil {
			d.notify.Status(Summary(pools))
		}
	}
	update()
	for range ch {
		for len(ch) > 0 { // coalesce bursts
			<-ch
		}
		update()
	}
}

// Summary is the one-line pool summary for systemd's STATUS=.
func Summary(pools []actors.PoolStatus) string {
	counts := map[actors.State]int{}
	for _, p := range pools {
		counts[p.State]++
	}
	parts := []string{}
	for _, s := range actors.States {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	if len(parts) == 0 {
		return "0 pools"
	}
	return fmt.Sprintf("%d pools: %s", len(pools), strings.Join(parts, ", "))
}

// Shutdown drains every pool within shutdown_deadline, stops every engine,
// then stops the API and the actor system. No engine outlives it.
func (d *Daemon) Shutdown() { d.shutdownOnce.Do(d.shutdown) }

func (d *Daemon) shutdown() {
	if d.reg == nil {
		if d.sys != nil {
			d.sys.Shutdown()
		}
		_ = d.guard.Close()
		return // never got as far as starting pools
	}
	d.notify.Stopping()
	d.log.Info("daemon.stopping", "shutdown_deadline_ms", d.cfg.ShutdownDeadline.Milliseconds())
	d.ready.Store(false)
	maxGrace := time.Duration(0)
	for _, p := range d.cfg.Pools {
		maxGrace = max(maxGrace, p.StopGrace)
	}
	done := d.waitAllStopped(d.cfg.ShutdownDeadline + maxGrace + shutdownSlack)
	for _, pid := range d.pools {
		d.sys.Root.Send(pid, &actors.Drain{Deadline: d.cfg.ShutdownDeadline, Reason: "shutdown"})
	}
	if !<-done {
		d.log.Warn("daemon.shutdown_timeout", "detail", "engines still running after the deadline are killed")
	}
	if d.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = d.srv.Shutdown(ctx)
		cancel()
	}
	for _, pid := range d.pools {
		_ = d.sys.Root.StopFuture(pid).Wait() // the pool's Stopping handler kills any engine left
	}
	if d.stopWD != nil {
		d.stopWD()
	}
	d.sys.Shutdown()
	_ = d.guard.Close()
	d.log.Info("daemon.stopped")
}

// waitAllStopped reports true once every pool is stopped (or false at limit).
func (d *Daemon) waitAllStopped(limit time.Duration) <-chan bool {
	ch := make(chan actors.Transition, 1024)
	d.sys.Root.Send(d.reg, &actors.Subscribe{Ch: ch})
	out := make(chan bool, 1)
	go func() {
		defer d.sys.Root.Send(d.reg, &actors.Unsubscribe{Ch: ch})
		timeout := time.After(limit)
		tick := time.NewTicker(200 * time.Millisecond) // backstop if the subscription lags
		defer tick.Stop()
		for {
			if d.allStopped() {
				out <- true
				return
			}
			select {
			case <-ch:
			case <-tick.C:
			case <-timeout:
				out <- false
				return
			}
		}
	}()
	return out
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
