package configs_test

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/configs"
)

func TestDemo(t *testing.T) {
	c, err := config.Parse(configs.Demo, "demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Pools) < 3 {
		t.Fatalf("demo has %d pools, want at least 3", len(c.Pools))
	}
	// -demo must run anywhere: no GPU guardrail, no files, loopback only.
	if c.GPU.RequireNVIDIA || c.StateDir != "" || !config.IsLoopback(c.Listen) {
		t.Errorf("demo must need no GPU, files or network: %+v", c)
	}
	slots := false
	for _, p := range c.Pools {
		if p.Command[0] != "${SELF}" || p.Command[1] != "sim-engine" {
			t.Errorf("%s: command %q does not run the built-in simulator", p.ID, p.Command)
		}
		if p.ModelRef[0] == '/' {
			t.Errorf("%s: absolute model_ref %q would have to exist", p.ID, p.ModelRef)
		}
		slots = slots || p.Slots > 0
	}
	if !slots {
		t.Error("no demo pool sets slots")
	}
	flaky, ok := c.Pool("sim-flaky")
	if !ok || !slices.Contains(flaky.Command, "--crash-after") {
		t.Fatalf("sim-flaky missing or not crashing: %+v", flaky)
	}
	want := config.Restart{Initial: time.Second, Multiplier: 2, Max: 10 * time.Second, Jitter: 0.1,
		ResetAfter: 30 * time.Second, MaxFailures: 30, Window: 5 * time.Minute}
	if flaky.Restart != want || flaky.Liveness.Interval != 2*time.Second {
		t.Errorf("sim-flaky restart %+v, liveness %v", flaky.Restart, flaky.Liveness.Interval)
	}
}

// TestExamples parses every YAML file here, so a new example cannot rot.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("want demo and three examples, got %v (%v)", files, err)
	}
	for _, name := range files {
		if name == "demo.yaml" || name == "local-http.yaml" {
			continue // TestDemo, TestLocalHTTP
		}
		t.Run(name, func(t *testing.T) {
			c, err := config.Load(name)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Pools) == 0 || c.StateDir != "/var/lib/pool-managerd" || !c.GPU.RequireNVIDIA {
				t.Errorf("unexpected config: %+v", c)
			}
			for _, p := range c.Pools {
				if len(p.Devices) == 0 || p.Readiness.Path != "/health" {
					t.Errorf("%s: devices %v, readiness %q", p.ID, p.Devices, p.Readiness.Path)
				}
			}
		})
	}
}

// local-http.yaml must run for any user as it is: no root (no user:), no
// token, no state_dir, no GPU, loopback, and probes that a plain web server
// answers.
func TestLocalHTTP(t *testing.T) {
	c, err := config.Load("local-http.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.GPU.RequireNVIDIA || c.StateDir != "" || c.Auth.TokenFile != "" || !config.IsLoopback(c.Listen) {
		t.Errorf("local-http.yaml must need no GPU, files, token or network: %+v", c)
	}
	for _, p := range c.Pools {
		if p.User != "" || len(p.Devices) > 0 || p.Readiness.Path != "/" || p.Liveness.Path != "/" {
			t.Errorf("%s: user %q, devices %v, readiness %q, liveness %q", p.ID, p.User, p.Devices, p.Readiness.Path, p.Liveness.Path)
		}
	}
}
