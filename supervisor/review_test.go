package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/config"
	"github.com/pool-managerd/pool-managerd/internal/testutil"
)

// raw does one request without following redirects and returns the status,
// the Content-Type and the decoded JSON body (nil when not JSON).
func (td *testDaemon) raw(method, path string, hdr ...string) (int, string, map[string]any) {
	td.t.Helper()
	req, err := http.NewRequest(method, td.base+path, nil)
	if err != nil {
		td.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		td.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	ct := resp.Header.Get("Content-Type")
	var out map[string]any
	if strings.HasPrefix(ct, "application/json") {
		_ = json.Unmarshal(b, &out)
	}
	if out == nil {
		out = map[string]any{}
	}
	out["_raw"] = string(b)
	return resp.StatusCode, ct, out
}

func TestAuthSchemeIsCaseInsensitiveAndUnmatchedRoutesNeedTheToken(t *testing.T) {
	td := startDaemon(t, "s3cret", simPool("a"))
	for _, h := range []string{"Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR  s3cret"} {
		if code, _ := td.call("GET", "/v1/pools", nil, "Authorization", h); code != 200 {
			t.Errorf("Authorization %q: %d, want 200", h, code)
		}
	}
	for _, h := range []string{"Basic s3cret", "Bearers3cret", "Bearer", "s3cret", "Bearer S3CRET"} {
		code, body := td.call("GET", "/v1/pools", nil, "Authorization", h)
		expectErr(t, code, body, 401, "UNAUTHORIZED")
	}
	// Without the token, no route can be told from another.
	for _, c := range [][2]string{{"GET", "/v1/nothing"}, {"DELETE", "/v1/pools/a"}, {"GET", "/v1/pools//health"}, {"GET", "/x/../healthz"}} {
		code, body := td.call(c[0], c[1], nil)
		expectErr(t, code, body, 401, "UNAUTHORIZED")
	}
	code, body := td.call("GET", "/v1/nothing", nil, "Authorization", "Bearer s3cret")
	expectErr(t, code, body, 404, "NOT_FOUND")
	code, body = td.call("DELETE", "/v1/pools/a", nil, "Authorization", "bearer s3cret")
	expectErr(t, code, body, 405, "METHOD_NOT_ALLOWED")
	for _, open := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _ := td.call("GET", open, nil); code != 200 {
			t.Errorf("%s needs no token, got %d", open, code)
		}
	}
}

func TestUncleanPathsAnswerJSON404(t *testing.T) {
	td := startDaemon(t, "", simPool("a"))
	for _, p := range []string{"/v1/pools//health", "/v1/pools/a/../b", "/v1/pools/./a", "/v1/pools/", "//healthz", "/healthz/"} {
		code, ct, body := td.raw("GET", p)
		if code != 404 || !strings.HasPrefix(ct, "application/json") || body["code"] != "NOT_FOUND" {
			t.Errorf("GET %s: %d %s %v, want JSON 404 NOT_FOUND", p, code, ct, body["_raw"])
		}
	}
	if code, _, _ := td.raw("GET", "/"); code != 404 {
		t.Errorf("GET /: %d, want 404", code)
	}
	if code, _, _ := td.raw("GET", "/healthz"); code != 200 {
		t.Errorf("GET /healthz: %d", code)
	}
}

