package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// request is what the fake daemon saw of one request.
type request struct {
	Method, Path, Query, Auth, CorrelationID string
	Body                                     map[string]any
}

// fake emulates the daemon's answers (docs/contract.md §4) per "METHOD /path" and
// records every request.
type fake struct {
	mu     sync.Mutex
	reqs   []request
	routes map[string]http.HandlerFunc
	srv    *httptest.Server
}

func newFake(t *testing.T, routes map[string]http.HandlerFunc) *fake {
	f := &fake{routes: routes}
	f.srv = httptest.NewUnstartedServer(f)
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	rec := request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Auth: r.Header.Get("Authorization"), CorrelationID: r.Header.Get("X-Correlation-Id")}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &rec.Body); err != nil {
			rec.Body = map[string]any{"_invalid": string(raw)}
		}
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, rec)
	f.mu.Unlock()
	w.Header().Set("X-Correlation-Id", rec.CorrelationID) // the daemon echoes it
	if h, ok := f.routes[r.Method+" "+r.URL.Path]; ok {
		h(w, r)
		return
	}
	apiErr(w, 404, `{"code":"NOT_FOUND","message":"no route","retriable":false}`)
}

// all returns the requests seen so far and forgets them.
func (f *fake) all() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reqs
	f.reqs = nil
	return r
}

// only returns the single request the CLI sent, and forgets it.
func (f *fake) only(t *testing.T) request {
	t.Helper()
	r := f.all()
	if len(r) != 1 {
		t.Fatalf("want 1 request, got %d: %+v", len(r), r)
	}
	return r[0]
}

func reply(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func apiErr(w http.ResponseWriter, status int, body string) { reply(status, body)(w, nil) }

// cli runs poolctl against addr with a clean environment.
func runCLI(t *testing.T, ctx context.Context, addr string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	t.Setenv("POOL_MANAGERD_ADDR", "")
	t.Setenv("POOL_MANAGERD_TOKEN", "")
	if addr != "" {
		args = append([]string{"--addr", addr}, args...)
	}
	var o, e bytes.Buffer
	code = run(ctx, args, &o, &e)
	return o.String(), e.String(), code
}

func wantCode(t *testing.T, got, want int, stderr string) {
	t.Helper()
	if got != want {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", got, want, stderr)
	}
}

func wantContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s lacks %q:\n%s", what, sub, s)
		}
	}
}

const twoPools = `{"pools":[
 {"pool_id":"llama-8b","state":"ready","live":true,"ready":true,"engine":"llamacpp","engine_version":"b4567",
  "model_ref":"/models/a.gguf","pid":4242,"started_at_ms":1699996400000,"url":"http://127.0.0.1:4000","active_leases":1,"slots":4,
  "restart_count":0,"starts":1,"last_error":null},
 {"pool_id":"flaky","state":"backoff","live":false,"ready":false,"engine":"other","engine_version":"",
  "model_ref":"m","pid":null,"url":null,"active_leases":0,"slots":0,"restart_count":3,"starts":5,
  "last_error":"engine exited unexpectedly: exit status 3 after 2.1s, while it was serving requests"}]}`

