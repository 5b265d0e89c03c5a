package supervisor

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pool-managerd/pool-managerd/actors"
	"github.com/pool-managerd/pool-managerd/config"
)

// shellPool is a pool whose command is the form the README shows for a
// shell: [sh, -c, "exec server … ${MODEL_REF} …"].
func shellPool(id string) config.Pool {
	p := simPool(id, "--load-time", "100ms")
	p.Command = []string{"sh", "-c", "exec '" + os.Args[0] + "' --host ${HOST} --port ${PORT} --model ${MODEL_REF} --load-time 100ms"}
	return p
}

// A reload whose new_model_ref holds shell metacharacters is refused before
// anything starts: the engine's shell never sees it, the file its command
// substitution would create never appears, and the engine keeps running.
func TestReloadRefusesShellMetacharacters(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "pwned")
	td := startDaemon(t, "", shellPool("a"))
	st := td.waitState("a", actors.StateReady)
	pid := st["pid"]
	for _, ref := range []string{
		"$(touch " + marker + ")m", "`touch " + marker + "`", "m; touch " + marker, "m\ntouch " + marker,
		"m && touch " + marker, "m|touch " + marker, "'$(touch " + marker + ")'",
	} {
		code, body := td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": ref, "wait": true})
		expectErr(t, code, body, 400, "INVALID_MODEL_REF")
		if msg := body["message"].(string); !strings.Contains(msg, "new_model_ref") || !strings.Contains(msg, "not allowed") {
			t.Errorf("%q: message %q does not name the problem", ref, msg)
		}
	}
	for _, tc := range []struct{ ref, msg string }{
		{"-rf", `starts with "-"`}, {"/models/../etc/shadow", `".."`}, {strings.Repeat("m", config.MaxModelRefLen+1), "at most"},
	} {
		code, body := td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": tc.ref})
		expectErr(t, code, body, 400, "INVALID_MODEL_REF")
		if !strings.Contains(body["message"].(string), tc.msg) {
			t.Errorf("%q: message %q, want %q", tc.ref, body["message"], tc.msg)
		}
	}
	code, body := td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": "m2", "engine_version": "v\n2"})
	expectErr(t, code, body, 400, "INVALID_PARAMS")
	code, body = td.call("POST", "/v1/pools/nope/reload", map[string]any{"new_model_ref": "$(id)"})
	expectErr(t, code, body, 404, "POOL_NOT_FOUND")
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the injected command ran")
	}
	_, st = td.call("GET", "/v1/pools/a", nil)
	if st["state"] != "ready" || st["pid"] != pid || st["model_ref"] != "test/a" {
		t.Fatalf("a refused reload touched the pool: %v", st["_raw"])
	}
	// A clean reference still reloads through the shell.
	code, body = td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": "org/model-2:q4", "wait": true})
	if code != 200 || body["result"] != "succeeded" {
		t.Fatalf("clean reload: %d %v", code, body["_raw"])
	}
}

