package engine_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/engine"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

const connWait = 20 * time.Second

// connServer is a real loopback HTTP server that counts the connections it
// has accepted and those still open (not closed, not hijacked). GET /hold/N
// blocks in the handler until release(N); every other path answers 200.
type connServer struct {
	url      string
	addr     string
	mu       sync.Mutex
	open     map[net.Conn]bool
	accepted int
	entered  chan string
	holds    sync.Map // path -> chan struct{}
}

func newConnServer(t *testing.T) *connServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &connServer{addr: ln.Addr().String(), open: map[net.Conn]bool{}, entered: make(chan string, 16)}
	s.url = "http://" + s.addr
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ch, ok := s.holds.Load(r.URL.Path); ok {
				s.entered <- r.URL.Path
				select {
				case <-ch.(chan struct{}):
				case <-r.Context().Done():
				}
			}
			_, _ = io.WriteString(w, "ok")
		}),
		ConnState: func(c net.Conn, st http.ConnState) {
			s.mu.Lock()
			defer s.mu.Unlock()
			switch st {
			case http.StateNew:
				s.accepted++
				s.open[c] = true
			case http.StateClosed, http.StateHijacked:
				delete(s.open, c)
			}
		},
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// hold makes GET path block in the handler until the returned func is called.
func (s *connServer) hold(path string) (release func()) {
	ch := make(chan struct{})
	s.holds.Store(path, ch)
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func (s *connServer) counts() (open, accepted int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open), s.accepted
}

// waitAccepted waits until the server has accepted n connections in all
// (a client's connect completes before the server's Accept returns).
func (s *connServer) waitAccepted(t *testing.T, n int) {
	t.Helper()
	testutil.Eventually(t, connWait, "the server accepting the connection", func() bool { _, a := s.counts(); return a >= n })
}

func (s *connServer) waitOpen(t *testing.T, want int, what string) {
	t.Helper()
	testutil.Eventually(t, connWait, what, func() bool { open, _ := s.counts(); return open == want })
}

// gate is a dial hook that connects at once but, once armed, holds the
// next connection back from the transport until it is opened: the server
// has accepted it and the client has not got it yet.
type gate struct {
	armed     atomic.Bool
	connected chan struct{}
	open      chan struct{}
}

func newGate() *gate { return &gate{connected: make(chan struct{}), open: make(chan struct{})} }

func (g *gate) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil || !g.armed.CompareAndSwap(true, false) {
		return c, err
	}
	close(g.connected)
	<-g.open
	return c, nil
}

func (g *gate) waitConnected(t *testing.T) {
	t.Helper()
	select {
	case <-g.connected:
	case <-time.After(connWait):
		t.Fatal("the gated dial never connected")
	}
}

func get(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

// CloseAll closes every connection the pool's probe client holds, whatever
// it is doing: one serving a request, one idle in the transport's pool, and
// one whose dial completes only afterwards (for a request that gave up
// meanwhile). None is left in the set.
func TestProbeConnsCloseAllClosesBusyIdleAndDialingConnections(t *testing.T) {
	t.Parallel()
	s := newConnServer(t)
	g := newGate()
	client, conns := engine.NewPoolProbeClient(g.dial)
	release1, release2 := s.hold("/hold1"), s.hold("/hold2")
	defer release1()
	defer release2()

	busy := make(chan error, 1)
	go func() { busy <- get(context.Background(), client, s.url+"/hold1") }()
	<-s.entered
	idle := make(chan error, 1)
	go func() { idle <- get(context.Background(), client, s.url+"/hold2") }()
	<-s.entered // two connections, both serving a request

	g.armed.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	dialing := make(chan error, 1)
	go func() { dialing <- get(ctx, client, s.url+"/") }()
	g.waitConnected(t)
	cancel() // the request gives up; its dial goes on
	if err := <-dialing; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled GET = %v, want context.Canceled", err)
	}
	release2() // (only now: a waiting request would take the connection)
	if err := <-idle; err != nil {
		t.Fatalf("GET /hold2: %v", err)
	}
	s.waitOpen(t, 3, "one busy, one idle and one dialing connection")
	if n := conns.Len(); n != 2 {
		t.Fatalf("Len() = %d before CloseAll, want 2 (the dialing one is not the client's yet)", n)
	}

	conns.CloseAll()
	if n := conns.Len(); n != 0 {
		t.Fatalf("Len() = %d after CloseAll, want 0", n)
	}
	if err := <-busy; err == nil {
		t.Fatal("the request on a connection CloseAll closed succeeded")
	}
	s.waitOpen(t, 1, "the busy and the idle connection closed")
	close(g.open) // the dial completes only now
	s.waitOpen(t, 0, "the connection dialed before CloseAll closed once its dial completed")
	if n := conns.Len(); n != 0 {
		t.Fatalf("Len() = %d after the late dial, want 0", n)
	}
}

// dialResult is what one dial returned.
type dialResult struct {
	c   net.Conn
	err error
}

// heldDial arms g and starts dial to s in a goroutine; it returns once the
// server has accepted the connection, whose dial completes when g opens.
func heldDial(t *testing.T, g *gate, s *connServer, dial func(ctx context.Context, network, addr string) (net.Conn, error)) <-chan dialResult {
	t.Helper()
	g.armed.Store(true)
	res := make(chan dialResult, 1)
	go func() {
		c, err := dial(context.Background(), "tcp", s.addr)
		res <- dialResult{c, err}
	}()
	g.waitConnected(t)
	s.waitAccepted(t, 1)
	return res
}

