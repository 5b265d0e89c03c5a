package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/engine"
)

func TestProbeLoadingThenReady(t *testing.T) {
	t.Parallel()
	sink := engine.NewSink(nil, 100, 0, 0)
	_, port := startSim(t, sink, "--load-time", "1500ms")
	waitLines(t, sink, "sim-engine: loading model", 1) // printed once the port is bound
	client := engine.NewProbeClient()
	url := fmt.Sprintf("http://127.0.0.1:%d/health", port)

	r := engine.Probe(context.Background(), client, url, time.Second)
	if r.Err != nil || r.Status != http.StatusServiceUnavailable || r.OK() {
		t.Fatalf("probe while loading = %+v, want 503", r)
	}
	waitFor(t, 10*time.Second, "readiness 200", func() bool {
		r = engine.Probe(context.Background(), client, url, time.Second)
		return r.OK()
	})
	if r.Status != http.StatusOK || r.Duration <= 0 {
		t.Fatalf("ready probe = %+v", r)
	}
	waitLines(t, sink, "sim-engine: ready at_unix_nano=", 1)
}

func TestProbeHungHealthTimesOut(t *testing.T) {
	t.Parallel()
	sink := engine.NewSink(nil, 100, 0, 0)
	_, port := startSim(t, sink, "--hang-health")
	waitLines(t, sink, "sim-engine: ready", 1)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	const timeout = 300 * time.Millisecond
	r := engine.Probe(context.Background(), nil, base+"/health", timeout)
	if r.Err == nil || r.OK() || !errors.Is(r.Err, context.DeadlineExceeded) {
		t.Fatalf("probe of a hung /health = %+v, want a deadline error", r)
	}
	if r.Duration < timeout-20*time.Millisecond {
		t.Fatalf("probe gave up after %v, before its %v timeout", r.Duration, timeout)
	}
	// The port stays open: /metrics answers.
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"llamacpp:requests_processing 0", "llamacpp:requests_deferred 0"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}

func TestProbeHangHealthAfter(t *testing.T) {
	t.Parallel()
	sink := engine.NewSink(nil, 100, 0, 0)
	_, port := startSim(t, sink, "--hang-health-after", "2s")
	waitLines(t, sink, "sim-engine: ready", 1)
	url := fmt.Sprintf("http://127.0.0.1:%d/health", port)
	if r := engine.Probe(context.Background(), nil, url, time.Second); !r.OK() {
		t.Fatalf("probe before the hang = %+v, want 200", r)
	}
	waitFor(t, 10*time.Second, "/health to hang", func() bool {
		return engine.Probe(context.Background(), nil, url, 200*time.Millisecond).Err != nil
	})
}

func TestProbeRefusedAndCancelled(t *testing.T) {
	t.Parallel()
	port, err := engine.FreePort("")
	if err != nil {
		t.Fatal(err)
	}
	r := engine.Probe(context.Background(), nil, fmt.Sprintf("http://127.0.0.1:%d/health", port), time.Second)
	if r.Err == nil || r.Status != 0 || r.OK() {
		t.Fatalf("probe of a closed port = %+v, want an error", r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := engine.Probe(ctx, nil, fmt.Sprintf("http://127.0.0.1:%d/health", port), 0); r.Err == nil {
		t.Fatalf("probe with a cancelled context = %+v, want an error", r)
	}
}

func TestSimEndpoints(t *testing.T) {
	t.Parallel()
	sink := engine.NewSink(nil, 100, 0, 0)
	_, port := startSim(t, sink, "--model", "llama-test", "--parallel", "4")
	waitLines(t, sink, "sim-engine: ready", 1)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for path, want := range map[string]string{
		"/health":    `{"status":"ok"}`,
		"/v1/models": `"id":"llama-test"`,
		"/props":     `"total_slots":4`,
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %s, want 200 with %s", path, resp.StatusCode, body, want)
		}
	}
}

// connCounter is an HTTP server on loopback that counts the connections
// clients open to it.
func connCounter(t *testing.T) (url string, conns func() int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL + "/health", n.Load
}

// The readiness client opens a fresh connection for every probe (no answer
// can wait on a delayed ACK of a kept-alive connection); the probe client
// keeps one.
func TestReadinessClientFreshConnectionPerProbe(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		client *http.Client
		want   int64
	}{{"readiness", engine.NewReadinessClient(), 3}, {"probe", engine.NewProbeClient(), 1}} {
		url, conns := connCounter(t)
		for i := 0; i < 3; i++ {
			if r := engine.Probe(context.Background(), c.client, url, 5*time.Second); !r.OK() {
				t.Fatalf("%s probe %d = %+v", c.name, i, r)
			}
		}
		if got := conns(); got != c.want {
			t.Errorf("%s client: 3 probes opened %d connections, want %d", c.name, got, c.want)
		}
	}
}

// The probe client's connection buffers are small (1 KiB): a header line
// and a body many times that size still come through whole, on one
// kept-alive connection.
func TestProbeClientLongHeadersAndBodies(t *testing.T) {
	t.Parallel()
	longHeader := strings.Repeat("h", 6<<10)
	var metrics strings.Builder
	for i := range 4000 { // ~150 KiB, the series asked for last
		fmt.Fprintf(&metrics, "filler_series_total{n=\"%d\"} %d\n", i, i)
	}
	metrics.WriteString("wanted_series 42\n")
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Long", longHeader)
		if r.URL.Path == "/metrics" {
			_, _ = io.WriteString(w, metrics.String())
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	client := engine.NewProbeClient()
	ctx := context.Background()
	if r := engine.Probe(ctx, client, srv.URL+"/health", 10*time.Second); !r.OK() {
		t.Fatalf("probe with a 6 KiB header line = %+v", r)
	}
	status, body, err := engine.Request(ctx, client, http.MethodGet, srv.URL+"/metrics", "", nil, 10*time.Second, 1<<20)
	if err != nil || status != 200 || string(body) != metrics.String() {
		t.Fatalf("Request = %d, %d bytes, %v; want 200 and %d bytes", status, len(body), err, metrics.Len())
	}
	got, err := engine.Scrape(ctx, client, srv.URL+"/metrics", 10*time.Second, "wanted_series")
	if err != nil || got["wanted_series"] != 42 {
		t.Fatalf("Scrape = %v, %v", got, err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1 kept alive", n)
	}
}
