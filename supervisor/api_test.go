package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/config"
)

func TestAPIReadEndpoints(t *testing.T) {
	td := startDaemon(t, "", simPool("b"), simPool("a"))
	td.waitState("a", actors.StateReady)
	td.waitState("b", actors.StateReady)

	code, body := td.call("GET", "/healthz", nil)
	if code != 200 || body["status"] != "ok" || body["version"] != Version {
		t.Fatalf("healthz: %d %v", code, body)
	}
	if code, _ := td.call("GET", "/readyz", nil); code != 200 {
		t.Fatalf("readyz: %d", code)
	}
	code, body = td.call("GET", "/v1/pools", nil)
	pools := body["pools"].([]any)
	if code != 200 || len(pools) != 2 || pools[0].(map[string]any)["pool_id"] != "a" {
		t.Fatalf("pools not sorted by id: %v", body["_raw"])
	}
	// Every PoolStatus field of docs/contract.md §4 is present (null when unknown).
	for _, f := range []string{"pool_id", "state", "live", "ready", "draining", "engine", "engine_version", "model_ref",
		"pid", "url", "active_leases", "slots", "restart_count", "starts", "consecutive_failures", "last_error",
		"last_heartbeat_ms", "state_since_ms", "next_restart_at_ms", "devices", "last_drain", "last_reload"} {
		if _, ok := pools[0].(map[string]any)[f]; !ok {
			t.Errorf("PoolStatus lacks %q", f)
		}
	}
	code, body = td.call("GET", "/v1/pools/a/health", nil)
	m, _ := body["metrics"].(map[string]any)
	if code != 200 || body["ready"] != true || body["live"] != true || body["state"] != "ready" || m == nil {
		t.Fatalf("health: %d %v", code, body["_raw"])
	}
	for _, f := range []string{"active_leases", "restart_count", "starts", "uptime_ms"} {
		if _, ok := m[f]; !ok {
			t.Errorf("health metrics lack %q", f)
		}
	}
	if _, ok := body["last_error"]; !ok {
		t.Error("health lacks last_error")
	}
	code, body = td.call("GET", "/v1/pools/nope", nil)
	expectErr(t, code, body, 404, "POOL_NOT_FOUND")
	code, body = td.call("GET", "/v1/pools/nope/health", nil)
	expectErr(t, code, body, 404, "POOL_NOT_FOUND")
	code, body = td.call("GET", "/v1/nothing", nil)
	expectErr(t, code, body, 404, "NOT_FOUND")
	code, body = td.call("DELETE", "/v1/pools/a", nil)
	expectErr(t, code, body, 405, "METHOD_NOT_ALLOWED")

	code, body = td.call("GET", "/v1/pools/a/logs?tail=5", nil)
	if lines, _ := body["lines"].([]any); code != 200 || len(lines) == 0 || len(lines) > 5 {
		t.Fatalf("logs: %d %v", code, body["_raw"])
	}
	code, body = td.call("GET", "/v1/pools/a/logs?tail=5000", nil)
	expectErr(t, code, body, 400, "INVALID_PARAMS")

	_, body = td.call("GET", "/v1/pools/a", nil, "X-Correlation-Id", "abc-123")
	if body["_cid"] != "abc-123" {
		t.Fatalf("correlation id not echoed: %v", body["_cid"])
	}
	if !strings.Contains(td.logs.String(), "abc-123") {
		t.Fatal("correlation id not logged")
	}
}

func TestAPIAuth(t *testing.T) {
	td := startDaemon(t, "s3cret", simPool("a"))
	code, body := td.call("GET", "/v1/pools", nil)
	expectErr(t, code, body, 401, "UNAUTHORIZED")
	code, body = td.call("GET", "/v1/pools", nil, "Authorization", "Bearer wrong")
	expectErr(t, code, body, 401, "UNAUTHORIZED")
	if code, _ := td.call("GET", "/v1/pools", nil, "Authorization", "Bearer s3cret"); code != 200 {
		t.Fatalf("right token refused: %d", code)
	}
	for _, open := range []string{"/healthz", "/metrics"} {
		if code, _ := td.call("GET", open, nil); code != 200 {
			t.Fatalf("%s needs no token, got %d", open, code)
		}
	}
}

