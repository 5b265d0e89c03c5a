package supervisor

import cmap "github.com/orcaman/concurrent-map"

// actorRegistryShards is the shard count of each of the 1024 buckets of
// protoactor's process registry (an orcaman/concurrent-map each). The
// library default, 32, makes 32768 small maps, 2.8 MiB for a daemon that
// holds one actor per pool and a few more; the 1024 buckets spread the
// locking enough on their own.
//
// concurrent-map reads its SHARD_COUNT on every access, so it is set once,
// here, before any actor system exists. Lowering it is safe even for a map
// made before (it would use its first shard only); no other package of the
// daemon uses concurrent-map.
const actorRegistryShards = 1

func init() { cmap.SHARD_COUNT = actorRegistryShards }
