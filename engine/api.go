// Package engine runs one inference engine as a child process: placeholder
// expansion (no shell), its own process group, Pdeathsig, a clean environment,
// line-by-line output forwarding, HTTP probes, and a stop that never leaves a
// zombie or a grandchild behind. It knows nothing of actors or HTTP APIs.
//
// API CONTRACT (other packages code against exactly these names):
//
//	type Spec struct {
//	    PoolID string
//	    Argv   []string          // expanded argv; Argv[0] is looked up in PATH if it has no slash
//	    Env    []string          // complete child environment (see CleanEnv)
//	    Dir    string            // "" = daemon's cwd
//	    Credential *syscall.Credential // nil = same user
//	    Sink   *Sink             // receives output lines; nil = discard
//	}
//	type Exit struct {            // how a process ended
//	    Code   int                // -1 when killed by a signal
//	    Signal string             // "SIGKILL" etc, "" when exited normally
//	    At     time.Time
//	    OOMKilled bool            // cgroup memory.events oom_kill rose
//	}
//	func (e Exit) String() string  // "exit code 3" / "killed by SIGKILL"
//
//	func Start(spec Spec) (*Process, error)   // fork/exec in its own pgid, Pdeathsig=SIGKILL
//	func (p *Process) Pid() int
//	func (p *Process) StartedAt() time.Time
//	func (p *Process) Done() <-chan struct{}  // closed after the leader is reaped and pipes drained (bounded by WaitDelay)
//	func (p *Process) Exit() Exit             // valid after Done
//	func (p *Process) Stop(grace time.Duration) Exit // SIGTERM to -pgid, wait grace, SIGKILL to -pgid, wait; always SIGKILLs the group after the leader is reaped; idempotent and safe concurrently
//	func (p *Process) Kill()                  // SIGKILL to -pgid now, non-blocking
//	func (p *Process) LastActivity() time.Time // time of the last output line (or StartedAt)
//	func (p *Process) Containment() string   // "cgroup" | "marker" (Launch) | "group" (plain Start)
//
//	type LaunchSpec struct { PoolID; Command; Env; ExtraEnv; Host; Port; ModelRef; SelfExe; User; Dir;
//	                         StateDir; Cgroups *cgroup.Parent; Sink; Logger }
//	func Launch(s LaunchSpec) (*Process, string, error) // one engine start as a pool runs it: port, placeholders,
//	    // env + marker, credential, own cgroup (or marker only), pid record; the Process undoes all of it when
//	    // its leader ends (cgroup.kill + wait empty + rmdir, or SIGKILL to every marked process; record removed
//	    // once nothing is left). Stop also sends SIGCONT right after SIGTERM.
//
//	func Expand(s string, vars map[string]string) (string, error) // ${NAME} replaced anywhere inside s; unknown name -> error
//	func ExpandAll(args []string, vars map[string]string) ([]string, error) // values in a `sh -c` script are shell-quoted, never code
//	func CleanEnv(base []string, extra map[string]string) []string // base minus NOTIFY_SOCKET, WATCHDOG_*, LISTEN_*, plus extra (sorted, extra wins)
//	func FreePort(host string) (int, error)   // a free TCP port on host
//
//	type ProbeResult struct { Status int; Err error; Duration time.Duration }
//	func (r ProbeResult) OK() bool            // Err == nil && 200 <= Status < 300
//	func Probe(ctx context.Context, client *http.Client, url string, timeout time.Duration) ProbeResult
//	func NewProbeClient() *http.Client        // keep-alive client tuned for loopback probing
//
//	type Line struct { At time.Time; Stream string; Text string } // JSON: at_ms, stream, text
//	type Sink struct { ... }                  // per-pool: rate-limited slog forwarding + ring of last lines
//	func NewSink(logger *slog.Logger, ringSize int, ratePerSec int, burst int) *Sink
//	func (s *Sink) Write(stream, text string) // called per line (no trailing newline)
//	func (s *Sink) Tail(n int) []Line         // last n lines, oldest first
//	func (s *Sink) LastLine(stream string) string // last line on that stream ("" if none)
//	func (s *Sink) Dropped() uint64           // lines not logged due to rate limit (still kept in the ring)
//	func (s *Sink) SetOnDrop(func())          // optional callback per dropped line (metrics)
package engine