func TestAPIInputHygiene(t *testing.T) {
	td := startDaemon(t, "", simPool("a"))
	td.waitState("a", actors.StateReady)
	for _, tc := range []struct{ path, body string }{
		{"/v1/pools/a/drain", `{"deadline_ms": -1}`},
		{"/v1/pools/a/drain", `{"deadline_ms": "soon"}`},
		{"/v1/pools/a/drain", `{"deadline": 5}`},
		{"/v1/pools/a/drain", `{"deadline_ms": 5} {}`},
		{"/v1/pools/a/drain", `not json`},
		{"/v1/pools/a/reload", `{}`},
		{"/v1/pools/a/reload", `{"new_model_ref": 5}`},
		{"/v1/pools/a/leases", `{"ttl_ms": -5}`},
		{"/v1/placement", `{"pool_ids": "a"}`},
	} {
		code, body := td.call("POST", tc.path, tc.body)
		expectErr(t, code, body, 400, "INVALID_PARAMS")
	}
	code, body := td.call("POST", "/v1/pools/a/leases", `{"ttl_ms": 1`+strings.Repeat(" ", 70<<10)+`}`)
	expectErr(t, code, body, 413, "PAYLOAD_TOO_LARGE")
	if st := td.waitState("a", actors.StateReady); st["draining"] != false {
		t.Fatal("a rejected request changed the pool")
	}
}

func TestAPILeasesDrainAndErrors(t *testing.T) {
	p := simPool("a")
	p.Slots = 1
	td := startDaemon(t, "", p, simPool("slow", "--load-time", "1h"))
	td.waitState("a", actors.StateReady)

	code, body := td.call("POST", "/v1/pools/slow/leases", nil)
	expectErr(t, code, body, 409, "POOL_UNREADY")
	code, body = td.call("POST", "/v1/pools/nope/leases", nil)
	expectErr(t, code, body, 404, "POOL_NOT_FOUND")

	code, lease := td.call("POST", "/v1/pools/a/leases", map[string]any{})
	if code != 201 || lease["lease_id"] == nil || lease["url"] == nil || lease["active_leases"] != 1.0 {
		t.Fatalf("lease: %d %v", code, lease["_raw"])
	}
	code, body = td.call("POST", "/v1/pools/a/leases", nil)
	expectErr(t, code, body, 409, "POOL_BUSY")
	code, body = td.call("POST", "/v1/placement", map[string]any{"pool_ids": []string{"a", "slow"}})
	expectErr(t, code, body, 503, "POOL_UNAVAILABLE")
	if body["retry_after_ms"] == nil {
		t.Fatal("POOL_UNAVAILABLE without retry_after_ms")
	}
	code, body = td.call("POST", "/v1/placement", map[string]any{"pool_ids": []string{"zz"}})
	expectErr(t, code, body, 404, "POOL_NOT_FOUND")

	code, body = td.call("POST", "/v1/pools/a/drain", map[string]any{"deadline_ms": 60000})
	if code != 202 || body["state"] != "draining" || body["pool_id"] != "a" {
		t.Fatalf("drain: %d %v", code, body["_raw"])
	}
	if code, body = td.call("POST", "/v1/pools/a/drain", nil); code != 202 || body["state"] != "draining" {
		t.Fatalf("second drain not idempotent: %d %v", code, body["_raw"])
	}
	code, body = td.call("POST", "/v1/pools/a/leases", nil)
	expectErr(t, code, body, 409, "POOL_DRAINING")
	code, body = td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": "m2"})
	expectErr(t, code, body, 409, "POOL_DRAINING")
	code, body = td.call("POST", "/v1/pools/a/start", nil)
	expectErr(t, code, body, 409, "POOL_DRAINING")

	code, body = td.call("DELETE", "/v1/pools/a/leases/"+lease["lease_id"].(string), nil)
	if code != 200 || body["active_leases"] != 0.0 {
		t.Fatalf("release: %d %v", code, body["_raw"])
	}
	code, body = td.call("DELETE", "/v1/pools/a/leases/"+lease["lease_id"].(string), nil)
	expectErr(t, code, body, 404, "LEASE_NOT_FOUND")
	st := td.waitState("a", actors.StateStopped)
	if ld, _ := st["last_drain"].(map[string]any); ld == nil || ld["forced"] != false {
		t.Fatalf("last_drain: %v", st["last_drain"])
	}
	code, body = td.call("POST", "/v1/pools/a/start", nil)
	if code != 202 {
		t.Fatalf("start from stopped: %d %v", code, body["_raw"])
	}
	td.waitState("a", actors.StateReady)
	if code, _ = td.call("POST", "/v1/pools/a/start", nil); code != 200 {
		t.Fatalf("start on a ready pool: %d", code)
	}
}

