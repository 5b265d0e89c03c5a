package supervisor

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// accessRecords returns the api.request records in logs (JSON lines).
func accessRecords(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, `"msg":"api.request"`) {
			continue
		}
		rec := map[string]any{}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// findAccess returns the access record with correlation id cid, or nil.
func findAccess(recs []map[string]any, cid string) map[string]any {
	for _, r := range recs {
		if r["correlation_id"] == cid {
			return r
		}
	}
	return nil
}

// apiCount is the api_request_duration_seconds count of route and code in
// a /metrics text ("" when the series is absent).
func apiCount(text, route, code string) string {
	re := regexp.MustCompile(`(?m)^pool_managerd_api_request_duration_seconds_count\{code="` + regexp.QuoteMeta(code) +
		`",route="` + regexp.QuoteMeta(route) + `"\} (\S+)$`)
	if m := re.FindStringSubmatch(text); m != nil {
		return m[1]
	}
	return ""
}

// TestAPIAccessLogAndMetricsPerRoute: every request is counted in
// api_request_duration_seconds under its route pattern and status code,
// each answer after the first of a (route, code) in the same series; at
// Debug a GET's api.request record is written with its fields and the
// correlation id it was sent or given; at Info a successful GET has none,
// and a failed GET and every POST still have theirs, at INFO.
func TestAPIAccessLogAndMetricsPerRoute(t *testing.T) {
	t.Run("debug", func(t *testing.T) {
		td := startDaemon(t, "", simPool("p"))
		td.waitState("p", actors.StateReady)
		code, body := td.call("GET", "/v1/pools/p/health", nil, "X-Correlation-Id", "cid-health-1")
		if code != 200 || body["_cid"] != "cid-health-1" {
			t.Fatalf("health: %d, correlation id %q", code, body["_cid"])
		}
		code, body = td.call("GET", "/v1/pools/p/health", nil)
		generated, _ := body["_cid"].(string)
		if code != 200 || !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(generated) {
			t.Fatalf("health without a correlation id: %d, generated %q", code, generated)
		}
		if code, _ := td.call("GET", "/v1/pools/nope/health", nil, "X-Correlation-Id", "cid-health-404"); code != 404 {
			t.Fatalf("unknown pool: %d", code)
		}
		_, m := td.call("GET", "/metrics", nil)
		text := m["_raw"].(string)
		if got := apiCount(text, "GET /v1/pools/{id}/health", "200"); got != "2" {
			t.Errorf("health 200 count %q, want 2", got)
		}
		if got := apiCount(text, "GET /v1/pools/{id}/health", "404"); got != "1" {
			t.Errorf("health 404 count %q, want 1", got)
		}
		// Scraping again after one more request: the same series moved.
		td.call("GET", "/v1/pools/p/health", nil)
		_, m = td.call("GET", "/metrics", nil)
		text = m["_raw"].(string)
		if got := apiCount(text, "GET /v1/pools/{id}/health", "200"); got != "3" {
			t.Errorf("health 200 count after one more %q, want 3", got)
		}
		if got := apiCount(text, "GET /metrics", "200"); got != "1" {
			t.Errorf("metrics 200 count %q, want 1", got)
		}
		td.eventually("the access records of the health requests", func() bool {
			recs := accessRecords(t, td.logs.String())
			return findAccess(recs, "cid-health-1") != nil && findAccess(recs, generated) != nil && findAccess(recs, "cid-health-404") != nil
		})
		recs := accessRecords(t, td.logs.String())
		for cid, want := range map[string]map[string]any{
			"cid-health-1":   {"level": "DEBUG", "method": "GET", "path": "/v1/pools/p/health", "code": 200.0},
			generated:        {"level": "DEBUG", "method": "GET", "path": "/v1/pools/p/health", "code": 200.0},
			"cid-health-404": {"level": "INFO", "method": "GET", "path": "/v1/pools/nope/health", "code": 404.0},
		} {
			rec := findAccess(recs, cid)
			for k, v := range want {
				if rec[k] != v {
					t.Errorf("access record of %s: %s = %v, want %v (%v)", cid, k, rec[k], v, rec)
				}
			}
			if _, ok := rec["duration_ms"].(float64); !ok {
				t.Errorf("access record of %s has no duration_ms: %v", cid, rec)
			}
		}
	})
	t.Run("info", func(t *testing.T) {
		logs := &testutil.SyncBuffer{}
		td := startDaemonWith(t, func(o *Options) {
			o.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		}, simPool("p"))
		td.waitState("p", actors.StateReady)
		td.call("GET", "/v1/pools/p/health", nil, "X-Correlation-Id", "cid-ok")
		td.call("GET", "/v1/pools/nope/health", nil, "X-Correlation-Id", "cid-404")
		td.call("POST", "/v1/pools/p/drain", map[string]any{"deadline_ms": 0}, "X-Correlation-Id", "cid-post")
		td.eventually("the access records of the failed GET and the POST", func() bool {
			recs := accessRecords(t, logs.String())
			return findAccess(recs, "cid-404") != nil && findAccess(recs, "cid-post") != nil
		})
		recs := accessRecords(t, logs.String())
		if rec := findAccess(recs, "cid-ok"); rec != nil {
			t.Errorf("a successful GET was logged at Info: %v", rec)
		}
		if rec := findAccess(recs, "cid-post"); rec["level"] != "INFO" || rec["code"] != 202.0 {
			t.Errorf("POST drain record: %v", rec)
		}
		_, m := td.call("GET", "/metrics", nil)
		if got := apiCount(m["_raw"].(string), "GET /v1/pools/{id}/health", "200"); got != "1" {
			t.Errorf("health 200 count %q, want 1", got)
		}
	})
}

// unwrapWriter is a middleware's writer around the one wrap hands out.
type unwrapWriter struct{ http.ResponseWriter }

func (u unwrapWriter) Unwrap() http.ResponseWriter { return u.ResponseWriter }

// A handler reached through another writer wrapped around wrap's still
// finds the request's correlation id (it is logged with what it causes).
func TestCorrelationIDThroughAWrappedWriter(t *testing.T) {
	sw := &statusWriter{ResponseWriter: httptest.NewRecorder(), cid: "cid-1"}
	if got := correlationID(unwrapWriter{unwrapWriter{sw}}); got != "cid-1" {
		t.Fatalf("through two wrappers: %q, want cid-1", got)
	}
	if got := correlationID(httptest.NewRecorder()); got != "" {
		t.Fatalf("a writer wrap did not hand out: %q, want none", got)
	}
}