func TestListTable(t *testing.T) {
	defer func(f func() time.Time) { now = f }(now)
	now = func() time.Time { return time.UnixMilli(1700000000000) } // an hour after llama-8b started
	f := newFake(t, map[string]http.HandlerFunc{"GET /v1/pools": reply(200, twoPools)})
	// A global flag after the subcommand is accepted too.
	out, errOut, code := runCLI(t, context.Background(), f.srv.URL, "list", "--token", "s3cret")
	wantCode(t, code, 0, errOut)
	req := f.only(t)
	if req.Auth != "Bearer s3cret" || !strings.HasPrefix(req.CorrelationID, "poolctl-") {
		t.Errorf("auth %q, correlation id %q", req.Auth, req.CorrelationID)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("want header + 2 rows + legend:\n%s", out)
	}
	if !strings.Contains(lines[3], "- = no slot limit") {
		t.Errorf("no legend for 0/- under the table: %q", lines[3])
	}
	want := [][]string{
		{"ID", "STATE", "READY", "LIVE", "ENGINE", "VERSION", "MODEL", "PID", "UPTIME", "LEASES", "RESTARTS", "STARTS", "LAST", "ERROR"},
		{"llama-8b", "ready", "true", "true", "llamacpp", "b4567", "/models/a.gguf", "4242", "1h0m", "1/4", "0", "1", "-"},
		{"flaky", "backoff", "false", "false", "other", "-", "m", "-", "-", "0/-", "3", "5", "engine"}, // server order, not sorted
	}
	for i, w := range want {
		got := strings.Fields(lines[i])
		if len(got) < len(w) || strings.Join(got[:len(w)], " ") != strings.Join(w, " ") {
			t.Errorf("row %d = %q, want prefix %q", i, got, w)
		}
	}
	if !strings.HasSuffix(lines[2], "…") || len([]rune(lines[2][strings.Index(lines[2], "engine exited"):])) != lastErrorWidth {
		t.Errorf("last error not truncated to %d runes: %q", lastErrorWidth, lines[2])
	}
}

func TestDrainDeadline(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want any // deadline_ms in the body; nil: absent
	}{
		{nil, nil},
		{[]string{"--deadline", "1.5s"}, 1500.0},
		{[]string{"--deadline", "0s"}, 0.0}, // 0 is a value (drain now), not "absent"
	} {
		f := newFake(t, map[string]http.HandlerFunc{
			"POST /v1/pools/llama-8b/drain": reply(202, `{"pool_id":"llama-8b","state":"draining"}`)})
		out, errOut, code := runCLI(t, context.Background(), f.srv.URL, append([]string{"drain", "llama-8b"}, tc.args...)...)
		wantCode(t, code, 0, errOut)
		got, ok := f.only(t).Body["deadline_ms"]
		if tc.want == nil && ok || tc.want != nil && got != tc.want {
			t.Errorf("%v: deadline_ms = %v (present %t), want %v", tc.args, got, ok, tc.want)
		}
		wantContains(t, "stdout", out, "llama-8b: draining (state draining)")
	}
}

func TestDrainWait(t *testing.T) {
	var gets int
	var mu sync.Mutex
	f := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/pools/llama-8b/drain": reply(202, `{"pool_id":"llama-8b","state":"draining"}`),
		"GET /v1/pools/llama-8b": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			gets++
			n := gets
			mu.Unlock()
			if n == 1 {
				reply(200, `{"pool_id":"llama-8b","state":"draining","last_drain":null}`)(w, r)
				return
			}
			reply(200, `{"pool_id":"llama-8b","state":"stopped","last_drain":{"forced":true,"duration_ms":1200,"final_leases":1}}`)(w, r)
		},
	})
	out, errOut, code := runCLI(t, context.Background(), f.srv.URL, "drain", "--wait", "llama-8b")
	wantCode(t, code, 0, errOut)
	wantContains(t, "stdout", out, "llama-8b: stopped: drain took 1.2s, forced: true, leases left: 1")
	mu.Lock()
	defer mu.Unlock()
	if gets != 2 {
		t.Errorf("polled %d times, want until stopped (2)", gets)
	}
}

func TestReloadWait(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{"POST /v1/pools/llama-8b/reload": reply(200,
		`{"result":"succeeded","engine_version":"b5000","duration_ms":12300}`)})
	out, errOut, code := runCLI(t, context.Background(), f.srv.URL,
		"reload", "llama-8b", "--model", "/models/b.gguf", "--version", "b5000", "--deadline", "2s", "--wait")
	wantCode(t, code, 0, errOut)
	body := f.only(t).Body
	want := map[string]any{"new_model_ref": "/models/b.gguf", "engine_version": "b5000", "deadline_ms": 2000.0, "wait": true}
	if fmt.Sprint(body) != fmt.Sprint(want) {
		t.Errorf("body %v, want %v", body, want)
	}
	wantContains(t, "stdout", out, "result: succeeded", "engine_version: b5000", "duration: 12.3s", "rolled_back: false")
}

