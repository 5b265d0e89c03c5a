// Measurement "llama": the real llama.cpp llama-server, next to a bare
// supervisor doing the same with the same binary in the same run: ready
// lag, crash → ready, reload wait:true. Skipped when no llama-server is
// found ($POOL_MANAGERD_LLAMA_SERVER, else shared/engines/llama.cpp in a
// folder beside the working directory or beside any folder above it, as
// internal/testutil.FindLlama looks).

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/engine"
)

// llamaLoadedLine is what llama-server prints right after it switched
// /health to 200: the reference point of its ready lag.
const llamaLoadedLine = "main: model loaded"

// llamaLogPause lets the daemon's engine-log rate limit refill between runs
// (llama-server prints about 150 lines per start), so the loaded line is
// always forwarded to the log, where poolbench times it.
const llamaLogPause = 800 * time.Millisecond

// llamaFiles finds llama-server and its two tiny models.
func llamaFiles() (bin, modelA, modelB string, err error) {
	var cands []string
	if b := os.Getenv("POOL_MANAGERD_LLAMA_SERVER"); b != "" {
		cands = append(cands, b)
	} else {
		if wd, err := os.Getwd(); err == nil {
			for dir := wd; ; dir = filepath.Dir(dir) {
				cands = append(cands, filepath.Join(filepath.Dir(dir), "shared", "engines", "llama.cpp", "llama-server"))
				if dir == filepath.Dir(dir) {
					break
				}
			}
		}
	}
	for _, c := range cands {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			models := filepath.Dir(c)
			if m := os.Getenv("POOL_MANAGERD_LLAMA_MODELS"); m != "" {
				models = m
			}
			a, b := filepath.Join(models, "tiny-a.gguf"), filepath.Join(models, "tiny-b.gguf")
			for _, m := range []string{a, b} {
				if _, err := os.Stat(m); err != nil {
					return "", "", "", fmt.Errorf("model %s not found", m)
				}
			}
			return c, a, b, nil
		}
	}
	return "", "", "", fmt.Errorf("llama-server not found (set POOL_MANAGERD_LLAMA_SERVER; looked at %s)", strings.Join(cands, ", "))
}

func llamaArgs(bin, model string, port string) []string {
	return []string{bin, "-m", model, "--host", "127.0.0.1", "--port", port, "-c", "256", "--parallel", "2", "--threads-http", "4"}
}

