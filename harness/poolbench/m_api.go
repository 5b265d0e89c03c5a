// Measurements "health" and "lease": C keep-alive clients hammer the API for
// a fixed time, next to a bare net/http server answering the same bytes.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// apiRounds alternates daemon and bare phases so drift and bursts in a
// noisy machine's load (a compile next door) hit both sides alike: short
// phases, and each round's first side is the other round's second
// (daemon-bare, bare-daemon, …), so neither always runs first.
const apiRounds = 6

// op is one client operation of a load run (one request, or a lease pair).
type op func(ctx context.Context, c *http.Client, base string) error

func measureHealth(ctx context.Context, p params) ([]row, error) {
	const id = "api"
	b, err := startDaemon(ctx, p.self, simPool(id))
	if err != nil {
		return nil, err
	}
	defer b.close()
	path := "/v1/pools/" + id + "/health"
	body, err := capture(ctx, b, "GET", path, 200)
	if err != nil {
		return nil, err
	}
	bare, err := serveBare(func(mux *http.ServeMux) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) { writeBytes(w, 200, body) })
	})
	if err != nil {
		return nil, err
	}
	defer bare.Close()
	get := func(ctx context.Context, c *http.Client, base string) error {
		return do(ctx, c, "GET", base+path, 200, nil)
	}
	d, bl, err := compare(ctx, p, b.base, "http://"+bare.Addr, get)
	if err != nil {
		return nil, b.failure(err)
	}
	return []row{
		newRow("health", fmt.Sprintf("GET /v1/pools/{id}/health, %d clients", p.clients), d.rate(), "req/s", bl.rate(), "bare net/http, same bytes", ratioAtLeast(0.9)),
		newRow("health", "GET …/health p50", ms(d.lat.pct(50)), "ms", ms(bl.lat.pct(50)), "bare", nil),
		newRow("health", "GET …/health p99", ms(d.lat.pct(99)), "ms", ms(bl.lat.pct(99)), "bare", nil),
	}, nil
}