func TestDecodeMessagesUseJSONWords(t *testing.T) {
	for _, tc := range []struct {
		into any
		body string
		want string
	}{
		{&drainBody{}, `[]`, "request body must be a JSON object"},
		{&drainBody{}, ` 5 `, "request body must be a JSON object"},
		{&drainBody{}, `"x"`, "request body must be a JSON object"},
		{&drainBody{}, `null`, "request body must be a JSON object"},
		{&struct{}{}, `true`, "request body must be a JSON object"},
		{&drainBody{}, `{"deadline_ms": "soon"}`, `field "deadline_ms" must be an integer, not a string`},
		{&drainBody{}, `{"deadline_ms": 1.5}`, `field "deadline_ms" must be an integer, not 1.5`},
		{&reloadBody{}, `{"new_model_ref": 5}`, `field "new_model_ref" must be a string, not a number`},
		{&reloadBody{}, `{"new_model_ref": "m", "wait": "yes"}`, `field "wait" must be a boolean, not a string`},
		{&placementBody{}, `{"pool_ids": "a"}`, `field "pool_ids" must be a list of strings, not a string`},
		{&placementBody{}, `{"pool_ids": [1]}`, `field "pool_ids" must be a list of strings`},
		{&leaseBody{}, `{"ttl_ms": {}}`, `field "ttl_ms" must be an integer, not an object`},
		{&drainBody{}, `not json`, "invalid JSON body"},
		{&drainBody{}, `{"deadline_ms": 5} {}`, "trailing data"},
		{&drainBody{}, `{"deadline": 5}`, `unknown field "deadline"`},
	} {
		r := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
		err := decode(r, tc.into)
		var ae *apiError
		if !errors.As(err, &ae) || ae.Code != "INVALID_PARAMS" || ae.status != 400 {
			t.Errorf("%s: %v, want 400 INVALID_PARAMS", tc.body, err)
			continue
		}
		if !strings.Contains(ae.Message, tc.want) {
			t.Errorf("%s: message %q, want it to contain %q", tc.body, ae.Message, tc.want)
		}
		for _, goish := range []string{"supervisor.", "int64", "[]string", "struct", "Go "} {
			if strings.Contains(ae.Message, goish) {
				t.Errorf("%s: message %q exposes a Go type (%q)", tc.body, ae.Message, goish)
			}
		}
	}
	var b drainBody
	if err := decode(httptest.NewRequest("POST", "/", strings.NewReader(" \n")), &b); err != nil {
		t.Errorf("empty body: %v", err)
	}
}

func TestShutdownRefusesNewWorkButReleasesLeases(t *testing.T) {
	td := startDaemon(t, "", simPool("a"), simPool("b"))
	td.waitState("a", actors.StateReady)
	td.waitState("b", actors.StateReady)
	_, lease := td.call("POST", "/v1/pools/a/leases", nil)
	id, _ := lease["lease_id"].(string)
	if id == "" {
		t.Fatalf("lease: %v", lease["_raw"])
	}
	done := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		td.Shutdown()
		done <- time.Since(start)
	}()
	<-td.quit
	td.waitState("a", actors.StateDraining) // the held lease keeps it draining (shutdown_deadline 5s)
	for _, c := range []struct{ path, body string }{
		{"/v1/pools/a/start", ""},
		{"/v1/pools/b/reload", `{"new_model_ref": "m2"}`},
		{"/v1/pools/a/leases", ""},
		{"/v1/placement", "{}"},
	} {
		code, body := td.call("POST", c.path, c.body)
		expectErr(t, code, body, 503, "POOL_UNAVAILABLE")
		if body["message"] != "daemon is shutting down" || body["retriable"] != true {
			t.Errorf("POST %s: %v", c.path, body["_raw"])
		}
	}
	if code, body := td.call("POST", "/v1/pools/a/drain", `{"deadline_ms": 60000}`); code != 202 {
		t.Errorf("drain during shutdown: %d %v", code, body["_raw"])
	}
	released := time.Now()
	if code, body := td.call("DELETE", "/v1/pools/a/leases/"+id, nil); code != 200 {
		t.Fatalf("release during shutdown: %d %v", code, body["_raw"])
	}
	select {
	case took := <-done:
		if since := time.Since(released); since > 3*time.Second {
			t.Errorf("shutdown took %s (%s after the release), want it to end soon after the last lease went", took, since)
		}
	case <-time.After(waitLimit):
		t.Fatal("shutdown did not finish")
	}
}

func TestShutdownEndsEventStreams(t *testing.T) {
	td := startDaemon(t, "", simPool("a"))
	td.waitState("a", actors.StateReady)
	resp, err := http.Get(td.base + "/v1/events")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("events: %v %v", resp, err)
	}
	defer resp.Body.Close()
	ended := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
		}
		close(ended)
	}()
	start := time.Now()
	td.Shutdown()
	// Without ending the stream, the server's Shutdown waits its full 2 s
	// for the handler, and the stream outlives the daemon.
	if took := time.Since(start); took >= 2*time.Second {
		t.Errorf("shutdown with an open event stream took %s", took)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream is still open after the shutdown")
	}
}

