package supervisor

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pool-managerd/pool-managerd/actors"
)

// Metrics holds pool-managerd's Prometheus metrics (docs/contract.md §6). Counters
// and histograms are fed by pool actors through actors.Observer; gauges that
// describe current state are read from the registry actor at scrape time, so
// they can never drift from what the API shows. Label sets are bounded: pool
// ids come from the config, reasons/outcomes/kinds from fixed lists.
type Metrics struct {
	Registry  *prometheus.Registry
	restarts  *prometheus.CounterVec
	failures  *prometheus.CounterVec
	preload   *prometheus.HistogramVec
	drain     *prometheus.HistogramVec
	reloads   *prometheus.CounterVec
	probes    *prometheus.HistogramVec
	api       *prometheus.HistogramVec
	xids      *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	droppedB  *prometheus.CounterVec
	snapshots func(context.Context) ([]actors.PoolStatus, error)
}

const ns = "pool_managerd"

// NewMetrics builds the metrics; snapshot reads the registry for gauges.
func NewMetrics(snapshot func(context.Context) ([]actors.PoolStatus, error)) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), snapshots: snapshot}
	m.restarts = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "restarts_total",
		Help: "Engines spawned again after a failure (the pool's restart_count), by the reason of that failure."}, []string{"pool_id", "reason"})
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "failures_total",
		Help: "Failures of a preload or a running engine, by reason (exit classes, liveness, timeouts, guardrail...)."}, []string{"pool_id", "reason"})
	m.preload = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "preload_duration_seconds",
		Help: "Time from preload start to ready or failure.", Buckets: prometheus.ExponentialBuckets(0.05, 2.5, 12)}, []string{"pool_id", "outcome"})
	m.drain = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "drain_duration_seconds",
		Help: "Time from drain start to engine stopped.", Buckets: prometheus.ExponentialBuckets(0.01, 3, 10)}, []string{"pool_id", "forced"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "reload_total",
		Help: "Finished reloads by outcome (succeeded, rolled_back, failed, cancelled)."}, []string{"pool_id", "outcome"})
	m.probes = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "probe_duration_seconds",
		Help: "Engine HTTP probe latency.", Buckets: prometheus.ExponentialBuckets(0.0005, 3, 10)}, []string{"pool_id", "kind"})
	m.api = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "api_request_duration_seconds",
		Help: "API request latency by route pattern and status code.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"route", "code"})
	m.xids = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "gpu_xid_events_total",
		Help: "NVIDIA XID events seen by NVML."}, []string{"uuid", "xid"})
	m.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "engine_log_lines_dropped_total",
		Help: "Engine output lines not forwarded to the journal because of the per-pool rate limits (lines and bytes)."}, []string{"pool_id"})
	m.droppedB = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "engine_log_bytes_dropped_total",
		Help: "Engine output bytes not forwarded to the journal: those of rate-limited lines, and what was cut from lines over 16 KiB."}, []string{"pool_id"})
	m.Registry.MustRegister(m.restarts, m.failures, m.preload, m.drain, m.reloads, m.probes, m.api, m.xids, m.dropped, m.droppedB,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &stateCollector{m})
	return m
}

// Observer implementation (actors.Observer).

func (m *Metrics) Restart(pool, reason string) { m.restarts.WithLabelValues(pool, reason).Inc() }
func (m *Metrics) Failure(pool, reason string) { m.failures.WithLabelValues(pool, reason).Inc() }
func (m *Metrics) Preload(pool, outcome string, d time.Duration) {
	m.preload.WithLabelValues(pool, outcome).Observe(d.Seconds())
}
func (m *Metrics) Drain(pool string, forced bool, d time.Duration) {
	f := "false"
	if forced {
		f = "true"
	}
	m.drain.WithLabelValues(pool, f).Observe(d.Seconds())
}
func (m *Metrics) Reload(pool, outcome string) { m.reloads.WithLabelValues(pool, outcome).Inc() }
func (m *Metrics) Probe(pool, kind string, d time.Duration) {
	m.probes.WithLabelValues(pool, kind).Observe(d.Seconds())
}

// XID counts one GPU XID event.
func (m *Metrics) XID(uuid string, xid uint64) {
	m.xids.WithLabelValues(uuid, itoa(xid)).Inc()
}

// LogDropped counts engine output the journal did not get: lines dropped by
// the rate limits, and bytes (theirs, and those cut from over-long lines).
func (m *Metrics) LogDropped(pool string, lines, bytes int) {
	if lines > 0 {
		m.dropped.WithLabelValues(pool).Add(float64(lines))
	}
	if bytes > 0 {
		m.droppedB.WithLabelValues(pool).Add(float64(bytes))
	}
}