func measureLlama(ctx context.Context, p params) ([]row, error) {
	bin, modelA, modelB, err := llamaFiles()
	if err != nil {
		return []row{newRow("llama", "skipped: "+err.Error(), 0, "", -1, "", nil)}, nil
	}
	const id = "llama"
	pool := config.Pool{
		ID: id, Engine: "llamacpp", EngineVersion: "b4747", ModelRef: modelA,
		Command:        llamaArgs(bin, "${MODEL_REF}", "${PORT}"),
		Host:           "127.0.0.1",
		StartupTimeout: stateWait, StallTimeout: stateWait, StopGrace: 5 * time.Second, DrainDeadline: 10 * time.Second,
		Readiness: config.Probe{Path: "/health", Timeout: time.Second},
		Liveness:  config.Probe{Path: "/health", Interval: 5 * time.Second, Timeout: 2 * time.Second, FailureThreshold: 3},
		Restart: config.Restart{Initial: 0, Multiplier: 2, Max: 0, Jitter: 0,
			ResetAfter: 10 * time.Minute, MaxFailures: 1 << 30, Window: 10 * time.Minute},
		ReloadAllowed: []string{filepath.Dir(modelA) + "/"},
	}
	b, err := startDaemon(ctx, p.self, pool)
	if err != nil {
		return nil, err
	}
	defer b.close()
	var lag, crash, reload dist
	for i := 0; i < p.llamaRuns; i++ {
		if err := sleep(ctx, llamaLogPause); err != nil {
			return nil, err
		}
		l, err := llamaReadyRun(ctx, b, id)
		if err != nil {
			return nil, fmt.Errorf("ready run %d: %w", i, err)
		}
		lag = append(lag, l)
	}
	for i := 0; i < p.llamaRuns; i++ {
		if err := sleep(ctx, llamaLogPause); err != nil {
			return nil, err
		}
		c, err := llamaCrashRun(ctx, b, id)
		if err != nil {
			return nil, fmt.Errorf("crash run %d: %w", i, err)
		}
		crash = append(crash, c)
	}
	for i := 0; i < p.llamaRuns; i++ {
		model := []string{modelB, modelA}[i%2]
		if err := sleep(ctx, llamaLogPause); err != nil {
			return nil, err
		}
		t0 := time.Now()
		var res struct {
			Result string `json:"result"`
		}
		if err := b.expect(ctx, 200, "POST", "/v1/pools/"+id+"/reload", map[string]any{"new_model_ref": model, "wait": true}, &res); err != nil {
			return nil, b.failure(fmt.Errorf("reload run %d: %w", i, err))
		}
		if res.Result != "succeeded" {
			return nil, b.failure(fmt.Errorf("reload run %d: %s", i, res.Result))
		}
		reload = append(reload, time.Since(t0))
	}
	b.close()

	var bareFresh, bareKeep, bareCrash, bareReload dist
	for i := 0; i < p.llamaRuns; i++ {
		r, err := bareLlama(ctx, bin, modelA, modelB)
		if err != nil {
			return nil, fmt.Errorf("bare run %d: %w", i, err)
		}
		bareFresh, bareKeep = append(bareFresh, r.freshLag), append(bareKeep, r.keepLag)
		bareCrash, bareReload = append(bareCrash, r.crash), append(bareReload, r.reload)
	}
	rows := latencyRows("llama", "ready-detection lag (llama-server \"model loaded\" → SSE event)", lag, bareFresh,
		"bare 10 ms poller, fresh connections", atMost(5), atMost(15))
	rows = append(rows,
		newRow("llama", "context: bare 10 ms poller, kept-alive connection, lag p50", ms(bareKeep.pct(50)), "ms", -1, "", nil),
		newRow("llama", "context: bare 10 ms poller, kept-alive connection, lag p99", ms(bareKeep.pct(99)), "ms", -1, "", nil),
		newRow("llama", "crash (SIGKILL) → ready event p50", ms(crash.pct(50)), "ms", ms(bareCrash.pct(50)), "bare SIGKILL→Wait→exec→200", nil),
		newRow("llama", "crash (SIGKILL) → ready event p99", ms(crash.pct(99)), "ms", ms(bareCrash.pct(99)), "bare SIGKILL→Wait→exec→200", nil),
		newRow("llama", "reload wait:true → 200 p50", ms(reload.pct(50)), "ms", ms(bareReload.pct(50)), "bare SIGTERM→Wait→exec→200", nil),
		newRow("llama", "reload wait:true → 200 p99", ms(reload.pct(99)), "ms", ms(bareReload.pct(99)), "bare SIGTERM→Wait→exec→200", nil),
	)
	return rows, nil
}

// llamaReadyRun stops the pool, starts it again and returns how long after
// the daemon read "model loaded" poolbench got the ready event.
func llamaReadyRun(ctx context.Context, b *benchDaemon, id string) (time.Duration, error) {
	if err := b.expect(ctx, 202, "POST", "/v1/pools/"+id+"/drain", map[string]int{"deadline_ms": 0}, nil); err != nil {
		return 0, err
	}
	if _, err := b.waitState(ctx, id, actors.StateStopped); err != nil {
		return 0, err
	}
	for len(b.loaded) > 0 {
		<-b.loaded
	}
	mark := b.events.mark()
	if err := b.expect(ctx, 202, "POST", "/v1/pools/"+id+"/start", nil, nil); err != nil {
		return 0, err
	}
	ev, err := b.events.wait(ctx, mark, id, actors.StateReady, stateWait)
	if err != nil {
		return 0, b.failure(err)
	}
	select {
	case at := <-b.loaded:
		return ev.at.Sub(at), nil
	case <-time.After(time.Second):
		return 0, b.failure(errors.New("no forwarded \"" + llamaLoadedLine + "\" line (rate-limited away?)"))
	}
}

// llamaCrashRun SIGKILLs the ready engine and returns kill → ready event.
func llamaCrashRun(ctx context.Context, b *benchDaemon, id string) (time.Duration, error) {
	if _, err := b.waitState(ctx, id, actors.StateReady); err != nil {
		return 0, err
	}
	st, err := b.status(ctx, id)
	if err != nil {
		return 0, err
	}
	if st.PID == nil {
		return 0, fmt.Errorf("pool %s is ready without a pid", id)
	}
	mark := b.events.mark()
	killed := time.Now()
	if err := syscall.Kill(*st.PID, syscall.SIGKILL); err != nil {
		return 0, err
	}
	if _, err := b.events.wait(ctx, mark, id, actors.StatePreload, stateWait); err != nil {
		return 0, b.failure(err)
	}
	ev, err := b.events.wait(ctx, mark, id, actors.StateReady, stateWait)
	if err != nil {
		return 0, b.failure(err)
	}
	return ev.at.Sub(killed), nil
}

