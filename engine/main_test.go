package engine_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/engine/sim"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// simEnv makes a re-executed test binary run the simulator (Fake processes
// are real processes: STYLE lesson 7).
const simEnv = "POOL_MANAGERD_SIM"

// helperEnv makes a re-executed test binary act as a tiny daemon that starts
// one engine, for the Pdeathsig test.
const helperEnv = "POOL_MANAGERD_ENGINE_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(simEnv) == "1" {
		os.Exit(sim.Main(os.Args[1:]))
	}
	if os.Getenv(helperEnv) == "spawn" {
		os.Exit(spawnHelper())
	}
	if os.Getenv(helperEnv) == "launch" {
		os.Exit(launchHelper())
	}
	// A child subreaper gets the SIGKILLed group's orphans, as pid 1 in a
	// container would; the engine reaps them, so "no process left in the
	// group" is checkable at once rather than whenever init gets round to it.
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		fmt.Fprintln(os.Stderr, "prctl(PR_SET_CHILD_SUBREAPER):", errno)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// spawnHelper starts two simulators the way a careless caller might, each
// from a goroutine locked to an OS thread that then exits (the runtime
// destroys that thread): one by Start, one by Launch, the pool actor's way.
// Then it churns a few more such threads. Had a fork happened on a caller's
// thread (or on any thread the runtime may retire), the kernel would fire
// Pdeathsig right there. It prints the engines' pids and whether they
// survived, then waits to be killed.
func spawnHelper() int {
	// Keep the main thread for ourselves: a locked goroutine that exits on the
	// main thread wedges it rather than ending it.
	runtime.LockOSThread()
	self, _ := os.Executable()
	port, err := engine.FreePort("")
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	type result struct {
		p   *engine.Process
		err error
	}
	onLockedThread := func(start func() (*engine.Process, error)) result {
		started := make(chan result)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			p, err := start()
			started <- result{p, err}
		}()
		return <-started
	}
	var procs []*engine.Process
	for _, r := range []result{
		onLockedThread(func() (*engine.Process, error) {
			return engine.Start(engine.Spec{Argv: []string{self, "--port", fmt.Sprint(port)}, Env: simEnviron()})
		}),
		onLockedThread(func() (*engine.Process, error) {
			p, _, err := engine.Launch(engine.LaunchSpec{PoolID: "pdeathsig", Command: []string{"${SELF}", "--port", "${PORT}"},
				SelfExe: self, Env: map[string]string{simEnv: "1", helperEnv: "", "GORACE": "atexit_sleep_ms=0"}})
			return p, err
		}),
	} {
		if r.err != nil {
			fmt.Println("error:", r.err)
			return 1
		}
		procs = append(procs, r.p)
	}
	fmt.Printf("pids=%d,%d\n", procs[0].Pid(), procs[1].Pid())
	done := make(chan struct{})
	for range 32 {
		go func() {
			runtime.LockOSThread()
			done <- struct{}{}
		}()
		<-done
	}
	time.Sleep(200 * time.Millisecond)
	for _, p := range procs {
		select {
		case <-p.Done():
			fmt.Println("engine", p.Pid(), "died during thread churn:", p.Exit())
			return 1
		default:
		}
	}
	fmt.Println("alive after churn")
	time.Sleep(time.Minute)
	return 0
}

// simEnviron is the environment of a simulator. A -race binary sleeps a
// second at exit (the race runtime's atexit_sleep_ms) unless told not to,
// which would slow every stop and crash down.
func simEnviron() []string {
	race := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	return engine.CleanEnv(os.Environ(), map[string]string{simEnv: "1", helperEnv: "", "GORACE": race})
}

// startSim starts the simulator on a free port with args.
func startSim(t *testing.T, sink *engine.Sink, args ...string) (*engine.Process, int) {
	t.Helper()
	return startSimSpec(t, engine.Spec{Sink: sink}, args...)
}

// startSimSpec is startSim with the rest of the Spec (Sink, Clock) given;
// its PoolID, Argv and Env are filled in.
func startSimSpec(t *testing.T, spec engine.Spec, args ...string) (*engine.Process, int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	port, err := engine.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	spec.PoolID, spec.Env = t.Name(), simEnviron()
	spec.Argv = append([]string{self, "--port", fmt.Sprint(port)}, args...)
	p, err := engine.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(0) })
	return p, port
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, timeout, what, cond)
}

// waitLines waits until the sink holds n lines containing substr and
// returns them.
func waitLines(t *testing.T, sink *engine.Sink, substr string, n int) []string {
	t.Helper()
	var found []string
	waitFor(t, 10*time.Second, fmt.Sprintf("%d line(s) with %q", n, substr), func() bool {
		found = found[:0]
		for _, l := range sink.Tail(engine.DefaultRingSize) {
			if strings.Contains(l.Text, substr) {
				found = append(found, l.Text)
			}
		}
		return len(found) >= n
	})
	return found
}

// waitDone waits for p's Done or fails.
func waitDone(t *testing.T, p *engine.Process, timeout time.Duration) engine.Exit {
	t.Helper()
	select {
	case <-p.Done():
		return p.Exit()
	case <-time.After(timeout):
		t.Fatalf("process %d not done after %v", p.Pid(), timeout)
		return engine.Exit{}
	}
}

// groupGone waits until no process is left in process group pgid.
func groupGone(t *testing.T, pgid int) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("process group %d to be empty", pgid), func() bool {
		return syscall.Kill(-pgid, 0) == syscall.ESRCH
	})
}

// TestPdeathsig kills a daemon-like helper with SIGKILL and expects its
// engines (one started by Start, one by Launch, each from a goroutine whose
// OS thread is gone by then) to die with it, even after the helper churned
// its OS threads.
func TestPdeathsig(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(self)
	helper.Env = engine.CleanEnv(os.Environ(), map[string]string{helperEnv: "spawn"})
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })
	lines := bufio.NewScanner(out)
	var pids [2]int
	if !lines.Scan() {
		t.Fatal("helper printed nothing")
	}
	if _, err := fmt.Sscanf(lines.Text(), "pids=%d,%d", &pids[0], &pids[1]); err != nil {
		t.Fatalf("helper said %q", lines.Text())
	}
	for _, pid := range pids {
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	}
	if !lines.Scan() || lines.Text() != "alive after churn" {
		t.Fatalf("helper said %q, want %q", lines.Text(), "alive after churn")
	}

	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	// The engines are re-parented to us (a subreaper): reap them and read how they died.
	for _, pid := range pids {
		var ws syscall.WaitStatus
		waitFor(t, 10*time.Second, fmt.Sprintf("engine %d to die with its parent", pid), func() bool {
			got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
			if err != nil {
				t.Fatalf("wait4(%d): %v", pid, err)
			}
			return got == pid
		})
		if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("engine %d ended with status %v, want killed by SIGKILL", pid, ws)
		}
	}
}
