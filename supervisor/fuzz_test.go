// FuzzRequestBody sends arbitrary bytes as the body of every API route that
// takes one (drain, reload, start, leases, placement), through the daemon's
// real HTTP handler, against one live simulator pool. Plain `go test` runs
// only the seeds; CI fuzzes briefly:
//
//	go test -run='^$' -fuzz='^FuzzRequestBody$' -fuzztime=20s ./supervisor
//
// Invariants: no panic and no 500; the only 5xx is 503 POOL_UNAVAILABLE
// (placement with nothing to place on, docs/contract.md §4); a 2xx is the route's
// documented success code with a JSON object; every other answer is
// docs/contract.md §4's JSON error, whose code is in the list and matches the status.

package supervisor

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/gpu"
)

// fuzzRoute is one request shape; ok lists its documented 2xx codes.
type fuzzRoute struct {
	method, path string
	ok           []int
}

// fuzzRoutes is indexed by the fuzzed route number (mod its length). Each
// body-taking route appears for the live pool and most for an unknown one,
// so both the decode-then-lookup order and the real command path get
// fuzzed. The order suits the seed run (route by route): leases while the
// pool is ready, then reload, start, and drain last.
var fuzzRoutes = []fuzzRoute{
	{"POST", "/v1/pools/fz/leases", []int{201}},
	{"POST", "/v1/placement", []int{201}},
	{"DELETE", "/v1/pools/fz/leases/nope", nil}, // a body where none is expected
	{"POST", "/v1/pools/nope/drain", nil},
	{"POST", "/v1/pools/nope/reload", nil},
	{"POST", "/v1/pools/nope/leases", nil},
	{"POST", "/v1/pools/fz/reload", []int{200, 202}},
	{"POST", "/v1/pools/fz/start", []int{200, 202}},
	{"POST", "/v1/pools/fz/drain", []int{202}},
}

// contractStatus is docs/contract.md §4's code list, written out again so that the
// test does not trust the table it checks.
var contractStatus = map[string]int{
	"INVALID_PARAMS": 400, "UNAUTHORIZED": 401, "POOL_NOT_FOUND": 404, "LEASE_NOT_FOUND": 404,
	"POOL_UNREADY": 409, "POOL_DRAINING": 409, "POOL_BUSY": 409, "RELOAD_IN_PROGRESS": 409,
	"RELOAD_FAILED": 409, "PREFLIGHT_FAILED": 409, "INVALID_MODEL_REF": 400, "MODEL_REF_NOT_ALLOWED": 403, "POOL_UNAVAILABLE": 503, "PAYLOAD_TOO_LARGE": 413, "NOT_FOUND": 404,
	"METHOD_NOT_ALLOWED": 405, "INTERNAL": 500,
}

// fuzzSeeds are the docs/contract.md §4 examples and a set of broken bodies; each
// is tried on every route.
var fuzzSeeds = []string{
	"", "{}", "null", " \n",
	`{"deadline_ms": 0}`, `{"deadline_ms": 250}`,
	`{"new_model_ref": "test/fz-2", "engine_version": "v2", "deadline_ms": 100, "wait": true}`,
	`{"new_model_ref": "/nonexistent/model.gguf", "wait": true}`, // refused by the preflight: 409 PREFLIGHT_FAILED
	`{"new_model_ref": "test/fz"}`,
	`{"new_model_ref": "$(id > /tmp/x)m"}`, `{"new_model_ref": "-rf"}`, `{"new_model_ref": " "}`, // 400 INVALID_MODEL_REF
	`{"ttl_ms": 60000}`, `{"ttl_ms": 0}`,
	`{"model_ref": "test/fz", "pool_ids": ["fz"]}`, `{"pool_ids": ["nope"]}`, `{"pool_ids": []}`, `{"model_ref": "other"}`,
	// broken
	`{"deadline_ms": -1}`, `{"deadline_ms": "1s"}`, `{"deadline_ms": 1.5}`, `{"deadline_ms": 1e400}`,
	`{"deadline_ms": 9223372036854775807}`, `{"ttl_ms": -9223372036854775808}`,
	`{"new_model_ref": ""}`, `{"new_model_ref": null}`, `{"new_model_ref": 7}`, `{"wait": "yes"}`,
	`{"pool_ids": "fz"}`, `{"pool_ids": [1, null]}`, `{"unknown": 1}`, `{"Deadline_MS": 5}`,
	`{} {}`, `{}x`, `[]`, `"str"`, `1`, `{`, `{"a":`, "\x00\xff", `{"deadline_ms": 1, "deadline_ms": 2}`,
	strings.Repeat("[", 10000), `{"model_ref": "` + strings.Repeat("x", maxBody) + `"}`, // 413
}

