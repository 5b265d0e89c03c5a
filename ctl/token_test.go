package ctl

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// Tests never read this machine's real token file.
func init() { generatedTokenFile = "/nonexistent/pool-managerd/api.token" }

// With no token given, poolctl sends the generated token file's token to a
// local daemon, and never to a remote one; a given token wins.
func TestGeneratedTokenFileIsDefaultForLocalDaemons(t *testing.T) {
	file := filepath.Join(t.TempDir(), "api.token")
	if err := os.WriteFile(file, []byte("generated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := generatedTokenFile
	generatedTokenFile = file
	t.Cleanup(func() { generatedTokenFile = old })

	f := newFake(t, map[string]http.HandlerFunc{"POST /v1/pools/a/start": reply(202, `{"pool_id":"a","state":"preload"}`)})
	_, errOut, code := runCLI(t, context.Background(), f.srv.URL, "start", "a")
	wantCode(t, code, 0, errOut)
	if got := f.only(t).Auth; got != "Bearer generated" {
		t.Errorf("Authorization %q, want the generated token", got)
	}
	_, errOut, code = runCLI(t, context.Background(), f.srv.URL, "start", "a", "--token", "given")
	wantCode(t, code, 0, errOut)
	if got := f.only(t).Auth; got != "Bearer given" {
		t.Errorf("Authorization %q, want the given token", got)
	}

	for addr, want := range map[string]bool{
		"127.0.0.1:9200": true, "localhost:9200": true, "[::1]:9200": true, ":9200": true, "http://127.0.0.1:1": true,
		"unix:/run/pool-managerd/api.sock": true, "10.0.0.5:9200": false, "gpu-host:9200": false, "http://gpu-host:9200": false,
		"https://[2001:db8::1]:9200": false,
	} {
		if got := local(addr); got != want {
			t.Errorf("local(%q) = %t, want %t", addr, got, want)
		}
	}
}
