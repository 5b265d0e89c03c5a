package supervisor

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
)

// maxBody bounds request bodies: every API body is a few fields.
const maxBody = 64 << 10

// route is one API endpoint.
type route struct {
	method, path string
	auth         bool
	h            func(w http.ResponseWriter, r *http.Request) (int, error)
}

// apiError is an error answered as CONTRACT §4's JSON error.
type apiError struct {
	status     int
	Code       string `json:"code"`
	Message    string `json:"message"`
	Retriable  bool   `json:"retriable"`
	RetryAfter *int64 `json:"retry_after_ms,omitempty"`
	RolledBack *bool  `json:"rolled_back,omitempty"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// statusOf maps error codes to HTTP status codes.
var statusOf = map[string]int{
	"INVALID_PARAMS": 400, "UNAUTHORIZED": 401, "POOL_NOT_FOUND": 404, "LEASE_NOT_FOUND": 404,
	"POOL_UNREADY": 409, "POOL_DRAINING": 409, "POOL_BUSY": 409, "RELOAD_IN_PROGRESS": 409,
	"RELOAD_FAILED": 409, "POOL_UNAVAILABLE": 503, "PAYLOAD_TOO_LARGE": 413, "NOT_FOUND": 404,
	"METHOD_NOT_ALLOWED": 405, "INTERNAL": 500,
}

// retriable says whether a caller may retry the same request later.
var retriable = map[string]bool{"POOL_UNREADY": true, "POOL_BUSY": true, "POOL_UNAVAILABLE": true,
	"RELOAD_IN_PROGRESS": true, "INTERNAL": true}

func errf(code, format string, args ...any) *apiError {
	return &apiError{status: statusOf[code], Code: code, Message: fmt.Sprintf(format, args...), Retriable: retriable[code]}
}

func fromDomain(e *actors.Error) *apiError {
	out := errf(e.Code, "%s", e.Message)
	if e.RetryAfterMS > 0 {
		out.RetryAfter = &e.RetryAfterMS
	}
	return out
}

func (d *Daemon) table() []route {
	return []route{
		{"GET", "/healthz", false, d.getHealthz},
		{"GET", "/readyz", false, d.getReadyz},
		{"GET", "/metrics", false, d.getMetrics},
		{"GET", "/v1/pools", true, d.listPools},
		{"GET", "/v1/pools/{id}", true, d.getPool},
		{"GET", "/v1/pools/{id}/health", true, d.getPoolHealth},
		{"GET", "/v1/pools/{id}/logs", true, d.getLogs},
		{"POST", "/v1/pools/{id}/drain", true, d.postDrain},
		{"POST", "/v1/pools/{id}/reload", true, d.postReload},
		{"POST", "/v1/pools/{id}/start", true, d.postStart},
		{"POST", "/v1/pools/{id}/leases", true, d.postLease},
		{"DELETE", "/v1/pools/{id}/leases/{lease_id}", true, d.deleteLease},
		{"POST", "/v1/placement", true, d.postPlacement},
		{"GET", "/v1/events", true, d.getEvents},
	}
}

// Routes lists the API's method and path patterns (checked against the
// OpenAPI description by a test).
func (d *Daemon) Routes() [][2]string {
	var out [][2]string
	for _, r := range d.table() {
		out = append(out, [2]string{r.method, r.path})
	}
	return out
}

func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	paths := map[string][]string{}
	for _, rt := range d.table() {
		mux.Handle(rt.method+" "+rt.path, d.wrap(rt))
		paths[rt.path] = append(paths[rt.path], rt.method)
	}
	// Anything the table does not match: JSON 404, or 405 with Allow when the
	// path exists under another method.
	mux.Handle("/", d.wrap(route{path: "unmatched", h: func(w http.ResponseWriter, r *http.Request) (int, error) {
		for p, methods := range paths {
			probe := r.Clone(r.Context())
			for _, m := range methods {
				probe.Method = m
				if _, pat := mux.Handler(probe); pat == m+" "+p {
					w.Header().Set("Allow", strings.Join(methods, ", "))
					return 0, errf("METHOD_NOT_ALLOWED", "%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(methods, ", "))
				}
			}
		}
		return 0, errf("NOT_FOUND", "no route %s %s", r.Method, r.URL.Path)
	}}))
	return mux
}

// statusWriter records the status code for logs and metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(c int) {
	if s.code == 0 {
		s.code = c
	}
	s.ResponseWriter.WriteHeader(c)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = 200
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

type ctxKey struct{}

// wrap adds, around every handler: correlation id, auth, body limit, panic
// recovery, error rendering, access log and the latency metric.
func (d *Daemon) wrap(rt route) http.Handler {
	label := rt.path
	if rt.method != "" {
		label = rt.method + " " + rt.path
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		cid := r.Header.Get("X-Correlation-Id")
		if cid == "" || len(cid) > 128 {
			cid = newID()
		}
		w.Header().Set("X-Correlation-Id", cid)
		sw := &statusWriter{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, cid))
		defer func() {
			if p := recover(); p != nil {
				d.log.Error("api.panic", "panic", fmt.Sprint(p), "route", label, "correlation_id", cid)
				if sw.code == 0 {
					writeErr(sw, errf("INTERNAL", "internal error (correlation id %s)", cid))
				}
			}
			d.metrics.ObserveAPI(label, sw.code, time.Since(start))
			lvl := slog.LevelDebug
			if r.Method != "GET" || sw.code >= 400 {
				lvl = slog.LevelInfo
			}
			d.log.Log(r.Context(), lvl, "api.request", "method", r.Method, "path", r.URL.Path, "code", sw.code,
				"duration_ms", time.Since(start).Milliseconds(), "correlation_id", cid)
		}()
		if rt.auth && !d.authorized(r) {
			sw.Header().Set("WWW-Authenticate", `Bearer realm="pool-managerd"`)
			writeErr(sw, errf("UNAUTHORIZED", "missing or wrong bearer token"))
			return
		}
		r.Body = http.MaxBytesReader(sw, r.Body, maxBody)
		code, err := rt.h(sw, r)
		if err != nil && r.Context().Err() != nil && errors.Is(err, r.Context().Err()) {
			return // the client went away (e.g. during reload wait:true): nobody to answer
		}
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				d.log.Error("api.internal_error", "err", err, "route", label, "correlation_id", cid)
				ae = errf("INTERNAL", "%v", err)
			}
			writeErr(sw, ae)
			return
		}
		_ = code
	})
}

func (d *Daemon) authorized(r *http.Request) bool {
	if d.opts.Token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(d.opts.Token)) == 1
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func writeErr(w http.ResponseWriter, e *apiError) {
	if e.status == 0 {
		e.status = statusOf[e.Code]
	}
	writeJSON(w, e.status, e)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		code = 500
		buf.Reset()
		buf.WriteString(`{"code":"INTERNAL","message":"encode response","retriable":true}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// decode reads a strict JSON body into v: unknown fields, wrong types,
// trailing data and oversize bodies are errors. An empty body is allowed
// (every field is optional or checked by the caller).
func decode(r *http.Request, v any) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errf("PAYLOAD_TOO_LARGE", "request body over %d bytes", mbe.Limit)
		}
		return errf("INVALID_PARAMS", "read body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return errf("INVALID_PARAMS", "field %q must be %s, not %s", te.Field, te.Type, te.Value)
		}
		return errf("INVALID_PARAMS", "invalid JSON body: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return errf("INVALID_PARAMS", "invalid JSON body: trailing data after the object")
	}
	return nil
}

// maxMS bounds deadline_ms and ttl_ms: a year is beyond any drain or lease,
// and larger values would overflow a time.Duration.
const maxMS = 365 * 24 * 3600 * 1000

func msDuration(field string, v *int64) (time.Duration, error) {
	if v == nil {
		return -1, nil
	}
	if *v < 0 || *v > maxMS {
		return 0, errf("INVALID_PARAMS", "%s must be between 0 and %d (one year), got %d", field, maxMS, *v)
	}
	return time.Duration(*v) * time.Millisecond, nil
}
