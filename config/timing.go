// The keys a pool inherits from "defaults": timeouts, probes, restart policy.

package config

import (
	"math"
	"strings"

	"gopkg.in/yaml.v3"
)

var timingKeys = []string{
	"startup_timeout", "stall_timeout", "stop_grace", "drain_deadline",
	"readiness", "liveness", "restart",
}

// timing overlays the inheritable keys present in b onto p. It is used for
// the defaults block (onto the built-ins) and for each pool (onto the
// resolved defaults and its preset), so both obey the same rules.
func (d *decoder) timing(b block, path string, p *Pool) {
	d.durAt(b, path, "startup_timeout", true, &p.StartupTimeout)
	d.durAt(b, path, "stall_timeout", false, &p.StallTimeout) // 0: no stall check
	d.durAt(b, path, "stop_grace", true, &p.StopGrace)
	d.durAt(b, path, "drain_deadline", false, &p.DrainDeadline)
	if v, ok := b["readiness"]; ok {
		d.probe(v, join(path, "readiness"), &p.Readiness, false)
	}
	if v, ok := b["liveness"]; ok {
		d.probe(v, join(path, "liveness"), &p.Liveness, true)
	}
	if v, ok := b["restart"]; ok {
		d.restart(v, join(path, "restart"), &p.Restart)
	}
}

func (d *decoder) probe(v *yaml.Node, path string, pr *Probe, liveness bool) {
	keys := []string{"path", "timeout"}
	if liveness {
		keys = append(keys, "interval", "failure_threshold", "busy_grace")
	}
	b := d.fields(v, path, keys...)
	if d.strAt(b, path, "path", &pr.Path) && !strings.HasPrefix(pr.Path, "/") {
		d.addf(b["path"].Line, join(path, "path"), "must start with \"/\", not %q", pr.Path)
	}
	d.durAt(b, path, "timeout", true, &pr.Timeout)
	d.durAt(b, path, "interval", true, &pr.Interval)
	d.intTo(b, path, "failure_threshold", 1, math.MaxInt32, &pr.FailureThreshold)
	d.durAt(b, path, "busy_grace", false, &pr.BusyGrace) // 0: every timeout counts
}

// restart reads a restart policy. A zero initial or max delay is refused:
// it would restart a crash-looping engine in a tight loop.
func (d *decoder) restart(v *yaml.Node, path string, r *Restart) {
	b := d.fields(v, path, "initial", "multiplier", "max", "jitter", "reset_after", "max_failures", "window")
	d.durAt(b, path, "initial", true, &r.Initial)
	d.floatAt(b, path, "multiplier", 1, math.Inf(1), &r.Multiplier)
	d.durAt(b, path, "max", true, &r.Max)
	d.floatAt(b, path, "jitter", 0, 1, &r.Jitter)
	d.durAt(b, path, "reset_after", false, &r.ResetAfter)
	d.intTo(b, path, "max_failures", 0, math.MaxInt32, &r.MaxFailures)
	d.durAt(b, path, "window", true, &r.Window)
}