func TestHurryCutsShutdownDrains(t *testing.T) {
	for _, early := range []bool{false, true} {
		name := "during shutdown"
		if early {
			name = "before shutdown"
		}
		t.Run(name, func(t *testing.T) {
			td := startDaemon(t, "", simPool("a"))
			td.waitState("a", actors.StateReady)
			if code, _ := td.call("POST", "/v1/pools/a/leases", nil); code != 201 {
				t.Fatalf("lease: %d", code)
			}
			start := time.Now()
			if early { // a second signal between the first one and Shutdown
				td.Hurry()
				td.Shutdown()
			} else {
				done := make(chan struct{})
				go func() { td.Shutdown(); close(done) }()
				td.waitState("a", actors.StateDraining)
				var wg sync.WaitGroup
				for range 2 { // any goroutine, any number of times
					wg.Add(1)
					go func() { defer wg.Done(); td.Hurry() }()
				}
				wg.Wait()
				<-done
			}
			// shutdown_deadline is 5 s: the held lease would keep it that long.
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("hurried shutdown took %s", took)
			}
			logs := td.logs.String()
			if !strings.Contains(logs, `"msg":"daemon.hurry"`) {
				t.Error("no daemon.hurry record")
			}
			if !strings.Contains(logs, `"forced":true`) {
				t.Errorf("the drain was not forced:\n%s", logs)
			}
		})
	}
}

// The registry closes the channel of a subscriber that falls behind; follow
// subscribes again (and updates, since it missed transitions).
func TestFollowResubscribesWhenItsChannelIsClosed(t *testing.T) {
	subs := make(chan chan actors.Transition, 4)
	subscribe := func() chan actors.Transition {
		ch := make(chan actors.Transition, 4)
		subs <- ch
		return ch
	}
	var updates atomic.Int32
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { follow(subscribe, func() { updates.Add(1) }, stop); close(done) }()
	first := <-subs
	close(first) // fell behind
	var second chan actors.Transition
	select {
	case second = <-subs:
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not subscribe again after its channel was closed")
	}
	waitFor(t, func() bool { return updates.Load() >= 2 })
	n := updates.Load()
	second <- actors.Transition{PoolID: "a"}
	waitFor(t, func() bool { return updates.Load() > n })
	close(stop)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not return on stop")
	}
}

// waitUntil must not spin on a closed channel: it falls back on its ticker.
func TestWaitUntilDoesNotSpinOnAClosedChannel(t *testing.T) {
	ch := make(chan actors.Transition)
	close(ch)
	var checks atomic.Int32
	ok := waitUntil(func() bool { checks.Add(1); return false }, ch, 50*time.Millisecond, 300*time.Millisecond)
	if ok {
		t.Fatal("waitUntil reported done")
	}
	if n := checks.Load(); n > 20 {
		t.Fatalf("checked %d times in 300ms with a 50ms tick: it spins on the closed channel", n)
	}
	if !waitUntil(func() bool { return checks.Add(1) > 25 }, nil, time.Millisecond, 5*time.Second) {
		t.Fatal("waitUntil did not see done")
	}
}

// pastDeadline is a context whose deadline has passed while Err is still nil
// (the moment before the context's own timer fires).
type pastDeadline struct{ context.Context }

func (pastDeadline) Deadline() (time.Time, bool) { return time.Now().Add(-time.Second), true }

