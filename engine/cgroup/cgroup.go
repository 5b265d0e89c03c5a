// Package cgroup contains engines in cgroup v2 the way systemd and the
// kubelet do: every engine gets a cgroup of its own under a parent the daemon
// may write (its own delegated subtree, or a configured one), the engine is
// spawned straight into it (clone3 CLONE_INTO_CGROUP), and a stop ends with
// cgroup.kill and a wait until cgroup.events says "populated 0". Whatever the
// engine's children did to their session or process group, they cannot leave
// the cgroup (only a process allowed to write other cgroups' cgroup.procs
// can, and an engine running as root is one: run engines as another user).
//
// The package works on plain paths so that both the engine package and the
// start-up sweep (engine/pidrec) can use it.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// EnginePrefix starts the name of every engine cgroup. The sweep only ever
// kills cgroups whose name starts with it, so a record cannot point it at
// any other cgroup of the host.
const EnginePrefix = "pm-engine-"

// SupervisorLeaf is the leaf the daemon moves itself into before it enables
// controllers for its own cgroup's children (cgroup v2's "no internal
// processes" rule: a cgroup that hands controllers to children holds no
// process itself).
const SupervisorLeaf = "supervisor"

// Off, Auto are the special values of the daemon's cgroup_parent setting;
// anything else is an absolute path under a cgroup2 mount.
const (
	Off  = "off"
	Auto = "auto"
)

// Parent is the cgroup under which every engine gets its own cgroup.
type Parent struct {
	Path   string // absolute directory in the cgroup2 mount
	Memory bool   // the memory controller is enabled for its children: memory.events tells OOM kills
}

// Mount returns the mount point of the cgroup2 hierarchy from
// /proc/self/mountinfo ("" if none): /sys/fs/cgroup on a unified host,
// /sys/fs/cgroup/unified on a hybrid one.
func Mount() string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	return parseMountinfo(bufio.NewScanner(f))
}

func parseMountinfo(sc *bufio.Scanner) string {
	for sc.Scan() {
		// 41 23 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) >= 5 && len(qf) >= 1 && qf[0] == "cgroup2" && pf[3] == "/" {
			return unescapeMount(pf[4])
		}
	}
	return ""
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Own returns the daemon's own cgroup v2 path ("/system.slice/x.service")
// from /proc/self/cgroup, or "" when it has none.
func Own() string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	return ""
}

// Setup resolves the daemon's cgroup_parent setting into the parent of the
// engines' cgroups; nil (and no error) means no cgroups: engines are
// contained by the environment marker only.
//
//   - "off": nil.
//   - "" or "auto": the daemon's own cgroup when it may write it (under
//     systemd that takes Delegate=yes); when the daemon sits in the root
//     cgroup, a "pool-managerd" child of it. No usable cgroup is not an
//     error: nil, and a log line says why.
//   - an absolute path under the cgroup2 mount: that cgroup (created if
//     missing); any problem is an error, since the operator asked for it.
//
// Where the parent offers the memory controller, Setup enables it for the
// engines' cgroups, first moving the daemon into a "supervisor" leaf when it
// would otherwise sit in the parent itself; when that fails, engines still
// get cgroups, just without OOM reporting.
func Setup(setting string, logger *slog.Logger) (*Parent, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if setting == Off {
		return nil, nil
	}
	mount := Mount()
	if setting == "" || setting == Auto {
		if mount == "" {
			logger.Info("cgroup.unavailable", "reason", "no cgroup2 mount in /proc/self/mountinfo")
			return nil, nil
		}
		own := Own()
		if own == "" {
			logger.Info("cgroup.unavailable", "reason", "no cgroup v2 entry in /proc/self/cgroup")
			return nil, nil
		}
		dir := filepath.Join(mount, own)
		if own == "/" {
			dir = filepath.Join(mount, "pool-managerd")
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				logger.Info("cgroup.unavailable", "reason", "cannot create a cgroup under the root cgroup", "path", dir, "err", err)
				return nil, nil
			}
		} else if !writable(dir) {
			logger.Info("cgroup.unavailable", "reason", "the daemon's own cgroup is not writable (not delegated; systemd: Delegate=yes)", "path", dir)
			return nil, nil
		}
		p := &Parent{Path: dir}
		p.enableMemory(dir == filepath.Join(mount, own) && own != "/", logger)
		return p, nil
	}
	if !filepath.IsAbs(setting) || filepath.Clean(setting) != setting {
		return nil, fmt.Errorf("cgroup_parent %q: must be %q, %q or a clean absolute path", setting, Auto, Off)
	}
	if mount == "" {
		return nil, fmt.Errorf("cgroup_parent %q: no cgroup2 file system is mounted", setting)
	}
	if !within(mount, setting) || setting == mount {
		return nil, fmt.Errorf("cgroup_parent %q: not a cgroup below the cgroup2 mount %s", setting, mount)
	}
	if err := os.MkdirAll(setting, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup_parent %q: %w", setting, err)
	}
	if !writable(setting) {
		return nil, fmt.Errorf("cgroup_parent %q: not writable by the daemon", setting)
	}
	p := &Parent{Path: setting}
	p.enableMemory(filepath.Join(mount, Own()) == setting, logger)
	return p, nil
}

