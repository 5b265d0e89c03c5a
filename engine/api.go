// Package engine runs one inference engine as a child process. It knows
// nothing of actors or HTTP APIs; the pool actor makes one call per start and
// one per stop.
//
// Where to start reading:
//
//   - Launch (launch.go) is one engine start as a pool runs it: the port,
//     ${PORT} ${HOST} ${MODEL_REF} ${POOL_ID} ${SELF} expanded without a shell
//     (values inside a `sh -c` script are shell-quoted, never code: expand.go),
//     a clean environment (CleanEnv) plus the per-start marker, the pool's
//     user, containment (a cgroup of its own, package cgroup, or the marker
//     alone) and the pid record (package pidrec).
//   - Process (process.go) is the running engine: its own process group,
//     Pdeathsig from a few long-lived spawner threads (spawner.go), and Stop (SIGTERM and SIGCONT to the
//     group, the grace, SIGKILL), after which nothing the engine started is
//     left (cgroup.kill and the wait for an empty cgroup, or SIGKILL to every
//     marked process). Exit says how the leader ended; Classify (classify.go)
//     turns an exit and the engine's last lines into a failure reason and its
//     cause.
//   - Probe, Scrape (probe.go, scrape.go): HTTP health probes and reads of an
//     engine's own Prometheus metrics, on loopback clients without proxies.
//   - Sink and the line writers (sink.go, linewriter.go): the engine's output,
//     line by line, into the daemon's log (bounded in lines and bytes per
//     second) and a ring of recent lines for the logs API.
//   - CheckModel (preflight.go): the reload preflight of a model file.
//
// `go doc ./engine` lists every exported name with its contract.
package engine
