package supervisor

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/gpu"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// The test binary doubles as the engine simulator (see actors' TestMain).
func TestMain(m *testing.M) {
	testutil.RunSimIfChild()
	os.Exit(m.Run())
}

const waitLimit = 30 * time.Second

func simPool(id string, flags ...string) config.Pool {
	cmd := append([]string{os.Args[0], "--host", "${HOST}", "--port", "${PORT}", "--model", "${MODEL_REF}",
		"--parallel", "1000"}, flags...) // /props total_slots: the sim must not bound leases where a test means no limit
	return config.Pool{
		ID: id, Engine: "llamacpp", EngineVersion: "v1", ModelRef: "test/" + id,
		Command: cmd, Env: testutil.SimEnv(), Host: "127.0.0.1",
		StartupTimeout: 20 * time.Second, StopGrace: 2 * time.Second, DrainDeadline: 10 * time.Second,
		Readiness: config.Probe{Path: "/health", Timeout: time.Second},
		Liveness:  config.Probe{Path: "/health", Interval: time.Hour, Timeout: time.Second, FailureThreshold: 3},
		Restart: config.Restart{Initial: 10 * time.Millisecond, Multiplier: 2, Max: time.Second, Jitter: 0.1,
			ResetAfter: time.Hour, MaxFailures: 5, Window: time.Hour},
	}
}

type testDaemon struct {
	*Daemon
	t    testing.TB
	base string
	logs *testutil.SyncBuffer
}

func startDaemon(t testing.TB, token string, pools ...config.Pool) *testDaemon {
	t.Helper()
	return startDaemonWith(t, func(o *Options) { o.Token = token }, pools...)
}

// startDaemonWith is startDaemon with options set by opt.
func startDaemonWith(t testing.TB, opt func(*Options), pools ...config.Pool) *testDaemon {
	t.Helper()
	cfg := &config.Config{Listen: "127.0.0.1:0", ShutdownDeadline: 5 * time.Second, Pools: pools,
		Log: config.Log{Format: "json", Level: "debug"}}
	logs := &testutil.SyncBuffer{}
	var w io.Writer = logs
	if testing.Verbose() {
		w = io.MultiWriter(logs, os.Stderr)
	}
	o := Options{Config: cfg, Logger: slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
		SelfExe: os.Args[0], Guard: gpu.NoGuard{}}
	opt(&o)
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ln); err != nil {
		t.Fatal(err)
	}
	td := &testDaemon{Daemon: d, t: t, base: "http://" + ln.Addr().String(), logs: logs}
	t.Cleanup(d.Shutdown)
	return td
}

// call does one request and decodes the JSON answer into a map.
func (td *testDaemon) call(method, path string, body any, hdr ...string) (int, map[string]any) {
	td.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, td.base+path, rd)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		td.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if len(raw) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out); err != nil {
			td.t.Fatalf("%s %s: bad JSON %q: %v", method, path, raw, err)
		}
	}
	out["_raw"] = string(raw)
	out["_cid"] = resp.Header.Get("X-Correlation-Id")
	return resp.StatusCode, out
}

// waitState subscribes to transitions and waits until the pool is in want.
func (td *testDaemon) waitState(id string, want actors.State) map[string]any {
	td.t.Helper()
	ch := make(chan actors.Transition, 256)
	actors.SendRegistry(td.sys.Root, td.reg, &actors.Subscribe{Ch: ch})
	defer actors.SendRegistry(td.sys.Root, td.reg, &actors.Unsubscribe{Ch: ch})
	deadline := time.After(waitLimit)
	for {
		if _, st := td.call("GET", "/v1/pools/"+id, nil); st["state"] == string(want) {
			return st
		}
		select {
		case <-ch:
		case <-deadline:
			_, st := td.call("GET", "/v1/pools/"+id, nil)
			td.t.Fatalf("pool %s never reached %s: %v\nlogs:\n%s", id, want, st, td.logs.String())
		}
	}
}

// eventually polls cond, bounded by waitLimit, for outcomes no event marks
// (a pool gone from the API, a process gone, a log record written).
func (td *testDaemon) eventually(what string, cond func() bool) {
	td.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			td.t.Fatalf("%s: never happened\nlogs:\n%s", what, td.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// poolHas reports whether the pool's status has every wanted field value.
func (td *testDaemon) poolHas(id string, want map[string]any) func() bool {
	return func() bool {
		_, st := td.call("GET", "/v1/pools/"+id, nil)
		for k, v := range want {
			if st[k] != v {
				return false
			}
		}
		return true
	}
}

// expectErr asserts an error answer's status and code.
func expectErr(t *testing.T, code int, body map[string]any, wantCode int, wantErr string) {
	t.Helper()
	if code != wantCode || body["code"] != wantErr {
		t.Fatalf("want %d %s, got %d %v", wantCode, wantErr, code, body["_raw"])
	}
	if _, ok := body["message"].(string); !ok {
		t.Fatalf("error without message: %v", body["_raw"])
	}
	if _, ok := body["retriable"].(bool); !ok {
		t.Fatalf("error without retriable: %v", body["_raw"])
	}
}
