package ctl

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

// maxResponse bounds what poolctl reads of one answer; the largest is a
// 1000-line logs tail.
const maxResponse = 16 << 20

// client talks HTTP to one daemon, over TCP or its unix socket.
type client struct {
	base    string // scheme://host, no trailing slash
	addr    string // as the operator gave it, for hints
	token   string
	timeout time.Duration
	hc      *http.Client
}

// apiError is docs/contract.md §4's error body, plus what poolctl knows of the request.
type apiError struct {
	Status        int    `json:"-"`
	Code          string `json:"code"`
	Message       string `json:"message"`
	Retriable     bool   `json:"retriable"`
	RetryAfterMS  *int64 `json:"retry_after_ms"`
	RolledBack    *bool  `json:"rolled_back"` // RELOAD_FAILED only
	CorrelationID string `json:"-"`
}

func (e *apiError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", e.Code, e.Message)
	if e.RolledBack != nil {
		fmt.Fprintf(&b, " (rolled_back: %t)", *e.RolledBack)
	}
	if e.RetryAfterMS != nil {
		fmt.Fprintf(&b, " (retry after %dms)", *e.RetryAfterMS)
	}
	fmt.Fprintf(&b, " [correlation id %s]", e.CorrelationID)
	return b.String()
}

// connError is a failure to reach the daemon at all.
type connError struct {
	addr    string
	refused bool // nothing listens there: worth the --addr hint
	err     error
}

func (e *connError) Error() string { return fmt.Sprintf("cannot reach %s: %v", e.addr, e.err) }
func (e *connError) Unwrap() error { return e.err }

// connect builds the client from the global flags, resolving env defaults
// only now because globals may follow the subcommand.
func (c *cli) connect() (*client, error) {
	addr := firstNonEmpty(c.g.addr, os.Getenv("POOL_MANAGERD_ADDR"), defaultAddr)
	token := c.g.token
	if token == "" && c.g.tokenFile != "" {
		b, err := os.ReadFile(c.g.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		token = os.Getenv("POOL_MANAGERD_TOKEN")
	}
	if token == "" && local(addr) {
		token = readGeneratedToken()
	}
	c.g.token = token // report() hints differ with and without a token
	cl := &client{addr: addr, token: token, timeout: c.g.timeout}
	dialer := &net.Dialer{Timeout: c.g.timeout}
	tr := &http.Transport{DialContext: dialer.DialContext, ForceAttemptHTTP2: false}
	switch {
	case strings.HasPrefix(addr, "unix:"):
		path := strings.TrimPrefix(addr, "unix:")
		if path == "" {
			return nil, &usageError{msg: "--addr unix: needs a socket path"}
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", path)
		}
		cl.base = "http://pool-managerd" // the host is ignored by the unix dialer
	case strings.HasPrefix(addr, "http://"), strings.HasPrefix(addr, "https://"):
		cl.base = strings.TrimRight(addr, "/")
	default:
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, &usageError{msg: fmt.Sprintf("--addr %q: want host:port, http://host:port or unix:/path", addr)}
		}
		if host == "" { // ":9200", as in a listen address
			host = "127.0.0.1"
		}
		cl.base = "http://" + net.JoinHostPort(host, port)
	}
	cl.hc = &http.Client{Transport: tr}
	return cl, nil
}

// DefaultTokenFile is where a daemon running as root on TCP without a
// configured token writes the token it generated for mutating requests
// (under systemd, $RUNTIME_DIRECTORY/api.token, the same file with
// RuntimeDirectory=pool-managerd). poolctl reads it when no token is given
// and the daemon is local.
const DefaultTokenFile = "/run/pool-managerd/api.token"

// generatedTokenFile is DefaultTokenFile; tests point it elsewhere.
var generatedTokenFile = DefaultTokenFile

// readGeneratedToken is the content of generatedTokenFile, or "" when it
// cannot be read (it is 0600 root: other users simply get no token).
func readGeneratedToken() string {
	b, err := os.ReadFile(generatedTokenFile)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// local reports whether addr is a unix socket or a loopback address: the
// only daemons the local token file may be sent to.
func local(addr string) bool {
	if strings.HasPrefix(addr, "unix:") {
		return true
	}
	hostport := addr
	if u, err := url.Parse(addr); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		hostport = u.Host
	}
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "" || host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// newCorrelationID makes an id the daemon logs with the request, so an
// operator can find the request in the journal.
func newCorrelationID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "poolctl-" + hex.EncodeToString(b)
}

// open sends one request and returns the response with a 2xx status; any
// other status becomes an *apiError. long requests (reload --wait, events)
// are bounded by ctx only, since the daemon answers them when done.
func (cl *client) open(ctx context.Context, method, path string, in any, long bool) (*http.Response, context.CancelFunc, error) {
	return cl.openWith(ctx, method, path, in, long, nil)
}

// openWith is open with extra request headers (Last-Event-ID).
func (cl *client) openWith(ctx context.Context, method, path string, in any, long bool, hdr http.Header) (*http.Response, context.CancelFunc, error) {
	cancel := context.CancelFunc(func() {})
	if !long {
		ctx, cancel = context.WithTimeout(ctx, cl.timeout)
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			cancel()
			return nil, nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, cl.base+path, body)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	cid := newCorrelationID()
	req.Header.Set("X-Correlation-Id", cid)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cl.token != "" {
		req.Header.Set("Authorization", "Bearer "+cl.token)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := cl.hc.Do(req)
	if err != nil {
		cancel()
		return nil, nil, cl.wrapErr(ctx, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, cancel, nil
	}
	defer cancel()
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	ae := &apiError{Status: resp.StatusCode, CorrelationID: firstNonEmpty(resp.Header.Get("X-Correlation-Id"), cid)}
	if json.Unmarshal(raw, ae) != nil || ae.Code == "" {
		// Not the daemon's error shape (a proxy, or a wrong --addr).
		ae.Code = fmt.Sprintf("HTTP %d", resp.StatusCode)
		ae.Message = truncate(string(raw), 200)
		if ae.Message == "" {
			ae.Message = http.StatusText(resp.StatusCode)
		}
		ae.Message += " (not a pool-managerd error: is --addr right?)"
	}
	return nil, nil, ae
}

// call sends one request and returns the whole 2xx body.
func (cl *client) call(ctx context.Context, method, path string, in any, long bool) ([]byte, int, error) {
	resp, cancel, err := cl.open(ctx, method, path, in, long)
	if err != nil {
		return nil, 0, err
	}
	defer cancel()
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, 0, cl.wrapErr(ctx, err)
	}
	return b, resp.StatusCode, nil
}

// wrapErr turns transport errors into ones an operator can act on.
func (cl *client) wrapErr(ctx context.Context, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the URL is noise: the hint names the address
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT):
		return &connError{addr: cl.addr, refused: true, err: err}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("no answer from %s within %v (--timeout)", cl.addr, cl.timeout)
	case errors.Is(ctx.Err(), context.Canceled):
		return errors.New("interrupted")
	}
	return &connError{addr: cl.addr, err: err}
}
