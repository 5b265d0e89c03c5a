// This file probes an engine's HTTP health endpoints.

package engine

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

// probeBodyLimit is how much of a probe's body is read (and discarded) so
// the connection can be reused; health bodies are a few bytes, and a huge
// one is not worth reading.
const probeBodyLimit = 64 << 10

// probeConnBufBytes is the read and the write buffer of each probe
// connection (net/http's default is 4 KiB each). A probe request is some
// 100 bytes and a health answer's head a few hundred; longer header lines
// and bodies pass through a small buffer all the same. Every pool keeps
// one liveness connection alive, so this is per pool.
const probeConnBufBytes = 1 << 10

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

// Request sends one request to an engine (body may be nil) with at most
// timeout for the whole exchange (0: ctx alone bounds it) and returns the
// status and up to limit bytes of the answer. A nil client is the default
// probe client: never http.DefaultClient, whose proxy settings come from the
// daemon's environment and must not reroute a loopback request. The facts
// query and the inference canary use it; Probe and Scrape stream their
// answers instead.
func Request(ctx context.Context, client *http.Client, method, url, contentType string, body io.Reader, timeout time.Duration, limit int64) (int, []byte, error) {
	if client == nil {
		client = defaultProbeClient
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return 0, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	return resp.StatusCode, b, err
}

// NewProbeClient returns a keep-alive client for probing engines on
// loopback: no proxy (HTTP_PROXY in the daemon's environment must not
// reroute a loopback probe), no compression, a few idle connections per
// engine, no redirects, and no overall timeout (each Probe brings its own).
//
// Its connections ACK at once (TCP_QUICKACK, re-set before every read, see
// quickAckConn): a server that does not set TCP_NODELAY (llama-server) and
// writes its answer in two pieces would otherwise hold the second piece
// until the client's delayed ACK, about 40 ms later on Linux, on every
// kept-alive probe.
func NewProbeClient() *http.Client { return newProbeClient(false) }

// NewReadinessClient is NewProbeClient with a fresh connection per probe
// (no keep-alive): an engine that is still loading may accept, stall or
// reset connections, and a new connection also starts in the kernel's
// quick-ACK mode, so no answer waits on a delayed ACK. Readiness probes stop
// once the engine is ready, so the extra connects cost little.
func NewReadinessClient() *http.Client { return newProbeClient(true) }

func newProbeClient(fresh bool) *http.Client {
	dialer := &net.Dialer{Timeout: probeDialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return newQuickAckConn(c), nil
		},
		DisableKeepAlives:     fresh,
		MaxIdleConns:          0, // no global cap: every pool (256 and more) keeps its connection
		MaxIdleConnsPerHost:   2, // liveness, readiness and a metrics scrape at most at once
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		ExpectContinueTimeout: 0,
		ReadBufferSize:        probeConnBufBytes,
		WriteBufferSize:       probeConnBufBytes,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// quickAckConn sets TCP_QUICKACK before every read. Linux clears quick-ACK
// mode again on its own (it is not a sticky option), and setting it also
// sends an ACK that is pending, so doing it on each read means that once the
// client has read the first piece of an answer, the server's next piece is
// never held back by a delayed ACK. A connection that is not TCP is passed
// through unchanged.
type quickAckConn struct {
	net.Conn
	raw syscall.RawConn
}

func newQuickAckConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	q := &quickAckConn{Conn: c, raw: raw}
	q.quickAck()
	return q
}

func (c *quickAckConn) quickAck() {
	_ = c.raw.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}

func (c *quickAckConn) Read(b []byte) (int, error) {
	c.quickAck()
	return c.Conn.Read(b)
}