func TestAPIReload(t *testing.T) {
	td := startDaemon(t, "", simPool("a", "--load-time", "300ms"))
	td.waitState("a", actors.StateReady)
	done := make(chan map[string]any, 1)
	go func() {
		code, body := td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": "m2", "engine_version": "v2", "wait": true})
		body["_code"] = code
		done <- body
	}()
	td.waitState("a", actors.StatePreload)
	code, body := td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": "m3"})
	expectErr(t, code, body, 409, "RELOAD_IN_PROGRESS")
	res := <-done
	if res["_code"] != 200 || res["result"] != "succeeded" || res["engine_version"] != "v2" || res["duration_ms"] == nil {
		t.Fatalf("reload wait: %v", res["_raw"])
	}
	// A model that passes the preflight but is gone by the time the new
	// engine starts (removed while the drain waits for a lease): rollback.
	next := filepath.Join(t.TempDir(), "exist.gguf")
	if err := os.WriteFile(next, []byte("GGUF\x03\x00\x00\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, lease := td.call("POST", "/v1/pools/a/leases", nil)
	go func() {
		code, body := td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": next, "engine_version": "v3", "wait": true})
		body["_code"] = code
		done <- body
	}()
	td.waitState("a", actors.StateDraining)
	if err := os.Remove(next); err != nil {
		t.Fatal(err)
	}
	td.call("DELETE", "/v1/pools/a/leases/"+lease["lease_id"].(string), nil)
	body = <-done
	code, _ = body["_code"].(int)
	expectErr(t, code, body, 409, "RELOAD_FAILED")
	if body["rolled_back"] != true {
		t.Fatalf("RELOAD_FAILED without rolled_back: %v", body["_raw"])
	}
	if msg, _ := body["message"].(string); !strings.HasPrefix(msg, "reload rolled back: ") || strings.Count(msg, "reload ") != 1 {
		t.Fatalf("RELOAD_FAILED message %q, want one \"reload rolled back: <why>\"", msg)
	}
	_, st := td.call("GET", "/v1/pools/a", nil)
	if st["state"] != "ready" || st["engine_version"] != "v2" || !strings.Contains(st["last_error"].(string), "exist.gguf") {
		t.Fatalf("after rollback: %v", st["_raw"])
	}
	code, body = td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": "m4"})
	if code != 202 || body["pool_id"] != "a" {
		t.Fatalf("reload without wait: %d %v", code, body["_raw"])
	}
}

func TestAPIEventsStream(t *testing.T) {
	td := startDaemon(t, "", simPool("a"))
	td.waitState("a", actors.StateReady)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", td.base+"/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %v %v", resp, err)
	}
	defer resp.Body.Close()
	td.call("POST", "/v1/pools/a/drain", map[string]any{"deadline_ms": 0})
	sc := bufio.NewScanner(resp.Body)
	var seen []string
	event := ""
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "event: ") {
			event = strings.TrimPrefix(line, "event: ")
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var tr actors.Transition
			if err := json.Unmarshal([]byte(data), &tr); err != nil || event != "pool_state" || tr.AtMS == 0 {
				t.Fatalf("bad event %q %q: %v", event, data, err)
			}
			seen = append(seen, string(tr.From)+">"+string(tr.To))
			if tr.To == actors.StateStopped {
				break
			}
		}
	}
	if strings.Join(seen, ",") != "ready>draining,draining>stopped" {
		t.Fatalf("events: %v", seen)
	}
}