func FuzzRequestBody(f *testing.F) {
	h := startFuzzDaemon(f)
	for i := range fuzzRoutes {
		for _, s := range fuzzSeeds {
			f.Add(uint8(i), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		req := httptest.NewRequest(rt.method, rt.path, bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		checkAnswer(t, rt, body, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes())
	})
}

// checkAnswer asserts the fuzz invariants on one answer.
func checkAnswer(t *testing.T, rt fuzzRoute, body []byte, code int, ctype string, raw []byte) {
	t.Helper()
	where := rt.method + " " + rt.path
	if !strings.HasPrefix(ctype, "application/json") {
		t.Fatalf("%s %q: %d with Content-Type %q: %q", where, body, code, ctype, raw)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatalf("%s %q: %d, not a JSON object (%v): %q", where, body, code, err, raw)
	}
	if code >= 200 && code < 300 {
		if !slices.Contains(rt.ok, code) {
			t.Fatalf("%s %q: success %d, want one of %v: %s", where, body, code, rt.ok, raw)
		}
		return
	}
	errCode, _ := obj["code"].(string)
	want, known := contractStatus[errCode]
	switch {
	case !known:
		t.Fatalf("%s %q: %d with unknown error code %q: %s", where, body, code, errCode, raw)
	case want != code:
		t.Fatalf("%s %q: status %d but code %s means %d: %s", where, body, code, errCode, want, raw)
	case code >= 500 && errCode != "POOL_UNAVAILABLE":
		t.Fatalf("%s %q: server error %d %s: %s", where, body, code, errCode, raw)
	}
	msg, ok := obj["message"].(string)
	if !ok {
		t.Fatalf("%s %q: error without a message: %s", where, body, raw)
	}
	if strings.Contains(msg, "supervisor.") || strings.Contains(msg, "Go struct") {
		t.Fatalf("%s %q: the message exposes a Go type: %s", where, body, raw)
	}
	if _, ok := obj["retriable"].(bool); !ok {
		t.Fatalf("%s %q: error without retriable: %s", where, body, raw)
	}
}

// startFuzzDaemon is startDaemon for a *testing.F: one daemon per fuzz
// worker, with one simulator pool "fz" that loads at once, waited for until
// ready so the first inputs meet a working pool. Bodies drain, reload and
// restart it; every state it can reach is fair game.
func startFuzzDaemon(f *testing.F) http.Handler {
	f.Helper()
	p := simPool("fz")
	p.StopGrace = 500 * time.Millisecond
	p.DrainDeadline = 200 * time.Millisecond // a body without deadline_ms must not stall the fuzzer
	p.Restart.MaxFailures = 1000
	cfg := &config.Config{Listen: "127.0.0.1:0", ShutdownDeadline: time.Second, Pools: []config.Pool{p},
		Log: config.Log{Format: "json", Level: "info"}}
	var w io.Writer = io.Discard
	if testing.Verbose() {
		w = os.Stderr
	}
	d, err := New(Options{Config: cfg, Logger: slog.New(slog.NewJSONHandler(w, nil)), SelfExe: os.Args[0], Guard: gpu.NoGuard{}})
	if err != nil {
		f.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	if err := d.Start(ln); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(d.Shutdown)
	h := d.Handler()
	deadline := time.Now().Add(waitLimit)
	for {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/pools/fz", nil))
		if strings.Contains(rec.Body.String(), `"state":"ready"`) {
			return h
		}
		if time.Now().After(deadline) {
			f.Fatalf("pool fz never became ready: %s", rec.Body.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
