package main

import (
	"regexp"
	"slices"
	"testing"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/configs"
)

// The demo's comment on sim-flaky states the crash timing its flags set.
func TestDemoCrashCommentMatchesFlags(t *testing.T) {
	m := regexp.MustCompile(`Crashes (\S+) \(plus up to (\S+) of jitter\)`).FindSubmatch(configs.Demo)
	if m == nil {
		t.Fatal("configs/demo.yaml: no `Crashes N (plus up to M of jitter)` comment")
	}
	c, err := config.Parse(configs.Demo, "demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	flaky, ok := c.Pool("sim-flaky")
	if !ok {
		t.Fatal("no sim-flaky pool")
	}
	flag := func(name string) string {
		if i := slices.Index(flaky.Command, name); i >= 0 && i+1 < len(flaky.Command) {
			return flaky.Command[i+1]
		}
		return ""
	}
	if got, want := string(m[1])+" + "+string(m[2]), flag("--crash-after")+" + "+flag("--crash-after-jitter"); got != want {
		t.Errorf("comment says %s, flags say %s", got, want)
	}
}