func TestAskAndPingHonourDoneContexts(t *testing.T) {
	td := startDaemon(t, "")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ask(cancelled, td.Daemon, td.reg, &actors.GetPools{}); !errors.Is(err, context.Canceled) {
		t.Errorf("ask with a cancelled context: %v, want context.Canceled", err)
	}
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	if _, err := ask(expired, td.Daemon, td.reg, &actors.GetPools{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ask with an expired context: %v, want context.DeadlineExceeded", err)
	}
	if err := td.ping(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("ping with a cancelled context: %v", err)
	}
	// A deadline already past but not yet reported by Err: the future still
	// times out (protoactor starts no timer for a negative duration).
	mute := td.sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
	defer td.sys.Root.Stop(mute)
	ctx := pastDeadline{context.Background()}
	for name, call := range map[string]func() error{
		"ask": func() error { _, err := ask(ctx, td.Daemon, mute, &actors.GetPools{}); return err },
		"ping timeout": func() error {
			_, err := actors.Ask(td.sys.Root, mute, &actors.Ping{}, mustTimeout(t, ctx))
			return err
		},
	} {
		errc := make(chan error, 1)
		go func() { errc <- call() }()
		select {
		case err := <-errc:
			if err == nil {
				t.Errorf("%s: no error from an actor that never answers", name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s with a past deadline never returned", name)
		}
	}
}

func mustTimeout(t *testing.T, ctx context.Context) time.Duration {
	to, err := futureTimeout(ctx, 0)
	if err != nil || to < time.Millisecond {
		t.Fatalf("futureTimeout = %s, %v; want at least 1ms", to, err)
	}
	return to
}

func TestReloadMessage(t *testing.T) {
	for _, tc := range []struct {
		res  actors.ReloadResult
		want string
	}{
		{actors.ReloadResult{Result: "rolled_back", Error: "model missing"}, "reload rolled back: model missing"},
		{actors.ReloadResult{Result: "failed", Error: "exit 1; starting the previous model failed too: x"}, "reload failed: exit 1; starting the previous model failed too: x"},
		{actors.ReloadResult{Result: "cancelled", Error: "cancelled by a drain (api)"}, "reload cancelled: cancelled by a drain (api)"},
		{actors.ReloadResult{Result: "failed", Error: "reload failed: exit 1"}, "reload failed: exit 1"},
		{actors.ReloadResult{Result: "rolled_back"}, "reload rolled back"},
	} {
		if got := reloadMessage(tc.res); got != tc.want {
			t.Errorf("reloadMessage(%+v) = %q, want %q", tc.res, got, tc.want)
		}
	}
}

// Unknown values are null (docs/contract.md §4): a pool without engine_version says
// null in its health and in a reload's 200 answer.
func TestEmptyEngineVersionIsNull(t *testing.T) {
	p := simPool("a")
	p.EngineVersion = ""
	p.Engine = "other" // no facts endpoint: llamacpp would report the sim's /props build_info
	td := startDaemon(t, "", p)
	td.waitState("a", actors.StateReady)
	_, h := td.call("GET", "/v1/pools/a/health", nil)
	if v, ok := h["engine_version"]; !ok || v != nil {
		t.Errorf("health engine_version = %#v (present %t), want null: %v", v, ok, h["_raw"])
	}
	code, r := td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": "m2", "wait": true})
	if v, ok := r["engine_version"]; code != 200 || !ok || v != nil {
		t.Errorf("reload: %d, engine_version %#v, want 200 and null: %v", code, v, r["_raw"])
	}
	code, r = td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": "m3", "engine_version": "v9", "wait": true})
	if code != 200 || r["engine_version"] != "v9" {
		t.Errorf("reload to v9: %d %v", code, r["_raw"])
	}
	_, h = td.call("GET", "/v1/pools/a/health", nil)
	if h["engine_version"] != "v9" {
		t.Errorf("health engine_version = %#v, want v9", h["engine_version"])
	}
}

// waitFor polls cond until it holds (testutil.Eventually, 30 s).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, "the condition", cond)
}

func TestCheckUsersNamesEachThingOnce(t *testing.T) {
	err := CheckUsers([]config.Pool{{ID: "ok"}, {ID: "u", User: "no-such-user-pool-managerd"}, {ID: "v", User: "no-such-user-2"}})
	want := "pool u: user \"no-such-user-pool-managerd\": unknown user (create it: useradd --system --no-create-home --shell /usr/sbin/nologin no-such-user-pool-managerd)\npool v: user \"no-such-user-2\": unknown user (create it: useradd --system --no-create-home --shell /usr/sbin/nologin no-such-user-2)"
	if err == nil || err.Error() != want {
		t.Fatalf("CheckUsers = %v, want %q", err, want)
	}
	if _, err := New(Options{Config: &config.Config{Pools: []config.Pool{{ID: "u", User: "no-such-user-pool-managerd"}}}}); err == nil ||
		err.Error() != `pool u: user "no-such-user-pool-managerd": unknown user (create it: useradd --system --no-create-home --shell /usr/sbin/nologin no-such-user-pool-managerd)` {
		t.Fatalf("New = %v", err)
	}
}