func TestReloadFailed(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{"POST /v1/pools/llama-8b/reload": reply(409,
		`{"code":"RELOAD_FAILED","message":"new engine not ready: exit status 1","retriable":false,"rolled_back":true}`)})
	out, errOut, code := runCLI(t, context.Background(), f.srv.URL, "reload", "llama-8b", "--model", "m2", "--wait")
	wantCode(t, code, 1, errOut)
	req := f.only(t)
	if _, ok := req.Body["engine_version"]; ok || req.Body["wait"] != true {
		t.Errorf("body %v: want wait and no engine_version", req.Body)
	}
	want := fmt.Sprintf("poolctl: RELOAD_FAILED: new engine not ready: exit status 1 (rolled_back: true) [correlation id %s]\n", req.CorrelationID)
	if errOut != want || out != "" {
		t.Errorf("stderr %q, want %q; stdout %q", errOut, want, out)
	}
}

func TestLeaseAndRelease(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/pools/llama-8b/leases":       reply(201, `{"lease_id":"l-1","pool_id":"llama-8b","url":"http://127.0.0.1:4000","active_leases":1,"expires_at_ms":null}`),
		"DELETE /v1/pools/llama-8b/leases/l-1": reply(200, `{"active_leases":0}`),
		"DELETE /v1/pools/llama-8b/leases/l-2": reply(404, `{"code":"LEASE_NOT_FOUND","message":"no lease l-2","retriable":false}`),
	})
	out, errOut, code := runCLI(t, context.Background(), f.srv.URL, "lease", "llama-8b", "--ttl", "30s")
	wantCode(t, code, 0, errOut)
	if got := f.only(t).Body["ttl_ms"]; got != 30000.0 {
		t.Errorf("ttl_ms = %v", got)
	}
	wantContains(t, "lease output", out, "lease_id:", "l-1", "url:", "http://127.0.0.1:4000", "expires_at_ms:")

	out, errOut, code = runCLI(t, context.Background(), f.srv.URL, "release", "llama-8b", "l-1")
	wantCode(t, code, 0, errOut)
	if r := f.only(t); r.Method != "DELETE" || r.Path != "/v1/pools/llama-8b/leases/l-1" {
		t.Errorf("sent %s %s", r.Method, r.Path)
	}
	wantContains(t, "release output", out, "llama-8b: released l-1 (active leases: 0)")

	_, errOut, code = runCLI(t, context.Background(), f.srv.URL, "release", "llama-8b", "l-2")
	wantCode(t, code, 1, errOut)
	wantContains(t, "stderr", errOut, "poolctl: LEASE_NOT_FOUND: no lease l-2")
}

func TestPlace(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{"POST /v1/placement": reply(201,
		`{"pool_id":"b","lease_id":"l-9","url":"http://127.0.0.1:4001","active_leases":1}`)})
	out, errOut, code := runCLI(t, context.Background(), f.srv.URL, "place", "--model", "m", "--pool", "a", "--pool", "b", "--ttl", "1s")
	wantCode(t, code, 0, errOut)
	want := map[string]any{"model_ref": "m", "pool_ids": []any{"a", "b"}, "ttl_ms": 1000.0}
	if body := f.only(t).Body; fmt.Sprint(body) != fmt.Sprint(want) {
		t.Errorf("body %v, want %v", body, want)
	}
	wantContains(t, "stdout", out, "pool_id:", "l-9")
}