// within reports whether path is dir or below it.
func within(dir, path string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

func writable(dir string) bool {
	return syscall.Access(dir, 2) == nil && syscall.Access(filepath.Join(dir, "cgroup.procs"), 2) == nil
}

// enableMemory turns on the memory controller for the parent's children
// when the parent has it. selfInside says the daemon runs in the parent
// itself, so it first moves into the supervisor leaf.
func (p *Parent) enableMemory(selfInside bool, logger *slog.Logger) {
	ctrl, _ := os.ReadFile(filepath.Join(p.Path, "cgroup.controllers"))
	if !slices.Contains(strings.Fields(string(ctrl)), "memory") {
		return
	}
	sub, _ := os.ReadFile(filepath.Join(p.Path, "cgroup.subtree_control"))
	if slices.Contains(strings.Fields(string(sub)), "memory") {
		p.Memory = true
		return
	}
	if selfInside {
		leaf := filepath.Join(p.Path, SupervisorLeaf)
		if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			logger.Warn("cgroup.memory_unavailable", "reason", "cannot create the supervisor leaf", "path", leaf, "err", err)
			return
		}
		if err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			logger.Warn("cgroup.memory_unavailable", "reason", "cannot move the daemon into its leaf", "path", leaf, "err", err)
			return
		}
	}
	if err := os.WriteFile(filepath.Join(p.Path, "cgroup.subtree_control"), []byte("+memory"), 0); err != nil {
		logger.Warn("cgroup.memory_unavailable", "reason", "cannot enable the memory controller", "path", p.Path, "err", err)
		return
	}
	p.Memory = true
}

// RemoveStale removes the empty engine cgroups (EnginePrefix*) under the
// parent that were created more than olderThan ago: a daemon killed between
// creating an engine's cgroup and recording the engine leaves one behind,
// with no record for the sweep to find. A populated cgroup, or a fresh one
// (another daemon sharing the parent may be about to spawn into it), is
// left alone. It returns how many it removed.
func (p *Parent) RemoveStale(olderThan time.Duration) int {
	entries, err := os.ReadDir(p.Path)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), EnginePrefix) {
			continue
		}
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < olderThan {
			continue
		}
		cg := Open(filepath.Join(p.Path, e.Name()))
		if pop, err := cg.Populated(); err != nil || pop {
			continue
		}
		if cg.Remove() == nil {
			n++
		}
	}
	return n
}

// Cgroup is one engine's cgroup.
type Cgroup struct {
	Path   string
	memory bool
}

// New creates the cgroup parent/EnginePrefix+name for one engine.
func (p *Parent) New(name string) (*Cgroup, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") {
		return nil, fmt.Errorf("cgroup: invalid name %q", name)
	}
	path := filepath.Join(p.Path, EnginePrefix+name)
	if err := os.Mkdir(path, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	return &Cgroup{Path: path, memory: p.Memory}, nil
}

// Open returns the cgroup at path (for the sweep).
func Open(path string) *Cgroup { return &Cgroup{Path: path} }