// reload_allowed narrows what a reload may name: 403 MODEL_REF_NOT_ALLOWED
// for anything else, and it follows SIGHUP.
func TestReloadAllowed(t *testing.T) {
	p := simPool("a", "--load-time", "100ms")
	p.ReloadAllowed = []string{"/models/", "TheBloke/"}
	models := t.TempDir()
	td := startDaemon(t, "", p)
	td.waitState("a", actors.StateReady)
	for _, ref := range []string{"/models-old/x.gguf", "/etc/passwd", "other/x", models + "/x.gguf"} {
		code, body := td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": ref})
		expectErr(t, code, body, 403, "MODEL_REF_NOT_ALLOWED")
		if !strings.Contains(body["message"].(string), "reload_allowed") {
			t.Errorf("%q: message %q does not name reload_allowed", ref, body["message"])
		}
	}
	code, body := td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": "TheBloke/Llama-2-7B-GGUF", "wait": true})
	if code != 200 {
		t.Fatalf("allowed prefix: %d %v", code, body["_raw"])
	}
	// SIGHUP widens the list: the handler sees the new one at once, and
	// the engine is not restarted for it.
	next := *td.cfg
	q := p
	q.ReloadAllowed = []string{"/models/", "TheBloke/", models}
	next.Pools = []config.Pool{q}
	if ch := td.Reconfigure(&next); len(ch.Unchanged) != 1 {
		t.Fatalf("a reload_allowed change reloads the pool: %+v", ch)
	}
	// A GGUF header: the reload preflight reads it.
	if err := os.WriteFile(filepath.Join(models, "x.gguf"), []byte("GGUF\x03\x00\x00\x00"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, body = td.call("POST", "/v1/pools/a/reload", map[string]any{"new_model_ref": models + "/x.gguf", "wait": true})
	if code != 200 {
		t.Fatalf("after SIGHUP: %d %v", code, body["_raw"])
	}
}

// Defence in depth: even a value that never passed CheckModelRef (sent to
// the pool actor directly, as no API caller can) reaches the engine through
// `sh -c` as one argument of data, and runs nothing.
func TestShellScriptValuesAreQuoted(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "pwned")
	td := startDaemon(t, "", shellPool("a"))
	td.waitState("a", actors.StateReady)
	ref := "$(touch " + marker + ") `touch " + marker + "`; touch " + marker + " 'x\""
	res := make(chan actors.ReloadResult, 1)
	actors.SendPool(td.sys.Root, td.pools["a"], &actors.Reload{ModelRef: ref, Deadline: -1, Result: res})
	select {
	case r := <-res:
		if r.Result != "succeeded" {
			t.Fatalf("reload: %+v\nlogs:\n%s", r, td.logs.String())
		}
	case <-time.After(waitLimit):
		t.Fatal("reload did not finish")
	}
	_, st := td.call("GET", "/v1/pools/a", nil)
	if st["state"] != "ready" || st["model_ref"] != ref {
		t.Fatalf("after reload: %v", st["_raw"])
	}
	pid, _ := st["pid"].(float64)
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if args := strings.Split(string(cmdline), "\x00"); !containsSeq(args, "--model", ref) {
		t.Fatalf("engine argv %q does not carry the reference as one argument", args)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the injected command ran")
	}
}

func containsSeq(args []string, a, b string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == a && args[i+1] == b {
			return true
		}
	}
	return false
}

// With only a write token (a root daemon on TCP without a configured
// token), reads stay open and every other method needs the token.
func TestWriteTokenGuardsMutatingRequests(t *testing.T) {
	td := startDaemonWith(t, func(o *Options) { o.WriteToken, o.WriteTokenFile = "w-tok", "/run/x/api.token" }, simPool("a", "--load-time", "100ms"))
	td.waitState("a", actors.StateReady)
	for _, path := range []string{"/v1/pools", "/v1/pools/a", "/v1/pools/a/health", "/v1/pools/a/logs", "/healthz", "/metrics"} {
		if code, body := td.call("GET", path, nil); code != 200 {
			t.Errorf("GET %s without a token: %d %v", path, code, body["_raw"])
		}
	}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/pools/a/drain", "{}"}, {"POST", "/v1/pools/a/start", ""}, {"POST", "/v1/pools/a/reload", `{"new_model_ref":"m2"}`},
		{"POST", "/v1/pools/a/leases", "{}"}, {"DELETE", "/v1/pools/a/leases/x", ""}, {"POST", "/v1/placement", "{}"},
		{"PUT", "/v1/pools/a", ""},
	} {
		for _, hdr := range [][]string{nil, {"Authorization", "Bearer wrong"}} {
			code, body := td.call(c.method, c.path, c.body, hdr...)
			expectErr(t, code, body, 401, "UNAUTHORIZED")
			if !strings.Contains(body["message"].(string), "/run/x/api.token") {
				t.Errorf("%s %s: message %q does not name the token file", c.method, c.path, body["message"])
			}
		}
	}
	_, st := td.call("GET", "/v1/pools/a", nil)
	if st["state"] != "ready" {
		t.Fatalf("an unauthorized call changed the pool: %v", st["_raw"])
	}
	code, body := td.call("POST", "/v1/pools/a/leases", "{}", "Authorization", "Bearer w-tok")
	if code != 201 {
		t.Fatalf("lease with the token: %d %v", code, body["_raw"])
	}
	code, body = td.call("POST", "/v1/pools/a/drain", "{}", "Authorization", "Bearer w-tok")
	if code != 202 {
		t.Fatalf("drain with the token: %d %v", code, body["_raw"])
	}
}