func TestStart(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/pools/a/start": reply(202, `{"pool_id":"a","state":"preload"}`),
		"POST /v1/pools/b/start": reply(200, `{"pool_id":"b","state":"ready"}`),
	})
	out, errOut, code := runCLI(t, context.Background(), f.srv.URL, "start", "a")
	wantCode(t, code, 0, errOut)
	wantContains(t, "stdout", out, "a: starting (state preload)")
	out, _, _ = runCLI(t, context.Background(), f.srv.URL, "start", "b")
	wantContains(t, "stdout", out, "b: already running (state ready)")
}

func TestShowHealthLogs(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/pools/a": reply(200, `{"pool_id":"a","pid":null,"devices":[{"index":0,"uuid":"GPU-1"}],"last_drain":{"forced":false}}`),
		"GET /v1/pools/a/health": reply(200, `{"live":true,"ready":false,"state":"preload","last_error":null,
			"metrics":{"active_leases":0,"restart_count":2,"last_heartbeat_ms":null}}`),
		"GET /v1/pools/a/logs": reply(200, `{"lines":[{"at_ms":1700000000000,"stream":"stderr","text":"loading model"}]}`),
	})
	out, errOut, code := runCLI(t, context.Background(), f.srv.URL, "show", "a")
	wantCode(t, code, 0, errOut)
	for _, l := range [][]string{{"pool_id:", "a"}, {"pid:", "-"}, {"devices[0].uuid:", "GPU-1"}, {"last_drain.forced:", "false"}} {
		if !strings.Contains(out, l[0]) || !strings.Contains(strings.Fields(out[strings.Index(out, l[0]):])[1], l[1]) {
			t.Errorf("show lacks %q %q:\n%s", l[0], l[1], out)
		}
	}
	out, errOut, code = runCLI(t, context.Background(), f.srv.URL, "health", "a")
	wantCode(t, code, 0, errOut)
	wantContains(t, "health", out, "state:", "preload", "metrics.restart_count:", "metrics.last_heartbeat_ms:")

	f.all()
	out, errOut, code = runCLI(t, context.Background(), f.srv.URL, "logs", "a", "--tail", "5")
	wantCode(t, code, 0, errOut)
	if q := f.only(t).Query; q != "tail=5" {
		t.Errorf("query %q", q)
	}
	wantContains(t, "logs", out, fmtTime(1700000000000)+" stderr loading model")
}

// sseStream has three pool_state events, a keep-alive comment, an event
// whose JSON spans two data lines, CRLF line ends, and an unknown event type.
const sseStream = ": connected\n\n" +
	"event: pool_state\ndata: {\"pool_id\":\"a\",\"from\":\"stopped\",\"to\":\"preload\",\"reason\":\"api\",\"at_ms\":1700000000000}\n\n" +
	": keep-alive\n\n" +
	"event: hello\ndata: {\"pool_id\":\"a\"}\n\n" +
	"event: pool_state\r\ndata: {\"pool_id\":\"b\",\"from\":\"preload\",\r\ndata: \"to\":\"ready\",\"reason\":\"readiness ok\",\"at_ms\":1700000001000}\r\n\r\n" +
	"event:pool_state\ndata:{\"pool_id\":\"a\",\"from\":\"preload\",\"to\":\"ready\",\"reason\":\"readiness ok\",\"at_ms\":1700000002000}\n\n"

func TestEvents(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{"GET /v1/events": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, sseStream) // then the stream ends: the daemon went away
	},
		"GET /v1/pools":   func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"pools":[]}`) },
		"GET /v1/pools/b": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"pool_id":"b","state":"ready"}`) },
	})
	out, errOut, code := runCLI(t, context.Background(), f.srv.URL, "events", "--no-reconnect")
	wantCode(t, code, 1, errOut)
	wantContains(t, "stderr", errOut, "event stream closed")
	want := []string{
		fmtTime(1700000000000) + " a stopped -> preload (api)",
		fmtTime(1700000001000) + " b preload -> ready (readiness ok)",
		fmtTime(1700000002000) + " a preload -> ready (readiness ok)",
	}
	if got := strings.Split(strings.TrimSpace(out), "\n"); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	out, _, _ = runCLI(t, context.Background(), f.srv.URL, "events", "--pool", "b", "--json", "--no-reconnect")
	out = strings.SplitN(out, "\n", 2)[1] // after the current-state line
	if want := `{"pool_id":"b","from":"preload","to":"ready","reason":"readiness ok","at_ms":1700000001000}` + "\n"; out != want {
		t.Errorf("--pool b --json: %q, want %q", out, want)
	}
}

