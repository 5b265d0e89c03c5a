package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"syscall"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/gpu"
)

// hostWarnings lists what makes a valid config fail on this host, which
// -check-config prints as warnings (exit 0): the daemon would start, and the
// pools concerned would fail, or the records would not be kept. Each names
// the config line it concerns where one is known (0 otherwise):
//
//   - a pool's program (command[0]) that is not found or not executable;
//   - an absolute model_ref that does not exist;
//   - require_nvidia: true (the default) while NVML cannot be loaded, so every
//     pool that needs the guardrail would be refused;
//   - a state_dir that cannot be created or written.
//
// Values with a placeholder in them are skipped: they are only known at start.
func hostWarnings(cfg *config.Config, raw []byte) []problem {
	var ws []problem
	for _, p := range cfg.Pools {
		if len(p.Command) > 0 {
			if msg := checkProgram(p.Command[0]); msg != "" {
				ws = append(ws, problem{line: p.Line, msg: fmt.Sprintf("pool %s: command: %s", p.ID, msg)})
			}
		}
		if filepath.IsAbs(p.ModelRef) && !strings.Contains(p.ModelRef, "${") {
			if _, err := os.Stat(p.ModelRef); err != nil {
				ws = append(ws, problem{line: p.Line, msg: fmt.Sprintf("pool %s: model_ref %s does not exist here (%v); the pool will fail to preload", p.ID, p.ModelRef, unwrapPathErr(err))})
			}
		}
	}
	if cfg.GPU.RequireNVIDIA && len(cfg.Pools) > 0 {
		if err := nvmlLoadable(); err != nil {
			ws = append(ws, problem{line: keyLine(raw, "require_nvidia"), msg: fmt.Sprintf("gpu.require_nvidia is true but %v: every pool would be refused; install the NVIDIA driver, or set gpu: {require_nvidia: false} for CPU/dev pools", err)})
		}
	}
	if cfg.StateDir != "" {
		if msg := checkStateDir(cfg.StateDir); msg != "" {
			ws = append(ws, problem{line: keyLine(raw, "state_dir"), msg: "state_dir " + cfg.StateDir + ": " + msg})
		}
	}
	return ws
}

// checkProgram says why argv0 cannot be executed, or "".
func checkProgram(argv0 string) string {
	if strings.Contains(argv0, "${") {
		return ""
	}
	if !strings.Contains(argv0, "/") {
		if _, err := exec.LookPath(argv0); err != nil {
			return fmt.Sprintf("%q is not in PATH (%s)", argv0, os.Getenv("PATH"))
		}
		return ""
	}
	fi, err := os.Stat(argv0)
	switch {
	case err != nil:
		return fmt.Sprintf("%s: %v", argv0, unwrapPathErr(err))
	case fi.IsDir():
		return argv0 + " is a directory"
	case syscall.Access(argv0, accessX) != nil:
		return argv0 + " is not executable"
	}
	return ""
}

// checkStateDir says why dir cannot be used for pid records, or "": it must
// be a writable directory, or creatable in its nearest existing parent.
func checkStateDir(dir string) string {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return "exists and is not a directory"
		}
		if syscall.Access(dir, accessW|accessX) != nil {
			return "is not writable by this user; the daemon keeps no pid records and cannot sweep orphans after a crash"
		}
		return ""
	}
	parent := filepath.Dir(dir)
	for parent != "/" {
		if _, err := os.Stat(parent); err == nil {
			break
		}
		parent = filepath.Dir(parent)
	}
	if syscall.Access(parent, accessW|accessX) != nil {
		return fmt.Sprintf("does not exist and cannot be created (%s is not writable by this user)", parent)
	}
	return ""
}

// nvmlLoadable is gpu.Loadable; tests replace it.
var nvmlLoadable = gpu.Loadable

// access(2) modes.
const (
	accessX = 0x1
	accessW = 0x2
)

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// keyLine is the line of the first "key:" in raw (a YAML key at any depth),
// or 0: the resolved config keeps lines for pools only.
func keyLine(raw []byte, key string) int {
	re := regexp.MustCompile(`(^|[\s{,])` + regexp.QuoteMeta(key) + `\s*:`)
	for i, l := range strings.Split(string(raw), "\n") {
		if c := strings.Index(l, "#"); c >= 0 {
			l = l[:c]
		}
		if re.MatchString(l) {
			return i + 1
		}
	}
	return 0
}
