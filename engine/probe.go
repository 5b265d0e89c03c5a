// This file probes an engine's HTTP health endpoints.

package engine

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// probeBodyLimit is how much of a probe's body is read (and discarded) so
// the connection can be reused; health bodies are a few bytes, and a huge
// one is not worth reading.
const probeBodyLimit = 64 << 10

// probeDialTimeout bounds connecting on loopback even when a caller passes no
// timeout: a loopback connect either succeeds at once or is refused.
const probeDialTimeout = 5 * time.Second

// ProbeResult is the outcome of one probe.
type ProbeResult struct {
	Status   int // HTTP status; 0 when no response arrived
	Err      error
	Duration time.Duration
}

// OK reports a 2xx answer without error.
func (r ProbeResult) OK() bool { return r.Err == nil && r.Status >= 200 && r.Status < 300 }

// defaultProbeClient serves Probe calls made with a nil client.
var defaultProbeClient = NewProbeClient()

// Probe GETs url and waits at most timeout (0: only ctx bounds it). The body
// is read up to probeBodyLimit and discarded; a body that fails to arrive
// makes the probe fail even when the status was 2xx. Redirects are not
// followed, so a 3xx is not OK.
func Probe(ctx context.Context, client *http.Client, url string, timeout time.Duration) ProbeResult {
	if client == nil {
		client = defaultProbeClient
	}
	start := time.Now()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ProbeResult{Err: fmt.Errorf("probe %s: %w", url, err), Duration: time.Since(start)}
	}
	resp, err := client.Do(req)
	if err != nil {
		return ProbeResult{Err: err, Duration: time.Since(start)}
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, probeBodyLimit))
	if err != nil {
		err = fmt.Errorf("probe %s: reading body: %w", url, err)
	}
	return ProbeResult{Status: resp.StatusCode, Err: err, Duration: time.Since(start)}
}

// NewProbeClient returns a keep-alive client for probing engines on
// loopback: no proxy (HTTP_PROXY in the daemon's environment must not
// reroute a loopback probe), no compression, a few idle connections per
// engine, no redirects, and no overall timeout (each Probe brings its own).
func NewProbeClient() *http.Client {
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: probeDialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          0, // no global cap: every pool (256 and more) keeps its connection
		MaxIdleConnsPerHost:   2, // liveness, readiness and a metrics scrape at most at once
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		ExpectContinueTimeout: 0,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
