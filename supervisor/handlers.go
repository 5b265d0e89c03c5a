package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/config"
)

func (d *Daemon) getHealthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, 200, map[string]string{"status": "ok", "version": Version})
	return nil
}

func (d *Daemon) getReadyz(w http.ResponseWriter, r *http.Request) error {
	if !d.ready.Load() {
		return errf(actors.CodePoolUnavailable, "daemon is starting or stopping")
	}
	if err := d.ping(r.Context()); err != nil { // readiness includes a registry that answers
		return errf(actors.CodeInternal, "actor system does not answer: %v", err)
	}
	writeJSON(w, 200, map[string]any{"status": "ready", "pools": d.view.Load().Len()})
	return nil
}

func (d *Daemon) getMetrics(w http.ResponseWriter, r *http.Request) error {
	promhttp.HandlerFor(d.metrics.Registry, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	return nil
}

func (d *Daemon) listPools(w http.ResponseWriter, r *http.Request) error {
	pools, err := d.snapshot(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, 200, map[string]any{"pools": pools})
	return nil
}

// pool looks a pool up in the registry's published state (no round trip).
func (d *Daemon) pool(ctx context.Context, id string) (actors.PoolReply, error) {
	if err := ctx.Err(); err != nil {
		return actors.PoolReply{}, err
	}
	pr := d.view.Load().Pool(id)
	if !pr.Found {
		return actors.PoolReply{}, errf(actors.CodePoolNotFound, "no pool with id %q", id)
	}
	return pr, nil
}

func (d *Daemon) getPool(w http.ResponseWriter, r *http.Request) error {
	pr, err := d.pool(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, 200, pr.Status)
	return nil
}

// Health is GET /v1/pools/{id}/health (docs/contract.md §4).
type Health struct {
	Live          bool          `json:"live"`
	Ready         bool          `json:"ready"`
	Draining      bool          `json:"draining"`
	State         actors.State  `json:"state"`
	LastError     *string       `json:"last_error"`
	EngineVersion *string       `json:"engine_version"` // null when the pool has none
	Metrics       HealthMetrics `json:"metrics"`
}

// nullable is s, or nil (JSON null) when s is empty: docs/contract.md §4's
// unknown values are null.
func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// HealthMetrics are the numbers of a health answer.
type HealthMetrics struct {
	ActiveLeases        int      `json:"active_leases"`
	Slots               int      `json:"slots"`
	RestartCount        int      `json:"restart_count"`
	Starts              int      `json:"starts"`
	ConsecutiveFailures int      `json:"consecutive_failures"`
	UptimeMS            int64    `json:"uptime_ms"` // since the current engine was spawned; 0 without one
	LastHeartbeatMS     *int64   `json:"last_heartbeat_ms"`
	RequestsProcessing  *float64 `json:"requests_processing"`
	RequestsDeferred    *float64 `json:"requests_deferred"`
}

func (d *Daemon) getPoolHealth(w http.ResponseWriter, r *http.Request) error {
	pr, err := d.pool(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	s := pr.Status
	h := Health{Live: s.Live, Ready: s.Ready, Draining: s.Draining, State: s.State, LastError: s.LastError,
		EngineVersion: nullable(s.EngineVersion), Metrics: HealthMetrics{ActiveLeases: s.ActiveLeases, Slots: s.Slots,
			RestartCount: s.RestartCount, Starts: s.Starts, ConsecutiveFailures: s.ConsecutiveFailures, LastHeartbeatMS: s.LastHeartbeatMS}}
	if s.StartedAtMS != nil {
		h.Metrics.UptimeMS = d.opts.Clock.Now().UnixMilli() - *s.StartedAtMS // started_at_ms is on the same clock
	}
	if m := s.EngineMetrics; m != nil {
		h.Metrics.RequestsProcessing, h.Metrics.RequestsDeferred = &m.RequestsProcessing, &m.RequestsDeferred
	}
	writeHealth(w, &h)
	return nil
}

// maxTail is the most log lines one request returns (the ring's size).
const maxTail = 1000

func (d *Daemon) getLogs(w http.ResponseWriter, r *http.Request) error {
	n := 100
	if q := r.URL.Query().Get("tail"); q != "" {
		v, err := strconv.Atoi(q)
		if err != nil || v < 0 || v > maxTail {
			return errf(actors.CodeInvalidParams, "tail must be an integer between 0 and %d, got %q", maxTail, q)
		}
		n = v
	}
	pr, err := d.pool(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	res, err := ask(r.Context(), d, pr.PID, &actors.GetLogs{Tail: n})
	if err != nil {
		return err
	}
	lines := res.Lines
	if lines == nil {
		writeJSON(w, 200, map[string]any{"lines": []any{}})
		return nil
	}
	writeJSON(w, 200, map[string]any{"lines": lines})
	return nil
}

// command sends a command to a pool actor and renders its reply. The pool
// pushes the command's effect to the registry before it answers; one
// registry round trip after the answer (the registry's mailbox is FIFO)
// makes sure the registry has published it, so a query right after the
// answer (served from the published state) sees it: "202 draining" is
// followed by a GET that says draining.
func (d *Daemon) command(ctx context.Context, pid *actor.PID, msg actors.Question[*actors.CommandReply]) (*actors.CommandReply, error) {
	cr, err := ask(ctx, d, pid, msg)
	if err != nil {
		return nil, err
	}
	if _, err := ask(ctx, d, d.reg, &actors.Ping{}); err != nil {
		return nil, err
	}
	if cr.Err != nil {
		return nil, fromDomain(cr.Err)
	}
	return cr, nil
}

type drainBody struct {
	DeadlineMS *int64 `json:"deadline_ms"`
}

// shuttingDown reports whether the shutdown has begun. Routes marked newWork are
// refused from then on; releasing a lease and draining stay allowed: they
// only help the shutdown's drain finish sooner.
func (d *Daemon) shuttingDown() bool {
	select {
	case <-d.quit:
		return true
	default:
		return false
	}
}

func (d *Daemon) postDrain(w http.ResponseWriter, r *http.Request) error {
	var b drainBody
	if err := decode(r, &b); err != nil {
		return err
	}
	dl, err := msDuration("deadline_ms", b.DeadlineMS)
	if err != nil {
		return err
	}
	pr, err := d.pool(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	cr, err := d.command(r.Context(), pr.PID, &actors.Drain{Deadline: dl, Reason: "api", CorrelationID: correlationID(w)})
	if err != nil {
		return err
	}
	writeJSON(w, 202, map[string]any{"pool_id": pr.Status.PoolID, "state": cr.State})
	return nil
}

type reloadBody struct {
	NewModelRef   *string `json:"new_model_ref"`
	EngineVersion *string `json:"engine_version"`
	DeadlineMS    *int64  `json:"deadline_ms"`
	Wait          bool    `json:"wait"`
}

func (d *Daemon) postReload(w http.ResponseWriter, r *http.Request) error {
	var b reloadBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if b.NewModelRef == nil || *b.NewModelRef == "" {
		return errf(actors.CodeInvalidParams, "new_model_ref is required")
	}
	if b.EngineVersion != nil {
		if err := checkEngineVersion(*b.EngineVersion); err != nil {
			return err
		}
	}
	dl, err := msDuration("deadline_ms", b.DeadlineMS)
	if err != nil {
		return err
	}
	pr, err := d.pool(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := d.checkReloadRef(pr.Status.PoolID, *b.NewModelRef); err != nil {
		return err
	}
	msg := &actors.Reload{ModelRef: *b.NewModelRef, Deadline: dl, CorrelationID: correlationID(w)}
	if b.EngineVersion != nil {
		msg.EngineVersion = *b.EngineVersion
	}
	if b.Wait {
		msg.Result = make(chan actors.ReloadResult, 1)
	}
	cr, err := d.command(r.Context(), pr.PID, msg)
	if err != nil {
		return err
	}
	if !b.Wait {
		writeJSON(w, 202, map[string]any{"pool_id": pr.Status.PoolID, "state": cr.State})
		return nil
	}
	select {
	case res := <-msg.Result:
		// The pool published the outcome to the registry before it told us;
		// one registry round trip makes that published state what a GET
		// right after this answer reads.
		if _, err := ask(r.Context(), d, d.reg, &actors.Ping{}); err != nil && r.Context().Err() == nil {
			return err
		}
		if res.Result == actors.ReloadSucceeded {
			writeJSON(w, 200, map[string]any{"pool_id": pr.Status.PoolID, "result": res.Result,
				"engine_version": nullable(res.EngineVersion), "duration_ms": res.Duration.Milliseconds()})
			return nil
		}
		e := errf(actors.CodeReloadFailed, "%s", reloadMessage(res))
		e.RolledBack = &res.RolledBack
		return e
	case <-r.Context().Done():
		return r.Context().Err()
	}
}

// checkReloadRef applies config.CheckModelRef to a reload's new_model_ref:
// the reference becomes ${MODEL_REF} in the pool's command, so it must be
// inert data (400 INVALID_MODEL_REF) and, when the pool has reload_allowed,
// one of the references it allows (403 MODEL_REF_NOT_ALLOWED). A pool the
// registry knows but the config does not yet (a SIGHUP adding it right
// now) is 409 POOL_BUSY, retriable: its allow list is not known yet.
func (d *Daemon) checkReloadRef(id, ref string) error {
	pc, ok := d.poolConfig(id)
	if !ok {
		return errf(actors.CodePoolBusy, "pool %q is being reconfigured; retry", id)
	}
	if err := config.CheckModelRef(pc, ref); err != nil {
		code := codeInvalidModelRef
		if errors.Is(err, config.ErrModelRefNotAllowed) {
			code = codeModelRefNotAllowed
		}
		return errf(code, "new_model_ref: %v", err)
	}
	return nil
}

// maxEngineVersion bounds a reload's engine_version: a label shown in
// status, logs and a metric label.
const maxEngineVersion = 128

func checkEngineVersion(v string) error {
	if len(v) > maxEngineVersion {
		return errf(actors.CodeInvalidParams, "engine_version is %d bytes long, at most %d are allowed", len(v), maxEngineVersion)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f {
			return errf(actors.CodeInvalidParams, "engine_version has control character U+%04X at byte %d", c, i)
		}
	}
	return nil
}

// setPoolConfigs records pools as the configs API handlers check against.
func (d *Daemon) setPoolConfigs(pools []config.Pool) {
	m := make(map[string]config.Pool, len(pools))
	for _, p := range pools {
		m[p.ID] = p
	}
	d.poolCfgs.Store(&m)
}

// poolConfig is the running config of pool id (safe from any goroutine).
func (d *Daemon) poolConfig(id string) (config.Pool, bool) {
	m := d.poolCfgs.Load()
	if m == nil {
		return config.Pool{}, false
	}
	p, ok := (*m)[id]
	return p, ok
}

// reloadMessage is a RELOAD_FAILED message: "reload rolled back: <why>",
// "reload failed: <why>" or "reload cancelled: <why>", where <why> is the
// actor's error; an error that already starts with "reload " is used as is.
func reloadMessage(res actors.ReloadResult) string {
	why := strings.TrimSpace(res.Error)
	if strings.HasPrefix(why, "reload ") {
		return why
	}
	what := "reload " + strings.ReplaceAll(string(res.Result), "_", " ")
	switch res.Result {
	case actors.ReloadRolledBack:
		what = "reload rolled back"
	case actors.ReloadFailed:
		what = "reload failed"
	case actors.ReloadCancelled:
		what = "reload cancelled"
	case "":
		what = "reload failed"
	}
	if why == "" {
		return what
	}
	return what + ": " + why
}

func (d *Daemon) postStart(w http.ResponseWriter, r *http.Request) error {
	if err := decode(r, &struct{}{}); err != nil {
		return err
	}
	pr, err := d.pool(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	cr, err := d.command(r.Context(), pr.PID, &actors.Start{CorrelationID: correlationID(w)})
	if err != nil {
		return err
	}
	code := 200
	if cr.Changed {
		code = 202
	}
	writeJSON(w, code, map[string]any{"pool_id": pr.Status.PoolID, "state": cr.State})
	return nil
}

type leaseBody struct {
	TTLMS *int64 `json:"ttl_ms"`
}

func (d *Daemon) postLease(w http.ResponseWriter, r *http.Request) error {
	var b leaseBody
	if err := decode(r, &b); err != nil {
		return err
	}
	ttl, err := msDuration("ttl_ms", b.TTLMS)
	if err != nil {
		return err
	}
	lr, err := ask(r.Context(), d, d.reg, &actors.AcquireLease{PoolID: r.PathValue("id"), TTL: max(ttl, 0)})
	if err != nil {
		return err
	}
	return d.leaseAnswer(w, lr)
}

func (d *Daemon) leaseAnswer(w http.ResponseWriter, lr *actors.LeaseReply) error {
	if lr.Err != nil {
		return fromDomain(lr.Err)
	}
	writeJSON(w, 201, lr.Lease)
	return nil
}

func (d *Daemon) deleteLease(w http.ResponseWriter, r *http.Request) error {
	rr, err := ask(r.Context(), d, d.reg, &actors.ReleaseLease{PoolID: r.PathValue("id"), LeaseID: r.PathValue("lease_id")})
	if err != nil {
		return err
	}
	if rr.Err != nil {
		return fromDomain(rr.Err)
	}
	writeJSON(w, 200, map[string]int{"active_leases": rr.ActiveLeases})
	return nil
}

type placementBody struct {
	ModelRef *string  `json:"model_ref"`
	PoolIDs  []string `json:"pool_ids"`
	TTLMS    *int64   `json:"ttl_ms"`
}

func (d *Daemon) postPlacement(w http.ResponseWriter, r *http.Request) error {
	var b placementBody
	if err := decode(r, &b); err != nil {
		return err
	}
	ttl, err := msDuration("ttl_ms", b.TTLMS)
	if err != nil {
		return err
	}
	msg := &actors.Place{PoolIDs: b.PoolIDs, TTL: max(ttl, 0)}
	if b.ModelRef != nil {
		msg.ModelRef = *b.ModelRef
	}
	lr, err := ask(r.Context(), d, d.reg, msg)
	if err != nil {
		return err
	}
	return d.leaseAnswer(w, lr)
}

// sseKeepAlive is how often an idle event stream gets a comment line, so
// proxies and clients see the connection is alive.
const sseKeepAlive = 15 * time.Second

// defaultEventWriteTimeout is how long an event stream waits for a client to
// take one write (an event or a keep-alive) before it drops the client.
const defaultEventWriteTimeout = 10 * time.Second

// sseRetryMS is the reconnection delay the event stream asks clients for
// (the SSE retry: field).
const sseRetryMS = 1000

// getEvents streams pool transitions as Server-Sent Events, in every daemon
// state until the shutdown begins (then the stream ends). Each event has an
// id, actors.EventID: "<run>-<seq>", seq counting from 1 in each daemon
// run. The stream opens with retry: and, for a client without
// Last-Event-ID, a bare id: line with the latest id (no data: it only sets
// the client's last event id). A client that reconnects with Last-Event-ID
// gets the events it missed, from the registry's backlog of the last
// actors.EventBacklog, then live ones, each exactly once; when they cannot
// be replayed (the id is from another run, too old, or not an id) it gets
// one `event: reset` instead (re-read /v1/pools), then live events.
//
// A client that falls behind is disconnected: when the registry has 256
// events queued for it (it closes the subscription), or when one write does
// not reach the client within the write timeout (its socket buffers are
// full because it does not read). So a client that never reads costs at most
// the queue and the socket buffers, for at most the timeout; one that comes
// back resumes from its Last-Event-ID.
func (d *Daemon) getEvents(w http.ResponseWriter, r *http.Request) error {
	if _, ok := w.(http.Flusher); !ok {
		return errf(actors.CodeInternal, "streaming unsupported")
	}
	rc := http.NewResponseController(w)
	ch := make(chan actors.Transition, 256)
	lastID := r.Header.Get("Last-Event-ID")
	defer actors.SendRegistry(d.sys.Root, d.reg, &actors.Unsubscribe{Ch: ch}) // also when the ask below fails after the registry took it
	sub, err := ask(r.Context(), d, d.reg, &actors.SubscribeEvents{Ch: ch, LastEventID: lastID})
	if err != nil {
		return err
	}
	d.streams.Add(1)
	defer d.streams.Add(-1)
	timeout := d.opts.EventWriteTimeout
	if timeout <= 0 {
		timeout = defaultEventWriteTimeout
	}
	// send writes one chunk and flushes it within the timeout; false: the
	// client is gone or does not take it.
	send := func(format string, args ...any) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	event := func(t actors.Transition) bool {
		b, _ := json.Marshal(t)
		return send("id: %s\nevent: pool_state\ndata: %s\n\n", actors.EventID(sub.Run, t.Seq), b)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(200)
	head := fmt.Sprintf(": pool-managerd events\nretry: %d\n", sseRetryMS)
	if lastID == "" {
		head += "id: " + actors.EventID(sub.Run, sub.Last) + "\n"
	}
	if !send("%s\n", head) {
		return nil
	}
	if sub.Reset != "" {
		echo := lastID
		if len(echo) > 128 { // echoed back, so bounded
			echo = echo[:128] + "..."
		}
		b, _ := json.Marshal(resetEvent{Reason: sub.Reset, Message: resetMessage(sub.Reset, echo), LastEventID: echo})
		if !send("id: %s\nevent: reset\ndata: %s\n\n", actors.EventID(sub.Run, sub.Last), b) {
			return nil
		}
	}
	for _, t := range sub.Missed {
		if !event(t) {
			return nil
		}
	}
	ka := time.NewTicker(sseKeepAlive)
	defer ka.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-d.quit: // shutting down: end the stream, so the server's Shutdown need not wait for the client
			return nil
		case <-ka.C:
			if !send(": keep-alive\n\n") {
				return nil
			}
		case t, ok := <-ch:
			if !ok { // fell behind: the client reconnects with its Last-Event-ID
				return nil
			}
			if !event(t) {
				return nil
			}
		}
	}
}

// resetEvent is the data of an `event: reset`: the events after the
// client's Last-Event-ID cannot be replayed, so it must re-read /v1/pools.
type resetEvent struct {
	Reason      string `json:"reason"` // other_run, expired or unknown
	Message     string `json:"message"`
	LastEventID string `json:"last_event_id"`
}

func resetMessage(reason, lastID string) string {
	const reread = "; re-read GET /v1/pools, then follow the events from here"
	switch reason {
	case actors.ResetOtherRun:
		return fmt.Sprintf("Last-Event-ID %q is from another run of the daemon (it restarted)%s", lastID, reread)
	case actors.ResetExpired:
		return fmt.Sprintf("the events after Last-Event-ID %q are no longer kept (the daemon keeps the last %d)%s", lastID, actors.EventBacklog, reread)
	default:
		return fmt.Sprintf("Last-Event-ID %q is not an event id of this daemon%s", lastID, reread)
	}
}
