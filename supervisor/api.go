package supervisor

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pool-managerd/pool-managerd/actors"
)

// maxBody bounds request bodies: every API body is a few fields.
const maxBody = 64 << 10

// route is one API endpoint.
type route struct {
	method, path string
	access       access
	h            func(w http.ResponseWriter, r *http.Request) error // writes the answer, or returns the error wrap renders
}

// access says who may call a route, and when.
type access int

const (
	open    access = iota // no token needed (health, readiness, metrics)
	token                 // the bearer token when one is configured
	newWork               // token, and refused once the shutdown has begun: it would start engines or hand out work
)

// apiError is an error answered as docs/contract.md §4's JSON error.
type apiError struct {
	status     int
	Code       string `json:"code"`
	Message    string `json:"message"`
	Retriable  bool   `json:"retriable"`
	RetryAfter *int64 `json:"retry_after_ms,omitempty"`
	RolledBack *bool  `json:"rolled_back,omitempty"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// Codes the API answers by itself (request, routing and auth problems);
// every other code is one of actors.Code*, which the actors answer with.
const (
	codeUnauthorized       = "UNAUTHORIZED"
	codeNotFound           = "NOT_FOUND"
	codeMethodNotAllowed   = "METHOD_NOT_ALLOWED"
	codePayloadTooLarge    = "PAYLOAD_TOO_LARGE"
	codeInvalidModelRef    = "INVALID_MODEL_REF"
	codeModelRefNotAllowed = "MODEL_REF_NOT_ALLOWED"
)

// statusOf maps error codes to HTTP status codes.
var statusOf = map[string]int{
	actors.CodeInvalidParams: 400, codeInvalidModelRef: 400,
	codeUnauthorized:        401,
	codeModelRefNotAllowed:  403,
	actors.CodePoolNotFound: 404, actors.CodeLeaseNotFound: 404, codeNotFound: 404,
	codeMethodNotAllowed:   405,
	actors.CodePoolUnready: 409, actors.CodePoolDraining: 409, actors.CodePoolBusy: 409, actors.CodeReloadInProgress: 409,
	actors.CodeReloadFailed: 409, actors.CodePreflightFailed: 409,
	codePayloadTooLarge:        413,
	actors.CodeInternal:        500,
	actors.CodePoolUnavailable: 503,
}

// retriable says whether a caller may retry the same request later.
var retriable = map[string]bool{actors.CodePoolUnready: true, actors.CodePoolBusy: true, actors.CodePoolUnavailable: true,
	actors.CodeReloadInProgress: true, actors.CodeInternal: true}

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
		{"GET", "/healthz", open, d.getHealthz},
		{"GET", "/readyz", open, d.getReadyz},
		{"GET", "/metrics", open, d.getMetrics},
		{"GET", "/v1/pools", token, d.listPools},
		{"GET", "/v1/pools/{id}", token, d.getPool},
		{"GET", "/v1/pools/{id}/health", token, d.getPoolHealth},
		{"GET", "/v1/pools/{id}/logs", token, d.getLogs},
		{"POST", "/v1/pools/{id}/drain", token, d.postDrain},
		{"POST", "/v1/pools/{id}/reload", newWork, d.postReload},
		{"POST", "/v1/pools/{id}/start", newWork, d.postStart},
		{"POST", "/v1/pools/{id}/leases", newWork, d.postLease},
		{"DELETE", "/v1/pools/{id}/leases/{lease_id}", token, d.deleteLease},
		{"POST", "/v1/placement", newWork, d.postPlacement},
		{"GET", "/v1/events", token, d.getEvents},
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
	// path exists under another method. Like every route but the probes, it
	// needs the token when one is set, so routes cannot be enumerated
	// without it.
	mux.Handle("/", d.wrap(route{path: "unmatched", access: token, h: func(w http.ResponseWriter, r *http.Request) error {
		for p, methods := range paths {
			probe := r.Clone(r.Context())
			for _, m := range methods {
				probe.Method = m
				if _, pat := mux.Handler(probe); pat == m+" "+p {
					w.Header().Set("Allow", strings.Join(methods, ", "))
					return errf(codeMethodNotAllowed, "%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(methods, ", "))
				}
			}
		}
		return notFound(r)
	}}))
	// A path that is not clean ("//", ".", "..", a trailing "/") would get
	// ServeMux's redirect with an HTML body: answer JSON 404 instead.
	unclean := d.wrap(route{path: "unclean", access: token, h: func(w http.ResponseWriter, r *http.Request) error {
		return notFound(r)
	}})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; path.Clean(p) != p {
			unclean.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func notFound(r *http.Request) *apiError {
	return errf(codeNotFound, "no route %s %s", r.Method, r.URL.Path)
}

// statusWriter records the status code for logs and metrics, and carries
// the request's correlation id to the handlers (correlationID).
type statusWriter struct {
	http.ResponseWriter
	code int
	cid  string
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

// FlushError flushes and reports a failed write (http.ResponseController
// uses it), e.g. one past the write deadline of an event stream.
func (s *statusWriter) FlushError() error {
	return http.NewResponseController(s.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection (write deadlines).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// wrap adds, around every handler: correlation id, auth, body limit, panic
// recovery, error rendering, access log and the latency metric.
func (d *Daemon) wrap(rt route) http.Handler {
	label := rt.path
	if rt.method != "" {
		label = rt.method + " " + rt.path
	}
	obs := d.metrics.apiRoute(label)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		cid := r.Header.Get("X-Correlation-Id")
		if cid == "" || len(cid) > 128 {
			cid = newID()
		}
		w.Header().Set("X-Correlation-Id", cid)
		sw := &statusWriter{ResponseWriter: w, cid: cid}
		defer func() {
			if p := recover(); p != nil {
				d.log.Error("api.panic", "panic", fmt.Sprint(p), "route", label, "correlation_id", cid)
				if sw.code == 0 {
					writeErr(sw, errf(actors.CodeInternal, "internal error (correlation id %s)", cid))
				}
			}
			obs.observe(sw.code, time.Since(start))
			lvl := slog.LevelDebug
			if r.Method != "GET" || sw.code >= 400 {
				lvl = slog.LevelInfo
			}
			// The record's arguments are built only when it is written: a
			// GET's is Debug, off in production, and boxing them costs.
			if ctx := r.Context(); d.log.Enabled(ctx, lvl) {
				d.log.Log(ctx, lvl, "api.request", "method", clip(r.Method), "path", clip(r.URL.Path), "code", sw.code,
					"duration_ms", time.Since(start).Milliseconds(), "correlation_id", cid)
			}
		}()
		if rt.access != open && !d.authorized(r) {
			sw.Header().Set("WWW-Authenticate", `Bearer realm="pool-managerd"`)
			msg := "missing or wrong bearer token"
			if d.opts.Token == "" { // only the generated write token is wanted
				msg += fmt.Sprintf("; %s needs the token the daemon (running as root without auth.token_file) wrote to %s",
					r.Method, d.opts.WriteTokenFile)
			}
			writeErr(sw, errf(codeUnauthorized, "%s", msg))
			return
		}
		if rt.access == newWork && d.shuttingDown() {
			writeErr(sw, errf(actors.CodePoolUnavailable, "daemon is shutting down"))
			return
		}
		if r.Body != http.NoBody { // the server's body of a request without one: nothing to bound
			r.Body = http.MaxBytesReader(sw, r.Body, maxBody)
		}
		err := rt.h(sw, r)
		if err != nil && r.Context().Err() != nil && errors.Is(err, r.Context().Err()) {
			return // the client went away (e.g. during reload wait:true): nobody to answer
		}
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				d.log.Error("api.internal_error", "err", err, "route", label, "correlation_id", cid)
				ae = errf(actors.CodeInternal, "%v", err)
			}
			writeErr(sw, ae)
			return
		}
	})
}

// maxLogField bounds a request-derived string in a log record (the path,
// the method): a client without credentials must not be able to write
// megabytes of log per request.
const maxLogField = 256

// clip returns s cut to maxLogField bytes (at a UTF-8 boundary) with a
// marker saying how much was left out, or s itself when it is short enough.
func clip(s string) string {
	if len(s) <= maxLogField {
		return s
	}
	cut := maxLogField
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(truncated " + strconv.Itoa(len(s)-cut) + " bytes)"
}

// authorized checks "Authorization: Bearer <token>" against the token the
// request needs: Options.Token when one is set; else, for a request that
// is not GET or HEAD, Options.WriteToken when one is set; else none. The
// scheme name is case-insensitive (RFC 7235 §2.1), so "bearer x" works too.
func (d *Daemon) authorized(r *http.Request) bool {
	want := d.opts.Token
	if want == "" && r.Method != http.MethodGet && r.Method != http.MethodHead {
		want = d.opts.WriteToken
	}
	if want == "" {
		return true
	}
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	got = strings.TrimLeft(got, " ")
	return ok && strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
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

// encodeFailed is the 500 answer for a value encoding/json refuses.
const encodeFailed = `{"code":"INTERNAL","message":"encode response","retriable":true}` + "\n"

func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		code = 500
		buf.Reset()
		buf.WriteString(encodeFailed)
	}
	writeBody(w, code, buf.Bytes())
}

// writeBody answers the JSON body b with code.
func writeBody(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// decode reads a strict JSON body into v (a pointer to a struct): the body
// must be one JSON object; unknown fields, wrong types, trailing data and
// oversize bodies are errors. An empty body is allowed (every field is
// optional or checked by the caller). Messages name JSON fields and JSON
// types, never Go types.
func decode(r *http.Request, v any) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errf(codePayloadTooLarge, "request body over %d bytes", mbe.Limit)
		}
		return errf(actors.CodeInvalidParams, "read body: %v", err)
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil
	}
	if body[0] != '{' {
		// A JSON value that is not an object ([], 5, "x", null), or no JSON
		// at all: the first token tells them apart.
		if _, err := json.NewDecoder(bytes.NewReader(body)).Token(); err == nil {
			return errf(actors.CodeInvalidParams, "request body must be a JSON object")
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return errf(actors.CodeInvalidParams, "field %q must be %s, not %s", te.Field, describeField(v, te), describeJSON(te.Value))
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return errf(actors.CodeInvalidParams, "invalid JSON body at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return errf(actors.CodeInvalidParams, "invalid JSON body: it ends too early")
		}
		return errf(actors.CodeInvalidParams, "invalid JSON body: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return errf(actors.CodeInvalidParams, "invalid JSON body: trailing data after the object")
	}
	return nil
}

// describeField says, in JSON words, what the field of a type error must
// be: the type of the struct field it names when there is one (so an array
// element of the wrong type still reads "a list of strings"), else the Go
// type the decoder wanted.
func describeField(v any, te *json.UnmarshalTypeError) string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && t.Kind() == reflect.Struct && te.Field != "" {
		name, _, _ := strings.Cut(te.Field, ".")
		for i := range t.NumField() {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == name || tag == "" && strings.EqualFold(f.Name, name) {
				return describeType(f.Type)
			}
		}
	}
	return describeType(te.Type)
}

// describeType names a Go type by the JSON value it decodes from.
func describeType(t reflect.Type) string {
	if t == nil {
		return "a JSON value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		if e := describeType(t.Elem()); e != "a JSON value" {
			return "a list of " + plural(e)
		}
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a JSON value"
}

// plural turns "a string" into "strings", "an integer" into "integers".
func plural(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "an "), "a ")
	if strings.HasPrefix(s, "list of ") {
		return "lists of " + strings.TrimPrefix(s, "list of ")
	}
	return s + "s"
}

// describeJSON names the JSON value of a type error ("string", "number 1.5",
// "array", …) as a phrase.
func describeJSON(v string) string {
	switch v {
	case "string":
		return "a string"
	case "number":
		return "a number"
	case "bool":
		return "a boolean"
	case "array":
		return "a list"
	case "object":
		return "an object"
	case "null":
		return "null"
	}
	if n, ok := strings.CutPrefix(v, "number "); ok {
		return n
	}
	return v
}

// maxMS bounds deadline_ms and ttl_ms: a year is beyond any drain or lease,
// and larger values would overflow a time.Duration.
const maxMS = 365 * 24 * 3600 * 1000

func msDuration(field string, v *int64) (time.Duration, error) {
	if v == nil {
		return -1, nil
	}
	if *v < 0 || *v > maxMS {
		return 0, errf(actors.CodeInvalidParams, "%s must be between 0 and %d (one year), got %d", field, maxMS, *v)
	}
	return time.Duration(*v) * time.Millisecond, nil
}

// correlationID is the request's X-Correlation-Id (echoed or generated);
// w is the writer wrap hands the handler.
func correlationID(w http.ResponseWriter) string {
	for w != nil {
		if sw, ok := w.(*statusWriter); ok {
			return sw.cid
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		w = u.Unwrap() // a writer wrapped around wrap's (a middleware)
	}
	return ""
}
