package supervisor

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/engine"
)

// Engine series re-exported on the daemon's /metrics (README, Metrics).
//
// Each pool with a metrics_path has its engine's allow-listed series
// (engine.QueueSeries.Export) read by the pool's own metrics scrape, on the
// liveness schedule; the pool's status carries the latest values and the
// collector reads them from the registry's snapshot, so a scrape of the
// daemon never waits on an engine. Every series is named
// engine.ExportName(engine's name) and labelled pool_id, engine and
// engine_version; the engine's own labels are summed away. A pool whose
// engine is not running (stopped, backoff, failed, preload) has none.

// engineDescs holds one Desc per allow-listed series of every engine kind.
var engineDescs = func() map[string]*prometheus.Desc {
	m := map[string]*prometheus.Desc{}
	for _, e := range engine.AllExportSeries() {
		m[e.Name] = prometheus.NewDesc(engine.ExportName(e.Name), e.Help+" Re-exported from the engine's "+e.Name+", summed over its labels.",
			[]string{"pool_id", "engine", "engine_version"}, nil)
	}
	return m
}()

func describeEngineSeries(ch chan<- *prometheus.Desc) {
	for _, e := range engine.AllExportSeries() {
		ch <- engineDescs[e.Name]
	}
}

// collectEngineSeries sends the re-exported engine series of one pool.
func collectEngineSeries(ch chan<- prometheus.Metric, p *actors.PoolStatus) {
	if p.EngineMetrics == nil || p.PID == nil {
		return
	}
	for _, s := range p.EngineMetrics.Series {
		d := engineDescs[s.Name]
		if d == nil {
			continue
		}
		t := prometheus.GaugeValue
		if s.Counter {
			t = prometheus.CounterValue
		}
		ch <- prometheus.MustNewConstMetric(d, t, s.Value, p.PoolID, p.Engine, p.EngineVersion)
	}
}
