package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/engine/sim"
)

// The test binary doubles as the engine simulator, as poolbench does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "sim-engine" {
		os.Exit(sim.Main(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestHealthSmoke runs the cheapest measurement for 200 ms so the command
// does not rot. It checks that numbers come out, never how good they are.
func TestHealthSmoke(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := defaultParams(true)
	p.self, p.apiDur = self, 200*time.Millisecond
	var log bytes.Buffer
	rows, failed := runAll(context.Background(), p, []measurement{{"health", time.Minute, measureHealth}}, &log)
	if failed {
		t.Fatalf("health measurement failed:\n%s", log.String())
	}
	if len(rows) == 0 {
		t.Fatal("no rows")
	}
	for _, r := range rows {
		if r.Value <= 0 || r.Baseline == nil || *r.Baseline <= 0 {
			t.Errorf("row %q: value %v, baseline %v: want both > 0", r.Metric, r.Value, r.Baseline)
		}
	}
	if left := leftovers(os.Getenv(runEnv)); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
	var out bytes.Buffer
	printTable(&out, describeMachine(), rows)
	if !strings.Contains(out.String(), "req/s") || !strings.Contains(out.String(), "targets met") {
		t.Errorf("table lacks its figures:\n%s", out.String())
	}
}