// OpenFD opens the cgroup directory for SysProcAttr.CgroupFD.
func (c *Cgroup) OpenFD() (*os.File, error) {
	return os.OpenFile(c.Path, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
}

// Add moves pid into the cgroup (the fallback when clone3 could not spawn
// into it).
func (c *Cgroup) Add(pid int) error {
	if err := os.WriteFile(filepath.Join(c.Path, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	return nil
}

// Procs lists the processes in the cgroup.
func (c *Cgroup) Procs() []int {
	b, err := os.ReadFile(filepath.Join(c.Path, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for f := range strings.FieldsSeq(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Kill SIGKILLs every process in the cgroup (cgroup.kill). On kernels
// before 5.14, which lack cgroup.kill, each listed process is SIGKILLed
// instead; WaitEmpty then repeats that until none is left.
func (c *Cgroup) Kill() error {
	err := os.WriteFile(filepath.Join(c.Path, "cgroup.kill"), []byte("1"), 0)
	if err == nil {
		return nil
	}
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(c.Path); serr != nil {
			return nil // the cgroup itself is gone: nothing to kill
		}
		for _, pid := range c.Procs() {
			_ = syscall.Kill(pid, syscall.SIGKILL) // it is in our cgroup now
		}
		return nil
	}
	return fmt.Errorf("cgroup: kill: %w", err)
}

// Signal sends sig to every process in the cgroup, through a pidfd so a
// process that exits meanwhile is never confused with a stranger.
func (c *Cgroup) Signal(sig syscall.Signal) {
	for _, pid := range c.Procs() {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Signal(sig)
			_ = p.Release()
		}
	}
}

// Populated reads cgroup.events; a cgroup that no longer exists is empty.
// A zombie is not a member: a process leaves its cgroup when it exits, so
// the cgroup of an engine whose only process has exited reads empty even
// before its parent reaps it.
func (c *Cgroup) Populated() (bool, error) {
	b, err := readSmall(filepath.Join(c.Path, "cgroup.events"))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cgroup: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "populated "); ok {
			return strings.TrimSpace(v) != "0", nil
		}
	}
	return false, fmt.Errorf("cgroup: no populated line in %s/cgroup.events", c.Path)
}

// readSmall reads a small kernel file in one read (open, read, close:
// cgroup.events is a few dozen bytes, and a kernfs file is read whole).
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf [512]byte
	n, err := f.Read(buf[:])
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// WaitEmpty kills what is in the cgroup and polls until cgroup.events says
// "populated 0" or timeout passes; it reports whether the cgroup is empty.
// The first check comes before any kill or pause, so a cgroup that is
// already empty (the common end of an engine: its only process has exited)
// costs one read. reap, when not nil, is called with each listed pid on
// every poll (the daemon reaps the ones re-parented to it when it is a
// subreaper); with a nil reap the processes are not listed.
func (c *Cgroup) WaitEmpty(timeout time.Duration, reap func(pid int)) bool {
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for {
		if reap != nil {
			for _, pid := range c.Procs() {
				reap(pid)
			}
		}
		pop, err := c.Populated()
		if err == nil && !pop {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		_ = c.Kill() // a process forked while cgroup.kill ran is caught by the next one
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// OOMKills is memory.events' oom_kill count (0 without the memory
// controller).
func (c *Cgroup) OOMKills() uint64 {
	if !c.memory {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(c.Path, "memory.events"))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// Remove deletes the (empty) cgroup; a missing one is not an error.
func (c *Cgroup) Remove() error {
	if err := syscall.Rmdir(c.Path); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("cgroup: remove %s: %w", c.Path, err)
	}
	return nil
}

// ValidEnginePath reports whether path may name an engine cgroup of a
// record: a clean absolute path below the cgroup2 mount whose last element
// starts with EnginePrefix, and not the daemon's own cgroup or an ancestor
// of it (cgroup.kill there would kill the daemon).
func ValidEnginePath(path string) error {
	mount := Mount()
	switch {
	case mount == "":
		return errors.New("no cgroup2 mount")
	case !filepath.IsAbs(path) || filepath.Clean(path) != path:
		return fmt.Errorf("cgroup %q is not a clean absolute path", path)
	case !within(mount, path) || path == mount:
		return fmt.Errorf("cgroup %q is not below the cgroup2 mount %s", path, mount)
	case !strings.HasPrefix(filepath.Base(path), EnginePrefix):
		return fmt.Errorf("cgroup %q is not an engine cgroup (%s*)", path, EnginePrefix)
	}
	if own := Own(); own != "" && within(path, filepath.Join(mount, own)) {
		return fmt.Errorf("cgroup %q holds the daemon itself", path)
	}
	return nil
}