func TestEventsInterruptedExitsZero(t *testing.T) {
	started := make(chan struct{})
	f := newFake(t, map[string]http.HandlerFunc{"GET /v1/events": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ": keep-alive\n\n")
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
	},
		"GET /v1/pools": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"pools":[]}`) },
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	_, errOut, code := runCLI(t, ctx, f.srv.URL, "events")
	wantCode(t, code, 0, errOut)
}

func TestReadSSEEdgeCases(t *testing.T) {
	// Lone CR line ends, a field without a value, id persistence, and an
	// unterminated last event (dropped, as the spec says).
	in := "id: 7\revent: x\rdata\rdata: two\r\rdata: next\n\ndata: partial"
	var got []sseEvent
	if err := readSSE(strings.NewReader(in), nil, func(e sseEvent) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []sseEvent{{Type: "x", Data: "\ntwo", ID: "7"}, {Type: "message", Data: "next", ID: "7"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestUnixSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "poolctl") // short: unix socket paths are limited to ~108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fake{routes: map[string]http.HandlerFunc{"GET /v1/pools": reply(200, twoPools)}}
	f.srv = httptest.NewUnstartedServer(f)
	f.srv.Listener.Close()
	f.srv.Listener = l
	f.srv.Start()
	t.Cleanup(f.srv.Close)

	out, errOut, code := runCLI(t, context.Background(), "unix:"+sock, "list")
	wantCode(t, code, 0, errOut)
	wantContains(t, "stdout", out, "llama-8b", "flaky")
	f.only(t)
}

func TestAPIErrorFormat(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/pools/nope": reply(404, `{"code":"POOL_NOT_FOUND","message":"no pool \"nope\"","retriable":false}`),
		"POST /v1/placement": reply(503, `{"code":"POOL_UNAVAILABLE","message":"no ready pool","retriable":true,"retry_after_ms":2000}`),
	})
	out, errOut, code := runCLI(t, context.Background(), f.srv.URL, "show", "nope")
	wantCode(t, code, 1, errOut)
	want := fmt.Sprintf("poolctl: POOL_NOT_FOUND: no pool \"nope\" [correlation id %s]\n", f.only(t).CorrelationID)
	if errOut != want || out != "" {
		t.Errorf("stderr %q, want %q; stdout %q", errOut, want, out)
	}
	_, errOut, code = runCLI(t, context.Background(), f.srv.URL, "place")
	wantCode(t, code, 1, errOut)
	wantContains(t, "stderr", errOut, "poolctl: POOL_UNAVAILABLE: no ready pool (retry after 2000ms)")
}

func TestUnauthorizedHint(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{"GET /v1/pools": reply(401,
		`{"code":"UNAUTHORIZED","message":"missing or wrong bearer token","retriable":false}`)})
	_, errOut, code := runCLI(t, context.Background(), f.srv.URL, "list")
	wantCode(t, code, 1, errOut)
	wantContains(t, "stderr", errOut, "UNAUTHORIZED", "wants a token", "POOL_MANAGERD_TOKEN")
	f.all()

	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("from-file\n"), 0o600)
	_, errOut, _ = runCLI(t, context.Background(), f.srv.URL, "--token-file", tokenFile, "list")
	wantContains(t, "stderr", errOut, "token was rejected")
	if got := f.only(t).Auth; got != "Bearer from-file" {
		t.Errorf("token file sent as %q", got)
	}
}

func TestEnvDefaults(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{"GET /v1/pools": reply(200, `{"pools":[]}`)})
	t.Setenv("POOL_MANAGERD_ADDR", strings.TrimPrefix(f.srv.URL, "http://")) // host:port form
	t.Setenv("POOL_MANAGERD_TOKEN", "env-token")
	var o, e bytes.Buffer
	code := run(context.Background(), []string{"list", "--json"}, &o, &e)
	wantCode(t, code, 0, e.String())
	if auth := f.only(t).Auth; auth != "Bearer env-token" || o.String() != `{"pools":[]}`+"\n" {
		t.Errorf("auth %q, stdout %q", auth, o.String())
	}
}

func TestConnectionRefusedHint(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	_, errOut, code := runCLI(t, context.Background(), addr, "--timeout", "2s", "list")
	wantCode(t, code, 1, errOut)
	wantContains(t, "stderr", errOut, "is pool-managerd running on "+addr+"? set --addr or POOL_MANAGERD_ADDR")
}

func TestBadUsage(t *testing.T) {
	f := newFake(t, nil)
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"--nope", "list"},
		{"drain"},
		{"drain", "a", "b"},
		{"drain", "a", "--deadline", "soon"},
		{"drain", "a", "--deadline", "-1s"},
		{"reload", "a"},
		{"release", "a"},
		{"logs", "a", "--tail", "5000"},
		{"list", "extra"},
		{"--addr", "no-port", "list"},
	} {
		_, errOut, code := runCLI(t, context.Background(), f.srv.URL, args...)
		if code != 2 || !strings.Contains(errOut, "usage: poolctl") {
			t.Errorf("%q: exit %d, stderr:\n%s", args, code, errOut)
		}
		if len(args) > 0 && (args[0] == "drain" || args[0] == "reload") && !strings.Contains(errOut, "usage: poolctl "+args[0]+" POOL") {
			t.Errorf("%q: not the subcommand's usage:\n%s", args, errOut)
		}
	}
	if r := f.all(); len(r) != 0 {
		t.Errorf("bad usage sent requests: %+v", r)
	}
}

func TestHelpListsEveryCommand(t *testing.T) {
	out, errOut, code := runCLI(t, context.Background(), "", "help")
	wantCode(t, code, 0, errOut)
	for _, c := range []string{"list", "show", "health", "drain", "reload", "start", "lease", "release", "place", "events", "logs"} {
		wantContains(t, "help", out, "\n  "+c)
	}
	out, _, code = runCLI(t, context.Background(), "", "help", "drain")
	if code != 0 || !strings.Contains(out, "--deadline duration") {
		t.Errorf("help drain: exit %d\n%s", code, out)
	}
	// logs' usage names -f, and its one-letter flag is printed -f, not --f.
	out, _, code = runCLI(t, context.Background(), "", "help", "logs")
	if code != 0 || !strings.Contains(out, "usage: poolctl logs POOL [--tail N] [-f]") ||
		!strings.Contains(out, "\n  -f\n") || strings.Contains(out, "--f\n") {
		t.Errorf("help logs: exit %d\n%s", code, out)
	}
}

// The drain poll must not outlive an interrupt.
func TestDrainWaitInterrupted(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/pools/a/drain": reply(202, `{"pool_id":"a","state":"draining"}`),
		"GET /v1/pools/a":        reply(200, `{"pool_id":"a","state":"draining"}`),
	})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(600*time.Millisecond, cancel) // a few polls in
	_, errOut, code := runCLI(t, ctx, f.srv.URL, "drain", "a", "--wait")
	wantCode(t, code, 1, errOut)
	wantContains(t, "stderr", errOut, "interrupted")
}

// events prints every pool's current state before the first change, so a
// quiet daemon does not look like a dead one.
func TestEventsPrintsCurrentStatesFirst(t *testing.T) {
	pools := `{"pools":[{"pool_id":"a","state":"ready","state_since_ms":1699999990000},{"pool_id":"b","state":"backoff","state_since_ms":1699999995000}]}`
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/pools": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, pools) },
		"GET /v1/pools/b": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"pool_id":"b","state":"backoff","state_since_ms":1699999995000}`)
		},
		"GET /v1/events": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, sseStream)
		},
	})
	out, errOut, code := runCLI(t, context.Background(), f.srv.URL, "events", "--no-reconnect")
	wantCode(t, code, 1, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		fmtTime(1699999990000) + " a is ready (current state)",
		fmtTime(1699999995000) + " b is backoff (current state)",
		fmtTime(1700000000000) + " a stopped -> preload (api)",
	}
	if len(lines) < 3 || strings.Join(lines[:3], "|") != strings.Join(want, "|") {
		t.Fatalf("got\n%s\nwant first\n%s", out, strings.Join(want, "\n"))
	}

	out, _, _ = runCLI(t, context.Background(), f.srv.URL, "events", "--pool", "b", "--json", "--no-reconnect")
	first := strings.SplitN(out, "\n", 2)[0]
	if want := `{"pool_id":"b","from":"","to":"backoff","reason":"current state","at_ms":1699999995000}`; first != want {
		t.Errorf("--pool b --json first line %q, want %q", first, want)
	}
}