func measureLease(ctx context.Context, p params) ([]row, error) {
	const id = "api"
	pool := simPool(id)
	// More slots than clients: the measurement is the lease round trip, not
	// POOL_BUSY answers (without slots: the pool would take the simulator's
	// own total_slots, 1, from its /props).
	pool.Slots = 4 * p.clients
	b, err := startDaemon(ctx, p.self, pool)
	if err != nil {
		return nil, err
	}
	defer b.close()
	leases := "/v1/pools/" + id + "/leases"
	body, err := capture(ctx, b, "POST", leases, 201)
	if err != nil {
		return nil, err
	}
	var l struct {
		LeaseID string `json:"lease_id"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		return nil, err
	}
	released, err := capture(ctx, b, "DELETE", leases+"/"+l.LeaseID, 200)
	if err != nil {
		return nil, err
	}
	bare, err := serveBare(func(mux *http.ServeMux) {
		mux.HandleFunc("POST "+leases, func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			writeBytes(w, 201, body)
		})
		mux.HandleFunc("DELETE "+leases+"/{lease}", func(w http.ResponseWriter, _ *http.Request) { writeBytes(w, 200, released) })
	})
	if err != nil {
		return nil, err
	}
	defer bare.Close()
	pair := func(ctx context.Context, c *http.Client, base string) error {
		var got struct {
			LeaseID string `json:"lease_id"`
		}
		if err := do(ctx, c, "POST", base+leases, 201, &got); err != nil {
			return err
		}
		return do(ctx, c, "DELETE", base+leases+"/"+got.LeaseID, 200, nil)
	}
	d, bl, err := compare(ctx, p, b.base, "http://"+bare.Addr, pair)
	if err != nil {
		return nil, b.failure(err)
	}
	return []row{
		newRow("lease", fmt.Sprintf("lease POST+DELETE pairs, %d clients", p.clients), d.rate(), "ops/s", bl.rate(), "bare net/http, same bytes", nil),
		newRow("lease", "lease pair p50", ms(d.lat.pct(50)), "ms", ms(bl.lat.pct(50)), "bare", nil),
		newRow("lease", "lease pair p99", ms(d.lat.pct(99)), "ms", ms(bl.lat.pct(99)), "bare", nil),
	}, nil
}

// capture does one request against the daemon and returns its body.
func capture(ctx context.Context, b *benchDaemon, method, path string, want int) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, b.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != want {
		err = fmt.Errorf("%s %s: HTTP %d, want %d: %s", method, path, resp.StatusCode, want, body)
	}
	return body, err
}

// loadResult is what one side of a comparison did.
type loadResult struct {
	ops  int
	errs int
	dur  time.Duration
	lat  dist
}

func (r loadResult) rate() float64 { return float64(r.ops) / r.dur.Seconds() }

// compare runs o against the daemon and the bare server in alternating
// phases, apiDur in total for each side.
func compare(ctx context.Context, p params, daemon, bare string, o op) (d, b loadResult, err error) {
	phase := p.apiDur / apiRounds
	for i := 0; i < apiRounds; i++ {
		sides := []struct {
			base string
			into *loadResult
		}{{daemon, &d}, {bare, &b}}
		if i%2 == 1 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, side := range sides {
			r := hammer(ctx, p.clients, phase, side.base, o)
			side.into.ops += r.ops
			side.into.errs += r.errs
			side.into.dur += r.dur
			side.into.lat = append(side.into.lat, r.lat...)
		}
	}
	if err := ctx.Err(); err != nil {
		return d, b, err
	}
	if d.errs > 0 || b.errs > 0 || d.ops == 0 || b.ops == 0 {
		return d, b, fmt.Errorf("load run: daemon %d ok / %d failed, bare %d ok / %d failed", d.ops, d.errs, b.ops, b.errs)
	}
	return d, b, nil
}

// warmup is run (and not counted) before each phase: connections are open
// and the handlers' code paths are hot when the clock starts.
const warmup = 50 * time.Millisecond

// hammer runs o from `clients` goroutines for dur, each with a keep-alive
// connection of its own.
func hammer(ctx context.Context, clients int, dur time.Duration, base string, o op) loadResult {
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	run := func(d time.Duration) loadResult {
		var mu sync.Mutex
		var res loadResult
		var wg sync.WaitGroup
		start := time.Now()
		end := start.Add(d)
		for i := 0; i < clients; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var lat dist
				errs := 0
				for t := time.Now(); t.Before(end) && ctx.Err() == nil; t = time.Now() {
					if err := o(ctx, c, base); err != nil {
						errs++
						continue
					}
					lat = append(lat, time.Since(t))
				}
				mu.Lock()
				res.lat = append(res.lat, lat...)
				res.errs += errs
				mu.Unlock()
			}()
		}
		wg.Wait()
		res.ops, res.dur = len(res.lat), time.Since(start)
		return res
	}
	run(warmup)
	return run(dur)
}

// do sends one request with an empty JSON body for POST, checks the status
// and decodes the answer into out when out is not nil.
func do(ctx context.Context, c *http.Client, method, url string, want int, out any) error {
	var body io.Reader
	if method == "POST" {
		body = bytes.NewReader([]byte("{}"))
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	if out == nil {
		drain(resp)
	} else {
		err = json.NewDecoder(resp.Body).Decode(out)
		drain(resp)
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: HTTP %d", method, url, resp.StatusCode)
	}
	return err
}

// drain reads and closes a response body so its connection is reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
}

// bareServer is a plain net/http server on its own loopback port.
type bareServer struct {
	Addr string
	srv  *http.Server
}

func serveBare(routes func(*http.ServeMux)) (*bareServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	routes(mux)
	s := &bareServer{Addr: ln.Addr().String(), srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() { _ = s.srv.Serve(ln) }() // ends with ErrServerClosed on Close
	return s, nil
}

func (s *bareServer) Close() { _ = s.srv.Close() }

func writeBytes(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
