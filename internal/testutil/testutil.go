// Package testutil holds what several packages' tests share: a buffer that
// logs can be written to from many goroutines, and the helper-process switch
// that lets a test binary run as the engine simulator (so every test engine
// is a real process and nothing has to be built first).
package testutil

import (
	"bytes"
	"os"
	"sync"

	"github.com/pool-managerd/pool-managerd/engine/sim"
)

// SyncBuffer is a bytes.Buffer safe for concurrent Write and String.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// SimSwitch is the environment variable that turns a test binary into the
// engine simulator.
const SimSwitch = "POOL_MANAGERD_SIM"

// SimEnv is the environment a pool needs to run the test binary as its
// engine: the switch, and no 1 s pause at exit in race-built binaries.
func SimEnv() map[string]string {
	return map[string]string{SimSwitch: "1", "GORACE": "atexit_sleep_ms=0"}
}

// RunSimIfChild runs the simulator instead of the tests when this test binary
// was started as an engine; call it first in TestMain. It does not return
// then.
func RunSimIfChild() {
	if os.Getenv(SimSwitch) == "1" {
		os.Exit(sim.Main(os.Args[1:]))
	}
}