// When the stream ends, events reconnects with the last id it saw (also the
// one the daemon's opening id: line set) and prints what the daemon replays,
// each event once.
func TestEventsReconnectsWithLastEventID(t *testing.T) {
	var mu sync.Mutex
	var got []string // the Last-Event-ID of each connection
	second := make(chan struct{})
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/pools": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"pools":[]}`) },
		"GET /v1/events": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			got = append(got, r.Header.Get("Last-Event-ID"))
			n := len(got)
			mu.Unlock()
			w.Header().Set("Content-Type", "text/event-stream")
			switch n {
			case 1: // an opening id, one event, then the daemon goes away
				io.WriteString(w, "retry: 1000\nid: r1-4\n\nid: r1-5\nevent: pool_state\ndata: {\"pool_id\":\"a\",\"from\":\"preload\",\"to\":\"ready\",\"reason\":\"readiness ok\",\"at_ms\":1700000001000}\n\n")
			default: // the replay of what came after r1-5, then live
				io.WriteString(w, "id: r1-6\nevent: pool_state\ndata: {\"pool_id\":\"a\",\"from\":\"ready\",\"to\":\"draining\",\"reason\":\"api\",\"at_ms\":1700000002000}\n\n")
				w.(http.Flusher).Flush()
				if n == 2 {
					close(second)
				}
				<-r.Context().Done()
			}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-second:
			time.Sleep(100 * time.Millisecond) // let the printed line out
		case <-time.After(30 * time.Second):
		}
		cancel()
	}()
	out, errOut, code := runCLI(t, ctx, f.srv.URL, "events")
	wantCode(t, code, 0, errOut)
	mu.Lock()
	defer mu.Unlock()
	if len(got) < 2 || got[0] != "" || got[1] != "r1-5" {
		t.Fatalf("Last-Event-ID of the connections: %q, want [\"\" \"r1-5\"]", got)
	}
	want := fmtTime(1700000001000) + " a preload -> ready (readiness ok)\n" + fmtTime(1700000002000) + " a ready -> draining (api)\n"
	if out != want {
		t.Errorf("stdout\n%s\nwant\n%s", out, want)
	}
	wantContains(t, "stderr", errOut, "event stream ended (closed by the daemon); reconnecting")
}

