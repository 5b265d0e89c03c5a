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
	type ping struct{ n int }
	pids := make([]*actor.PID, 3000) // about three per bucket
	for i := range pids {
		pids[i] = sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
			if m, ok := c.Message().(ping); ok {
				c.Respond(m.n)
			}
		}))
	}
	for i, pid := range pids {
		got, err := sys.Root.RequestFuture(pid, ping{i}, waitLimit).Result()
		if err != nil || got != i {
			t.Fatalf("actor %d answered %v, %v", i, got, err)
		}
	}
}
