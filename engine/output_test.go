package engine_test

import (
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/engine"
)

// Output signals each line the engine prints, coalesced into one waiting
// value; the engine is never held up by nobody receiving.
func TestProcessOutputSignalsLines(t *testing.T) {
	t.Parallel()
	sink := engine.NewSink(nil, 100, 0, 0)
	p, _ := startSim(t, sink, "--load-time", "300ms")
	select {
	case <-p.Output():
	case <-time.After(30 * time.Second):
		t.Fatal("no output signal for the simulator's first line")
	}
	waitLines(t, sink, "sim-engine: ready at_unix_nano=", 1) // printed with nobody receiving
	select {
	case <-p.Output():
	default:
		t.Fatal("lines printed while nobody received left no value waiting")
	}
	select {
	case <-p.Output():
		t.Fatal("a second value waiting: values must coalesce")
	default:
	}
}
