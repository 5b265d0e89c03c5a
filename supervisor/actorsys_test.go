package supervisor

import (
	"testing"

	"github.com/asynkron/protoactor-go/actor"
)

// The daemon's actor systems have a registry of one-shard buckets, and
// actors are still found by their PIDs when many share a bucket.
func TestActorRegistryIsSmallAndWorks(t *testing.T) {
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	buckets := sys.ProcessRegistry.LocalPIDs.LocalPIDs
	for i, b := range buckets {
		if len(b) != actorRegistryShards {
			t.Fatalf("bucket %d has %d shards, want %d", i, len(b), actorRegistryShards)
		}
	}
	pids := make([]*actor.PID, 3000) // about three per bucket
	for i := range pids {
		pids[i] = sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
	}
	for i, pid := range pids {
		if p, ok := sys.ProcessRegistry.Get(pid); !ok || p == sys.DeadLetter {
			t.Fatalf("actor %d (%s) not found in the registry", i, pid.Id)
		}
	}
}