// A dial that completes after CloseAll fails with ErrProbeConnsClosed and
// its connection is closed; a dial asked for after CloseAll does not
// connect at all; after Reopen dials work again, and a connection leaves
// the set when it is closed.
func TestProbeConnsLateDialFailsAndReopenAllowsAgain(t *testing.T) {
	t.Parallel()
	s := newConnServer(t)
	g := newGate()
	client, conns := engine.NewPoolProbeClient(g.dial)
	dial := client.Transport.(*http.Transport).DialContext

	late := heldDial(t, g, s, dial)
	conns.CloseAll()
	close(g.open)
	r := <-late
	if !errors.Is(r.err, engine.ErrProbeConnsClosed) || r.c != nil {
		t.Fatalf("dial completing after CloseAll = %v, %v; want nil, ErrProbeConnsClosed", r.c, r.err)
	}
	s.waitOpen(t, 0, "the late connection closed")

	_, acceptedBefore := s.counts()
	if c, err := dial(context.Background(), "tcp", s.addr); !errors.Is(err, engine.ErrProbeConnsClosed) || c != nil {
		t.Fatalf("dial after CloseAll = %v, %v; want nil, ErrProbeConnsClosed", c, err)
	}
	if err := get(context.Background(), client, s.url+"/"); !errors.Is(err, engine.ErrProbeConnsClosed) {
		t.Fatalf("GET after CloseAll = %v, want ErrProbeConnsClosed", err)
	}
	if _, accepted := s.counts(); accepted != acceptedBefore {
		t.Fatalf("the server accepted %d connections after CloseAll, want none", accepted-acceptedBefore)
	}

	conns.Reopen()
	c, err := dial(context.Background(), "tcp", s.addr)
	if err != nil {
		t.Fatalf("dial after Reopen: %v", err)
	}
	if n := conns.Len(); n != 1 {
		t.Fatalf("Len() = %d with one connection open, want 1", n)
	}
	_ = c.Close()
	_ = c.Close() // a second Close changes nothing
	if n := conns.Len(); n != 0 {
		t.Fatalf("Len() = %d after Close, want 0", n)
	}
	if err := get(context.Background(), client, s.url+"/"); err != nil {
		t.Fatalf("GET after Reopen: %v", err)
	}
	client.CloseIdleConnections()
	s.waitOpen(t, 0, "every connection closed")
	testutil.Eventually(t, connWait, "the set empty", func() bool { return conns.Len() == 0 })
}

// A dial that began before CloseAll is refused even when it completes
// after a Reopen: it was made for the engine that was being stopped.
func TestProbeConnsDialSpanningReopenIsRefused(t *testing.T) {
	t.Parallel()
	s := newConnServer(t)
	g := newGate()
	client, conns := engine.NewPoolProbeClient(g.dial)
	dial := client.Transport.(*http.Transport).DialContext
	stale := heldDial(t, g, s, dial)
	conns.CloseAll()
	conns.Reopen()
	close(g.open)
	r := <-stale
	if r.c != nil {
		_ = r.c.Close()
	}
	if !errors.Is(r.err, engine.ErrProbeConnsClosed) {
		t.Fatalf("dial spanning CloseAll and Reopen = %v, want ErrProbeConnsClosed", r.err)
	}
	s.waitOpen(t, 0, "the stale connection closed")
}

// The reviewer's race, step by step: the pool's metrics scrape is dialing
// when the pool stops its engine, and its liveness probe of the same tick
// has passed net/http's context check but not yet reached the idle pool
// (httptrace's GetConn runs in between). The stop cancels both and closes
// the client's connections; then the probe reaches queueForIdleConn, which
// undoes CloseIdleConnections, and the scrape's dial completes. With
// CloseIdleConnections alone that connection stays open in the idle pool
// (for IdleConnTimeout), and a gracefully stopping engine waits on it;
// CloseAll closes it however net/http treats it.
func TestProbeConnsCloseAllWinsOverALaterRequest(t *testing.T) {
	t.Parallel()
	s := newConnServer(t)
	g := newGate()
	client, conns := engine.NewPoolProbeClient(g.dial)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	g.armed.Store(true)
	scrape := make(chan error, 1)
	go func() { scrape <- get(ctx, client, s.url+"/metrics") }()
	g.waitConnected(t)
	s.waitAccepted(t, 1)

	atGetConn, goOn := make(chan struct{}), make(chan struct{})
	trace := &httptrace.ClientTrace{GetConn: func(string) {
		close(atGetConn)
		<-goOn
	}}
	probe := make(chan error, 1)
	go func() { probe <- get(httptrace.WithClientTrace(ctx, trace), client, s.url+"/health") }()
	select {
	case <-atGetConn:
	case <-time.After(connWait):
		t.Fatal("the probe never asked for a connection")
	}

	// The pool stops its engine (abandonRun, then stopEngine).
	cancel()
	conns.CloseAll()
	client.CloseIdleConnections()

	close(goOn) // the probe resets net/http's closeIdle
	if err := <-probe; err == nil {
		t.Fatal("the probe cancelled by the stop succeeded")
	}
	if err := <-scrape; !errors.Is(err, context.Canceled) {
		t.Fatalf("scrape = %v, want context.Canceled", err)
	}
	close(g.open) // the scrape's connection reaches the transport only now
	s.waitOpen(t, 0, "no connection of the client left open for the engine to wait on")
	if n := conns.Len(); n != 0 {
		t.Fatalf("Len() = %d, want 0", n)
	}
}