// A reconnect the daemon cannot replay (it restarted) is an `event: reset`:
// events says so on stderr and prints every pool's current state again.
func TestEventsResetReprintsCurrentStates(t *testing.T) {
	var mu sync.Mutex
	n := 0
	done := make(chan struct{})
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/pools": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"pools":[{"pool_id":"a","state":"ready","state_since_ms":1699999990000}]}`)
		},
		"GET /v1/events": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			n++
			k := n
			mu.Unlock()
			w.Header().Set("Content-Type", "text/event-stream")
			if k == 1 {
				io.WriteString(w, "id: r1-9\n\n")
				return
			}
			io.WriteString(w, "id: r2-0\nevent: reset\ndata: {\"reason\":\"other_run\",\"message\":\"Last-Event-ID \\\"r1-9\\\" is from another run of the daemon (it restarted)\"}\n\n")
			w.(http.Flusher).Flush()
			if k == 2 {
				close(done)
			}
			<-r.Context().Done()
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-done:
			time.Sleep(200 * time.Millisecond)
		case <-time.After(30 * time.Second):
		}
		cancel()
	}()
	out, errOut, code := runCLI(t, ctx, f.srv.URL, "events")
	wantCode(t, code, 0, errOut)
	line := fmtTime(1699999990000) + " a is ready (current state)\n"
	if out != line+line {
		t.Errorf("stdout %q, want the current state before and after the reset", out)
	}
	wantContains(t, "stderr", errOut, `events were missed: Last-Event-ID "r1-9" is from another run of the daemon`)
}

