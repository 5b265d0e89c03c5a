package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A server without the readiness path (Python's web server answers /health
// with 404) is told about once, in a warning that says which key to set, and
// is then probed about once a second instead of every 10 ms: its access log
// does not fill up while the pool waits for a config fix.
func TestReadinessPathMissingIsNamedOnce(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found: needed as an HTTP server without /health")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "web.yaml")
	writeFile(t, cfg, `shutdown_deadline: 5s
gpu: {require_nvidia: false}
pools:
  - id: web
    engine: other
    model_ref: files
    command: [`+py+`, -m, http.server, --bind, "${HOST}", --directory, `+dir+`, "${PORT}"]
    stop_grace: 2s
`)
	d := startDaemon(t, "-config", cfg)
	defer d.stop()
	var warned []record
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		warned = nil
		for _, r := range d.records() {
			if r.msg() == "probe.readiness_path_missing" {
				warned = append(warned, r)
			}
		}
		if len(warned) > 0 {
			break
		}
		time.Sleep(pollEvery)
	}
	if len(warned) != 1 || !strings.Contains(warned[0].str("detail"), "readiness") || warned[0].num("status") != 404 {
		t.Fatalf("want one probe.readiness_path_missing warning naming readiness:, got %d: %v", len(warned), warned)
	}
	// From now on: about one probe a second. Count the server's own access
	// log lines (python logs each request to stderr) over 3 s.
	before := strings.Count(d.stdout.String(), "GET /health")
	time.Sleep(3 * time.Second)
	probes := strings.Count(d.stdout.String(), "GET /health") - before
	if probes > 10 {
		t.Errorf("%d probes in 3 s after the 404: still hammering a path that does not exist", probes)
	}
	if p, _, err := d.pool("web"); err != nil || p.State != "preload" {
		t.Errorf("pool %+v (%v): want it still in preload", p, err)
	}
	_ = os.Remove(cfg)
}
