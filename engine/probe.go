// This file probes an engine's HTTP health endpoints.

package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
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
func NewProbeClient() *http.Client { return newProbeClient(false, nil) }

// NewReadinessClient is NewProbeClient with a fresh connection per probe
// (no keep-alive): an engine that is still loading may accept, stall or
// reset connections, and a new connection also starts in the kernel's
// quick-ACK mode, so no answer waits on a delayed ACK. Readiness probes stop
// once the engine is ready, so the extra connects cost little.
func NewReadinessClient() *http.Client { return newProbeClient(true, nil) }

// NewPoolProbeClient is NewProbeClient for one pool's engine, with the set
// of connections it dials (ProbeConns), so the pool can close all of them
// before it stops its engine: see ProbeConns. dial makes each connection
// (nil: a net.Dialer, as NewProbeClient's); what it returns is wrapped for
// TCP_QUICKACK as there when it is a TCP connection.
func NewPoolProbeClient(dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*http.Client, *ProbeConns) {
	if dial == nil {
		dial = newProbeDialer().DialContext
	}
	conns := &ProbeConns{conns: map[*probeConn]struct{}{}}
	return newProbeClient(false, func(ctx context.Context, network, addr string) (net.Conn, error) {
		return conns.dial(ctx, network, addr, dial)
	}), conns
}

func newProbeDialer() *net.Dialer {
	return &net.Dialer{Timeout: probeDialTimeout, KeepAlive: 30 * time.Second}
}

// newProbeClient builds the probe clients; dial nil is a net.Dialer whose
// connections are wrapped for TCP_QUICKACK.
func newProbeClient(fresh bool, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	if dial == nil {
		dialer := newProbeDialer()
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return newQuickAckConn(c), nil
		}
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dial,
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

// ErrProbeConnsClosed is the error of a probe connection refused by
// ProbeConns between CloseAll and Reopen, or dialed before a CloseAll and
// completed after it.
var ErrProbeConnsClosed = errors.New("probe connections closed: the engine is being stopped")

// ProbeConns is the set of open connections a pool's probe client
// (NewPoolProbeClient) has dialed. It exists because net/http cannot be
// told deterministically to drop its connections: CloseIdleConnections
// closes only the idle ones and sets a flag that closes a connection whose
// dial completes later, but any later request on the transport clears that
// flag again, so a dial that outlives the request that asked for it (a
// cancelled probe) can still leave a connection open and unused in the idle
// pool, one a gracefully stopping engine waits for. ProbeConns decides
// instead: CloseAll closes every connection in the set, and refuses every
// dial (closing its connection when it has connected) until Reopen; a dial
// that began before a CloseAll is refused even when it completes after the
// next Reopen. A connection leaves the set when it is closed. Safe for
// concurrent use.
type ProbeConns struct {
	mu     sync.Mutex
	closed bool   // between CloseAll and Reopen
	epoch  uint64 // bumped by every CloseAll
	conns  map[*probeConn]struct{}
}

// CloseAll closes every connection in the set (idle, serving a request, or
// anything else) and refuses dials from now on until Reopen: one asked for
// fails at once without connecting, one already connecting is closed when
// it completes and fails. Both fail with ErrProbeConnsClosed.
func (s *ProbeConns) CloseAll() {
	s.mu.Lock()
	s.closed = true
	s.epoch++
	conns := s.conns
	s.conns = map[*probeConn]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

// Reopen allows dials again after CloseAll (for the next engine). A dial
// that began before the CloseAll is still refused.
func (s *ProbeConns) Reopen() {
	s.mu.Lock()
	s.closed = false
	s.mu.Unlock()
}

// Len is the number of open connections in the set.
func (s *ProbeConns) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// dial makes a connection with dial and adds it to the set, unless the set
// is closed or was closed while dial ran.
func (s *ProbeConns) dial(ctx context.Context, network, addr string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (net.Conn, error) {
	s.mu.Lock()
	closed, epoch := s.closed, s.epoch
	s.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("dial %s %s: %w", network, addr, ErrProbeConnsClosed)
	}
	c, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	pc := &probeConn{Conn: newQuickAckConn(c), set: s}
	s.mu.Lock()
	if s.closed || s.epoch != epoch {
		s.mu.Unlock()
		_ = c.Close()
		return nil, fmt.Errorf("dial %s %s: connected after CloseAll: %w", network, addr, ErrProbeConnsClosed)
	}
	s.conns[pc] = struct{}{}
	s.mu.Unlock()
	return pc, nil
}

// probeConn is a connection of a ProbeConns; closing it removes it from
// the set.
type probeConn struct {
	net.Conn
	set *ProbeConns
}

func (c *probeConn) Close() error {
	c.set.mu.Lock()
	delete(c.set.conns, c)
	c.set.mu.Unlock()
	return c.Conn.Close()
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