// bareLlamaTimes is one bare run.
type bareLlamaTimes struct {
	freshLag, keepLag time.Duration // "model loaded" read → 200 seen, by each poller
	crash             time.Duration // SIGKILL → the next engine's 200 seen (fresh poller)
	reload            time.Duration // SIGTERM → the other model's 200 seen (fresh poller)
}

// bareLlama is a minimal supervisor of llama-server: exec with a stderr
// pipe it reads line by line, a 10 ms poller. One run: start (fresh
// poller), start (kept-alive poller), SIGKILL → exec → 200, SIGTERM →
// exec the other model → 200.
func bareLlama(ctx context.Context, bin, modelA, modelB string) (bareLlamaTimes, error) {
	var t bareLlamaTimes
	s, err := startBareLlama(bin, modelA)
	if err != nil {
		return t, err
	}
	if t.freshLag, err = s.lag(ctx, true); err != nil {
		s.kill()
		return t, err
	}
	s.kill()
	if err := sleep(ctx, 100*time.Millisecond); err != nil {
		return t, err
	}
	if s, err = startBareLlama(bin, modelA); err != nil {
		return t, err
	}
	if t.keepLag, err = s.lag(ctx, false); err != nil {
		s.kill()
		return t, err
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		model := modelA
		if sig == syscall.SIGTERM {
			model = modelB
		}
		t0 := time.Now()
		_ = s.cmd.Process.Signal(sig)
		select {
		case <-s.waited:
		case <-time.After(stateWait):
			s.kill()
			return t, fmt.Errorf("bare llama-server did not exit on %s", sig)
		}
		if s, err = startBareLlama(bin, model); err != nil {
			return t, err
		}
		at := pollHealthClient(ctx, s.url, freshClient())
		if at.IsZero() {
			s.kill()
			return t, errors.New("bare llama-server never answered 200")
		}
		if sig == syscall.SIGKILL {
			t.crash = at.Sub(t0)
		} else {
			t.reload = at.Sub(t0)
		}
	}
	s.kill()
	return t, nil
}

type bareLlamaProc struct {
	cmd    *exec.Cmd
	url    string
	loaded chan time.Time
	waited chan struct{}
}

func startBareLlama(bin, model string) (*bareLlamaProc, error) {
	port, err := engine.FreePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	argv := llamaArgs(bin, model, strconv.Itoa(port))
	s := &bareLlamaProc{cmd: exec.Command(argv[0], argv[1:]...), url: fmt.Sprintf("http://127.0.0.1:%d/health", port),
		loaded: make(chan time.Time, 1), waited: make(chan struct{})}
	s.cmd.Env = append(os.Environ(), "POOLBENCH_LLAMA=1")
	pr, pw := io.Pipe()
	s.cmd.Stderr, s.cmd.Stdout = pw, io.Discard
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), llamaLoadedLine) {
				select {
				case s.loaded <- time.Now():
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	if err := startOwned(s.cmd); err != nil {
		return nil, err
	}
	go func() {
		_ = s.cmd.Wait()
		_ = pw.Close()
		untrack(s.cmd.Process.Pid)
		close(s.waited)
	}()
	return s, nil
}

// lag polls until 200 and returns how long after the loaded line it came.
func (s *bareLlamaProc) lag(ctx context.Context, fresh bool) (time.Duration, error) {
	c := freshClient()
	if !fresh {
		c = &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableCompression: true}}
	}
	at := pollHealthClient(ctx, s.url, c)
	if at.IsZero() {
		return 0, errors.New("bare llama-server never answered 200")
	}
	select {
	case l := <-s.loaded:
		return at.Sub(l), nil
	case <-time.After(time.Second):
		return 0, errors.New("bare llama-server printed no \"" + llamaLoadedLine + "\" line")
	}
}

func (s *bareLlamaProc) kill() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.waited
}

func freshClient() *http.Client {
	return &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableCompression: true, DisableKeepAlives: true}}
}
