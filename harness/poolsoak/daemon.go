// The daemon under test: `poolsoak daemon -config FILE` runs pool-managerd
// the way cmd/pool-managerd's serve does (config.Load, supervisor.New,
// Start, SIGTERM, Shutdown), and daemonProc starts, kills and stops that
// process from the soak. The config gives every pool a simulator engine
// (`${SELF} sim-engine`, SELF being this binary) with its own misbehaviour.

package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/supervisor"
)

// daemonMain is the "daemon" role.
func daemonMain(args []string) int {
	fs := flag.NewFlagSet("poolsoak daemon", flag.ContinueOnError)
	path := fs.String("config", "", "config `file`")
	if err := fs.Parse(args); err != nil || *path == "" {
		fmt.Fprintln(os.Stderr, "usage: poolsoak daemon -config FILE")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))
	self, err := os.Executable()
	if err != nil {
		logger.Error("daemon.init_failed", "err", err)
		return 1
	}
	d, err := supervisor.New(supervisor.Options{Config: cfg, Logger: logger, SelfExe: self})
	if err != nil {
		logger.Error("daemon.init_failed", "err", err)
		return 1
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if err := d.Start(nil); err != nil {
		logger.Error("daemon.start_failed", "err", err)
		d.Shutdown()
		return 1
	}
	logger.Info("daemon.signal", "signal", (<-sigs).String())
	d.Shutdown()
	return 0
}

// daemonProc is one daemon process started by the soak.
type daemonProc struct {
	*child
	log string
}

// startDaemon starts `self daemon -config cfgPath` in its own process group,
// output appended to logPath, marked with the run id. Pdeathsig takes it
// down if the soak dies.
func startDaemon(self, cfgPath, logPath, runID string) (*daemonProc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own copy
	cmd := exec.Command(self, "daemon", "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(daemonEnv(), runEnv+"="+runID, "GORACE=atexit_sleep_ms=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c, err := spawn(cmd, true)
	if err != nil {
		return nil, fmt.Errorf("start daemon: %w", err)
	}
	return &daemonProc{child: c, log: logPath}, nil
}

// daemonEnv is our environment without what would change the daemon's
// address, auth or systemd behaviour.
func daemonEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "POOL_MANAGERD_ADDR", k == "POOL_MANAGERD_TOKEN", k == "NOTIFY_SOCKET", k == runEnv, k == "GORACE",
			strings.HasPrefix(k, "WATCHDOG_"), strings.HasPrefix(k, "LISTEN_"):
		default:
			out = append(out, kv)
		}
	}
	return out
}

// signal sends sig to the daemon (not its engines: they have their own groups).
func (d *daemonProc) signal(sig syscall.Signal) {
	select {
	case <-d.done:
	default:
		_ = syscall.Kill(d.pid, sig)
	}
}

// wait reports whether the daemon was reaped within limit.
func (d *daemonProc) wait(limit time.Duration) bool {
	select {
	case <-d.done:
		return true
	case <-time.After(limit):
		return false
	}
}

// extraPool is a pool of the adversary's: its id and its whole command.
type extraPool struct {
	id   string
	argv []string
}

// adversaryPools are the pools -plant-escapes and -hostile-api add: one
// whose engine plants escaping children at every start (their pids go to
// escapeLog), and one whose command is an `sh -c` script with the model
// reference inside it, the form a shell injection would use.
func adversaryPools(o options, escapeLog string) []extraPool {
	sim := []string{"sim-engine", "--host", "${HOST}", "--port", "${PORT}", "--model", "${MODEL_REF}"}
	var out []extraPool
	if o.plantEscapes {
		argv := append([]string{"${SELF}", "escaper", escapeLog, "10m"}, sim...)
		out = append(out, extraPool{fmt.Sprintf("e%d-escapes", o.pools), append(argv, "--load-time", "150ms")})
	}
	if o.hostileAPI {
		script := "exec ${SELF} sim-engine --host ${HOST} --port ${PORT} --model ${MODEL_REF} --load-time 100ms"
		out = append(out, extraPool{fmt.Sprintf("h%d-shell", o.pools+1), []string{"/bin/sh", "-c", script}})
	}
	return out
}

// poolKind is one misbehaviour of the simulator; pools cycle through them.
type poolKind struct {
	name  string
	flags []string
	slots int
}

func poolKinds(hangAfter time.Duration) []poolKind {
	return []poolKind{
		{"plain", []string{"--load-time", "200ms"}, 4},
		{"noterm", []string{"--load-time", "100ms", "--ignore-sigterm"}, 0},
		{"forks", []string{"--load-time", "150ms", "--fork-children", "2"}, 2},
		{"hangs", []string{"--load-time", "100ms", "--hang-health-after", hangAfter.String()}, 0},
		{"crashy", []string{"--load-time", "100ms", "--crash-after", "5s", "--crash-after-jitter", "5s"}, 3},
		{"slow", []string{"--load-time", "600ms", "--ignore-sigterm"}, 0},
	}
}

// writeConfig writes the soak's daemon config: fast restarts, short
// liveness and stop grace, a breaker that never opens, and n pools cycling
// through poolKinds, plus the adversary's pools (extra). It returns the
// pool ids.
func writeConfig(path, listen, stateDir string, n int, hangAfter time.Duration, extra []extraPool) ([]string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by poolsoak.
listen: %q
shutdown_deadline: 2s
state_dir: %q
log: {format: json, level: info}
gpu: {require_nvidia: false}
defaults:
  startup_timeout: 10s
  stall_timeout: 5s
  stop_grace: 300ms
  drain_deadline: 1s
  readiness: {timeout: 300ms}
  liveness: {interval: 500ms, timeout: 300ms, failure_threshold: 2}
  restart: {initial: 50ms, multiplier: 2, max: 1s, jitter: 0.1, reset_after: 5s, max_failures: 100000, window: 1m}
pools:
`, listen, stateDir)
	kinds := poolKinds(hangAfter)
	var ids []string
	for i := range n {
		k := kinds[i%len(kinds)]
		id := fmt.Sprintf("p%d-%s", i, k.name)
		ids = append(ids, id)
		argv := []string{"${SELF}", "sim-engine", "--host", "${HOST}", "--port", "${PORT}", "--model", "${MODEL_REF}"}
		argv = append(argv, k.flags...)
		quoted := make([]string, len(argv))
		for j, a := range argv {
			quoted[j] = fmt.Sprintf("%q", a)
		}
		fmt.Fprintf(&b, "  - id: %s\n    engine: llamacpp\n    engine_version: v1\n    model_ref: soak/model-a\n", id)
		fmt.Fprintf(&b, "    slots: %d\n    command: [%s]\n", k.slots, strings.Join(quoted, ", "))
	}
	for _, e := range extra {
		ids = append(ids, e.id)
		quoted := make([]string, len(e.argv))
		for j, a := range e.argv {
			quoted[j] = fmt.Sprintf("%q", a)
		}
		fmt.Fprintf(&b, "  - id: %s\n    engine: llamacpp\n    engine_version: v1\n    model_ref: soak/model-a\n", e.id)
		fmt.Fprintf(&b, "    slots: 1\n    command: [%s]\n", strings.Join(quoted, ", "))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	_, err := config.Load(path) // fail here, not in the daemon, on a bad config
	return ids, err
}