// events --pool names an unknown pool: a 404 at once, not a silent wait.
func TestEventsUnknownPool(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /v1/events": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, ": keep-alive\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		},
		"GET /v1/pools/nope": func(w http.ResponseWriter, r *http.Request) {
			apiErr(w, 404, `{"code":"POOL_NOT_FOUND","message":"no pool \"nope\"","retriable":false}`)
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, errOut, code := runCLI(t, ctx, f.srv.URL, "events", "--pool", "nope")
	if ctx.Err() != nil {
		t.Fatal("events --pool nope waited instead of failing")
	}
	if code == 0 || !strings.Contains(errOut, "POOL_NOT_FOUND") {
		t.Fatalf("exit %d, stderr %q: want a non-zero exit naming POOL_NOT_FOUND", code, errOut)
	}
}

// A mistyped command gets the closest one suggested, not a wall of usage.
func TestMistypedCommandSuggests(t *testing.T) {
	f := newFake(t, nil)
	for typo, want := range map[string]string{"lsit": "list", "helth": "health", "evnets": "events"} {
		_, errOut, code := runCLI(t, context.Background(), f.srv.URL, typo)
		wantCode(t, code, 2, errOut)
		wantContains(t, typo, errOut, fmt.Sprintf("did you mean %q", want))
	}
	_, errOut, code := runCLI(t, context.Background(), f.srv.URL, "frobnicate")
	wantCode(t, code, 2, errOut)
	if strings.Contains(errOut, "did you mean") {
		t.Errorf("a far-off word got a suggestion: %s", errOut)
	}
}

// logs -f prints the current tail, then each new line once, until Ctrl-C
// (exit 0).
func TestLogsFollow(t *testing.T) {
	var mu sync.Mutex
	lines := []string{`{"at_ms":1700000000000,"stream":"stderr","text":"one"}`}
	f := newFake(t, map[string]http.HandlerFunc{"GET /v1/pools/a/logs": func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, `{"lines":[%s]}`, strings.Join(lines, ","))
		if len(lines) < 3 { // the engine writes one more line before each next poll
			lines = append(lines, fmt.Sprintf(`{"at_ms":%d,"stream":"stdout","text":"line %d"}`, 1700000000000+int64(len(lines)), len(lines)+1))
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut string
	var code int
	done := make(chan struct{})
	go func() {
		defer close(done)
		out, errOut, code = runCLI(t, ctx, f.srv.URL, "logs", "a", "-f")
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		f.mu.Lock()
		n := len(f.reqs)
		f.mu.Unlock()
		if n >= 5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	wantCode(t, code, 0, errOut)
	want := []string{
		fmtTime(1700000000000) + " stderr one",
		fmtTime(1700000000001) + " stdout line 2",
		fmtTime(1700000000002) + " stdout line 3",
	}
	if got := strings.Split(strings.TrimSpace(out), "\n"); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got\n%s\nwant\n%s", out, strings.Join(want, "\n"))
	}
}
