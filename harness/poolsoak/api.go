// The soak's HTTP client: every answer is checked against docs/contract.md §4 and
// counted by route and code for the report.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// requestTimeout bounds one API call; reload with wait gets waitTimeout.
// The daemon answers everything but reload?wait in milliseconds, so hitting
// these means it is wedged.
const (
	requestTimeout = 10 * time.Second
	waitTimeout    = 30 * time.Second
)

// contractStatus is docs/contract.md §4's error codes and their HTTP status.
var contractStatus = map[string]int{
	"INVALID_PARAMS": 400, "UNAUTHORIZED": 401, "POOL_NOT_FOUND": 404, "LEASE_NOT_FOUND": 404,
	"POOL_UNREADY": 409, "POOL_DRAINING": 409, "POOL_BUSY": 409, "RELOAD_IN_PROGRESS": 409,
	"RELOAD_FAILED": 409, "PREFLIGHT_FAILED": 409, "INVALID_MODEL_REF": 400, "MODEL_REF_NOT_ALLOWED": 403, "POOL_UNAVAILABLE": 503, "PAYLOAD_TOO_LARGE": 413, "NOT_FOUND": 404,
	"METHOD_NOT_ALLOWED": 405, "INTERNAL": 500,
}

// answer is one decoded API answer.
type answer struct {
	status int
	code   string // error code; "" on success
	body   map[string]any
}

// api talks to the daemon at base (always 127.0.0.1).
type api struct {
	base string
	hc   *http.Client
	down *atomic.Bool // the daemon is being killed/restarted: transport errors expected
	fail func(format string, args ...any)
	note func(format string, args ...any) // worth reporting, not a failure

	mu     sync.Mutex
	counts map[string]int // "POST /v1/pools/{id}/drain 202" → n
}

func newAPI(addr string, down *atomic.Bool, fail, note func(string, ...any)) *api {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
		Proxy:               nil, // loopback only, never through a proxy from the environment
	}
	return &api{base: "http://" + addr, hc: &http.Client{Transport: tr}, down: down, fail: fail, note: note, counts: map[string]int{}}
}

var (
	poolPathRE  = regexp.MustCompile(`^/v1/pools/[^/]+`)
	leasePathRE = regexp.MustCompile(`/leases/[^/]+$`)
)

func routeOf(method, path string) string {
	p := poolPathRE.ReplaceAllString(path, "/v1/pools/{id}")
	p = leasePathRE.ReplaceAllString(p, "/leases/{lease_id}")
	return method + " " + p
}

// call does one request. A transport error is returned (and is a soak
// failure unless the daemon is down on purpose); any answer is checked:
// a 2xx must be in ok, anything else must be a docs/contract.md §4 error whose code
// matches its status, and the only 5xx allowed is 503 POOL_UNAVAILABLE.
func (a *api) call(ctx context.Context, method, path string, body any, ok ...int) (answer, error) {
	timeout := requestTimeout
	if m, _ := body.(map[string]any); m != nil && m["wait"] == true {
		timeout = waitTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return answer{}, err
	}
	route := routeOf(method, path)
	wasDown := a.down.Load()
	resp, err := a.hc.Do(req)
	if err != nil {
		a.count(route + " transport-error")
		if !wasDown && !a.down.Load() && ctx.Err() != context.Canceled {
			a.fail("%s: no answer: %v", route, err)
		}
		return answer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	an := answer{status: resp.StatusCode, body: map[string]any{}}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(raw, &an.body)
	}
	an.code, _ = an.body["code"].(string)
	a.count(fmt.Sprintf("%s %d", route, an.status))
	a.check(route, an, raw, ok, wasDown || a.down.Load())
	return an, nil
}

// check applies the invariants to one answer; starting is true while the
// daemon may still be starting (before the soak saw /readyz answer 200).
func (a *api) check(route string, an answer, raw []byte, ok []int, starting bool) {
	s := an.status
	switch {
	case s >= 200 && s < 300:
		if len(ok) > 0 && !slices.Contains(ok, s) {
			a.fail("%s: success %d, want one of %v: %s", route, s, ok, raw)
		}
	case contractStatus[an.code] != s:
		a.fail("%s: %d is not a docs/contract.md §4 error (code %q): %s", route, s, an.code, raw)
	case s >= 500 && an.code != "POOL_UNAVAILABLE":
		a.fail("%s: server error: %s", route, raw)
	case an.code == "POOL_NOT_FOUND" && !strings.HasPrefix(route, "POST /v1/placement") && starting:
		a.note("%s answered 404 POOL_NOT_FOUND for a configured pool while the daemon was starting (before /readyz 200)", route)
	case an.code == "POOL_NOT_FOUND" && !strings.HasPrefix(route, "POST /v1/placement"):
		a.fail("%s: a configured pool went missing: %s", route, raw)
	}
	if _, isStr := an.body["message"].(string); s >= 300 && !isStr {
		a.fail("%s: error without a message: %s", route, raw)
	}
}

func (a *api) count(key string) {
	a.mu.Lock()
	a.counts[key]++
	a.mu.Unlock()
}

// summary lists the answers by route and code, one route per line.
func (a *api) summary() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	byRoute := map[string][]string{}
	total := 0
	for k, n := range a.counts {
		i := strings.LastIndexByte(k, ' ')
		byRoute[k[:i]] = append(byRoute[k[:i]], fmt.Sprintf("%s×%d", k[i+1:], n))
		total += n
	}
	var out []string
	for r, codes := range byRoute {
		sort.Strings(codes)
		out = append(out, fmt.Sprintf("%-36s %s", r, strings.Join(codes, " ")))
	}
	sort.Strings(out)
	return append([]string{fmt.Sprintf("%d requests", total)}, out...)
}

// metric reads one unlabelled sample from GET /metrics (Prometheus text).
func (a *api) metric(ctx context.Context, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", a.base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	a.count(fmt.Sprintf("GET /metrics %d", resp.StatusCode))
	if err != nil || resp.StatusCode != 200 {
		return 0, fmt.Errorf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("GET /metrics: no %s", name)
}

// poolStatus is the part of PoolStatus the soak reads.
type poolStatus struct {
	PoolID       string `json:"pool_id"`
	State        string `json:"state"`
	PID          *int   `json:"pid"`
	ActiveLeases int    `json:"active_leases"`
	RestartCount int    `json:"restart_count"`
	ReadySinceMS *int64 `json:"ready_since_ms"`
	ModelRef     string `json:"model_ref"`
	LastError    string `json:"last_error"`
}

// pools is GET /v1/pools.
func (a *api) pools(ctx context.Context) ([]poolStatus, error) {
	an, err := a.call(ctx, "GET", "/v1/pools", nil, 200)
	if err != nil {
		return nil, err
	}
	if an.status != 200 {
		return nil, fmt.Errorf("GET /v1/pools: %d %s", an.status, an.code)
	}
	raw, _ := json.Marshal(an.body["pools"])
	var out []poolStatus
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("GET /v1/pools: %w", err)
	}
	return out, nil
}