func TestMetricsMoveAfterCrash(t *testing.T) {
	td := startDaemon(t, "", simPool("a"))
	st := td.waitState("a", actors.StateReady)
	_ = syscall.Kill(int(st["pid"].(float64)), syscall.SIGKILL)
	// The backoff lasts 10 ms: wait for its outcome (ready again after one
	// restart), not for the backoff state itself, which a poll can miss.
	td.eventually("a restarted once and ready again", func() bool {
		_, st := td.call("GET", "/v1/pools/a", nil)
		return st["state"] == string(actors.StateReady) && st["restart_count"] == float64(1)
	})
	_, body := td.call("GET", "/metrics", nil)
	text := body["_raw"].(string)
	for _, want := range []string{
		`pool_managerd_restarts_total{pool_id="a",reason="signal"} 1`,
		`pool_managerd_failures_total{pool_id="a",reason="signal"} 1`,
		`pool_managerd_pool_state{pool_id="a",state="ready"} 1`,
		`pool_managerd_pool_ready{engine="llamacpp",engine_version="v1",pool_id="a"} 1`,
		`pool_managerd_active_leases{pool_id="a"} 0`,
		`pool_managerd_preload_duration_seconds_count{outcome="ready",pool_id="a"} 2`,
		`pool_managerd_probe_duration_seconds_count{kind="readiness",pool_id="a"}`,
		`pool_managerd_api_request_duration_seconds_count{code="200",route="GET /v1/pools/{id}"}`,
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestReconfigureKeepsUnchangedPools(t *testing.T) {
	keep, change, drop := simPool("keep"), simPool("change"), simPool("drop")
	td := startDaemon(t, "", keep, change, drop)
	k := td.waitState("keep", actors.StateReady)
	td.waitState("change", actors.StateReady)
	td.waitState("drop", actors.StateReady)
	next := *td.cfg
	changed := change
	changed.EngineVersion = "v2"
	next.Pools = []config.Pool{keep, changed, simPool("added")}
	ch := td.Reconfigure(&next)
	if len(ch.Added) != 1 || len(ch.Removed) != 1 || len(ch.Changed) != 1 || len(ch.Unchanged) != 1 {
		t.Fatalf("diff: %+v", ch)
	}
	td.waitState("added", actors.StateReady)
	td.eventually("changed pool reloaded to v2", td.poolHas("change", map[string]any{"engine_version": "v2", "state": "ready"}))
	td.eventually("removed pool gone from the API", func() bool {
		code, _ := td.call("GET", "/v1/pools/drop", nil)
		return code == 404
	})
	_, k2 := td.call("GET", "/v1/pools/keep", nil)
	if k2["pid"] != k["pid"] || k2["state"] != "ready" {
		t.Fatalf("unchanged pool was touched: pid %v -> %v", k["pid"], k2["pid"])
	}
}

// A state change caused by an API request carries its correlation id in the logs.
func TestCorrelationIDReachesLifecycleLogs(t *testing.T) {
	td := startDaemon(t, "", simPool("a"))
	td.waitState("a", actors.StateReady)
	if code, _ := td.call("POST", "/v1/pools/a/drain", map[string]any{"deadline_ms": 0}, "X-Correlation-Id", "cid-drain-7"); code != 202 {
		t.Fatalf("drain: %d", code)
	}
	td.waitState("a", actors.StateStopped)
	var drain, state bool
	for _, line := range strings.Split(td.logs.String(), "\n") {
		if !strings.Contains(line, `"correlation_id":"cid-drain-7"`) {
			continue
		}
		drain = drain || strings.Contains(line, `"msg":"drain.started"`)
		state = state || strings.Contains(line, `"msg":"pool.state"`) && strings.Contains(line, `"to":"draining"`)
	}
	if !drain || !state {
		t.Fatalf("correlation id missing from drain.started (%v) or pool.state (%v):\n%s", drain, state, td.logs.String())
	}
}

// A reload whose model fails the preflight is 409 PREFLIGHT_FAILED at once,
// with or without wait, and the engine keeps running.
func TestAPIReloadPreflightFailed(t *testing.T) {
	td := startDaemon(t, "", simPool("a"))
	st := td.waitState("a", actors.StateReady)
	for _, wait := range []bool{false, true} {
		code, body := td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": "/nonexistent/model.gguf", "wait": wait})
		expectErr(t, code, body, 409, "PREFLIGHT_FAILED")
		if msg, _ := body["message"].(string); !strings.Contains(msg, "/nonexistent/model.gguf: no such file or directory") || body["retriable"] != false {
			t.Fatalf("wait=%v: %v", wait, body["_raw"])
		}
	}
	_, now := td.call("GET", "/v1/pools/a", nil)
	if now["state"] != "ready" || now["pid"] != st["pid"] || now["reloading"] != false {
		t.Fatalf("after refused reloads: %v", now["_raw"])
	}
}