// ObserveAPI records one API request, for a caller outside the daemon's
// routes (each route keeps its own apiRoute, see wrap).
func (m *Metrics) ObserveAPI(route string, code int, d time.Duration) {
	m.apiRoute(route).observe(code, d)
}

// apiRoute returns the recorder of one route's requests: ObserveAPI with
// the route fixed, which looks each code's series up once instead of on
// every request (hashing the labels under the vector's lock).
func (m *Metrics) apiRoute(route string) *apiRoute {
	r := &apiRoute{vec: m.api, route: route}
	r.byCode.Store(&map[int]prometheus.Observer{})
	return r
}

// apiRoute caches one route's api_request_duration_seconds series by code.
// The series are never deleted, so a cached one stays the one scraped.
type apiRoute struct {
	vec    *prometheus.HistogramVec
	route  string
	mu     sync.Mutex                                  // serialises additions to byCode
	byCode atomic.Pointer[map[int]prometheus.Observer] // copied on write: read without a lock
}

// observe records one request of the route answered with code.
func (r *apiRoute) observe(code int, d time.Duration) {
	o, ok := (*r.byCode.Load())[code]
	if !ok {
		o = r.add(code)
	}
	o.Observe(d.Seconds())
}

func (r *apiRoute) add(code int) prometheus.Observer {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.byCode.Load()
	if o, ok := cur[code]; ok {
		return o
	}
	o := r.vec.WithLabelValues(r.route, itoa(uint64(code)))
	next := maps.Clone(cur)
	next[code] = o
	r.byCode.Store(&next)
	return o
}

// Forget removes a pool's series once it is gone from the config.
func (m *Metrics) Forget(pool string) {
	for _, v := range []*prometheus.CounterVec{m.restarts, m.failures, m.reloads, m.dropped, m.droppedB} {
		v.DeletePartialMatch(prometheus.Labels{"pool_id": pool})
	}
	for _, v := range []*prometheus.HistogramVec{m.preload, m.drain, m.probes} {
		v.DeletePartialMatch(prometheus.Labels{"pool_id": pool})
	}
}

func itoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}

var (
	descState  = prometheus.NewDesc(ns+"_pool_state", "1 for the pool's current state, 0 for the others.", []string{"pool_id", "state"}, nil)
	descReady  = prometheus.NewDesc(ns+"_pool_ready", "1 when the pool is ready.", []string{"pool_id", "engine", "engine_version"}, nil)
	descLeases = prometheus.NewDesc(ns+"_active_leases", "Leases held on the pool.", []string{"pool_id"}, nil)
	descFree   = prometheus.NewDesc(ns+"_gpu_memory_free_bytes", "Free memory of each GPU a pool uses, as last seen by the guardrail.", []string{"uuid"}, nil)
	// descContain is 1 for the pool's containment: "cgroup" (a cgroup v2 of
	// its own per engine) or "marker" (the environment marker only).
	descContain = prometheus.NewDesc(ns+"_pool_containment", "1 for the containment of the pool's engines: cgroup or marker.", []string{"pool_id", "kind"}, nil)
)

// stateCollector reads current state from the registry at scrape time.
type stateCollector struct{ m *Metrics }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descState
	ch <- descReady
	ch <- descLeases
	ch <- descFree
	ch <- descContain
	describeEngineSeries(ch)
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pools, err := c.m.snapshots(ctx)
	if err != nil {
		return
	}
	seen := map[string]bool{}
	for _, p := range pools {
		for _, s := range actors.States {
			v := 0.0
			if p.State == s {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, p.PoolID, string(s))
		}
		r := 0.0
		if p.Ready {
			r = 1
		}
		ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, r, p.PoolID, p.Engine, p.EngineVersion)
		ch <- prometheus.MustNewConstMetric(descLeases, prometheus.GaugeValue, float64(p.ActiveLeases), p.PoolID)
		if p.Containment != "" {
			ch <- prometheus.MustNewConstMetric(descContain, prometheus.GaugeValue, 1, p.PoolID, p.Containment)
		}
		collectEngineSeries(ch, &p)
		for _, d := range p.Devices {
			if d.UUID != "" && !seen[d.UUID] {
				seen[d.UUID] = true
				ch <- prometheus.MustNewConstMetric(descFree, prometheus.GaugeValue, float64(d.MemoryFreeBytes), d.UUID)
			}
		}
	}
}
