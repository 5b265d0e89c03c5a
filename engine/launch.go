// This file launches one engine the way a pool runs it: port, placeholders,
// environment, credentials, containment (cgroup or marker) and pid record,
// in one call.

package engine

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/pool-managerd/pool-managerd/engine/cgroup"
	"github.com/pool-managerd/pool-managerd/engine/pidrec"
	"github.com/pool-managerd/pool-managerd/internal/clock"
)

// LaunchSpec is everything one engine start needs, in plain fields (the pool
// actor maps its config onto it).
type LaunchSpec struct {
	PoolID   string
	Command  []string          // argv with ${PORT} ${HOST} ${MODEL_REF} ${POOL_ID} ${SELF} still in it
	Env      map[string]string // values with placeholders still in them
	ExtraEnv map[string]string // already final (the GPU's CUDA_VISIBLE_DEVICES); wins over Env
	Host     string            // the engine's listen host ("" = 127.0.0.1)
	Port     int               // fixed port, which must be free; 0 = a free port now
	ModelRef string
	SelfExe  string // ${SELF}
	User     string // run as this user; "" = the daemon's
	Dir      string // working directory; "" = the daemon's

	StateDir string         // pid records; "" = none
	Cgroups  *cgroup.Parent // engines' cgroup parent; nil = marker containment only
	Sink     *Sink
	Logger   *slog.Logger // nil discards
	Clock    clock.Clock  // start, exit and output stamps (see Spec.Clock); nil = clock.Real

	// OnStart, when set, is called once the exec succeeded and the pid
	// record is written, with the engine and its base URL, on the
	// engine's supervising goroutine, while Launch has yet to return: a caller
	// that hands the engine to someone else (a message to its actor) does
	// so without waiting for Launch's goroutine to be scheduled again. It
	// must not block. It is not called when Launch fails.
	OnStart func(p *Process, url string)
	// OnDone, when set, is called right after Done is closed, on the
	// goroutine that closed it (the engine's whole cleanup is over and
	// Exit is valid): a caller learns of the end without a goroutine of
	// its own waiting on Done. It must not block.
	OnDone func(p *Process)
}

// Launch starts one engine and returns it with its base URL
// ("http://host:port"):
//
//  1. the port: a fixed one must be free (another server there would answer
//     the readiness probe and pass for the engine); 0 picks a free one;
//  2. ${PORT} ${HOST} ${MODEL_REF} ${POOL_ID} ${SELF} expanded in the command
//     (ExpandAll) and the env values;
//  3. the environment: the daemon's, cleaned (CleanEnv), plus Env, ExtraEnv
//     and the engine's marker (pidrec.EnvVar), which every process it starts
//     inherits;
//  4. the user's credential (LookupCredential);
//  5. containment: a cgroup of its own under Cgroups, which the process is
//     spawned straight into; without one (nil, or it cannot be created) the
//     marker alone;
//  6. the pid record in StateDir, naming pid, start time, marker token and
//     cgroup.
//
// The returned Process undoes all of it when its leader ends (whichever way:
// Stop, Kill, a crash): group SIGKILL, cgroup.kill and the wait for an empty
// cgroup (or SIGKILL to every marked process), cgroup removal, and the pid
// record's removal once nothing is left; Done closes after that. So the
// caller's one stop call is Stop(grace).
func Launch(s LaunchSpec) (*Process, string, error) {
	logger := s.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	host := s.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := s.Port
	var releasePort func() // drops a picked port from the handed-out set; nil: a fixed port
	launched := false      // the engine started: its end releases the port
	if port != 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, "", fmt.Errorf("port %d on %s is not free (another process listens there?): %w", port, host, err)
		}
		ln.Close()
	} else {
		// Held as handed out (pickPort) until the engine is gone, so the
		// next pool's pick cannot be given the same port before this
		// engine binds it.
		p, release, err := pickPort(host, listenPort(host))
		if err != nil {
			return nil, "", fmt.Errorf("pick a free port on %s: %w", host, err)
		}
		port = p
		releasePort = release
		defer func() {
			if !launched {
				release()
			}
		}()
	}
	vars := map[string]string{"PORT": strconv.Itoa(port), "HOST": host, "MODEL_REF": s.ModelRef,
		"POOL_ID": s.PoolID, "SELF": s.SelfExe}
	argv, err := ExpandAll(s.Command, vars)
	if err != nil {
		return nil, "", fmt.Errorf("command: %w", err)
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, "", fmt.Errorf("command: empty")
	}
	extra := map[string]string{}
	for k, v := range s.Env {
		if extra[k], err = Expand(v, vars); err != nil {
			return nil, "", fmt.Errorf("env %s: %w", k, err)
		}
	}
	for k, v := range s.ExtraEnv {
		extra[k] = v
	}
	token := pidrec.NewToken()
	extra[pidrec.EnvVar] = pidrec.EnvValue(s.PoolID, token)
	spec := Spec{PoolID: s.PoolID, Argv: argv, Env: CleanEnv(os.Environ(), extra), Dir: s.Dir, Sink: s.Sink, Clock: s.Clock}
	if s.User != "" {
		if spec.Credential, err = LookupCredential(s.User); err != nil {
			return nil, "", fmt.Errorf("user %q: %w", s.User, err)
		}
	}
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(port))
	cont := &containment{poolID: s.PoolID, token: token, stateDir: s.StateDir, argv0: argv[0], logger: logger, onDone: s.OnDone, releasePort: releasePort}
	if s.OnStart != nil {
		cont.onStart = func(p *Process) { s.OnStart(p, url) }
	}
	if s.Cgroups != nil {
		cg, err := s.Cgroups.New(s.PoolID + "-" + token)
		if err != nil {
			logger.Warn("engine.cgroup_unavailable", "parent", s.Cgroups.Path, "err", err, "containment", ContainMarker)
		} else {
			// Owned by the daemon, not the engine's user: an engine can
			// neither leave it nor hang sub-cgroups in it that would keep
			// it from being removed.
			cont.cg = cg
		}
	}
	proc, err := start(spec, cont)
	if err != nil {
		return nil, "", err // start names the pool, the program and the cause
	}
	launched = true
	return proc, url, nil
}
