package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A trimmed copy of what llama-server b4747 answers at GET /props.
const llamaProps = `{"default_generation_settings":{"id":0,"n_ctx":128,"params":{"n_predict":-1}},
"total_slots":2,"model_path":"/m/tiny-a.gguf","chat_template":"{%- for m in messages -%}","bos_token":"<s>","eos_token":"</s>","build_info":"b4747-c392e509"}`

func TestParseFactsEachEngine(t *testing.T) {
	cases := []struct {
		kind, body string
		want       Facts
	}{
		{"llamacpp", llamaProps, Facts{Version: "b4747-c392e509", Slots: 2}},
		{"llamacpp", `{"build_info":"b0-unknown"}`, Facts{Version: "b0-unknown"}}, // no total_slots: unknown
		{"llamacpp", `{"total_slots":0}`, Facts{}},                                // 0 slots is no answer
		{"vllm", `{"version":"0.6.3.post1"}`, Facts{Version: "0.6.3.post1"}},
		{"tgi", `{"model_id":"m","version":"2.4.0","max_concurrent_requests":128,"sha":"abc"}`, Facts{Version: "2.4.0"}},
		{"tgi", `{"model_id":"m"}`, Facts{}},
	}
	for _, c := range cases {
		got, err := ParseFacts(c.kind, []byte(c.body))
		if err != nil || got != c.want {
			t.Errorf("ParseFacts(%s, %s) = %+v, %v; want %+v", c.kind, c.body, got, err, c.want)
		}
	}
	for _, c := range []struct{ kind, body string }{{"llamacpp", "<html>"}, {"vllm", ""}, {"tgi", "[1]"}, {"custom", "{}"}} {
		if _, err := ParseFacts(c.kind, []byte(c.body)); err == nil {
			t.Errorf("ParseFacts(%s, %q): no error", c.kind, c.body)
		}
	}
}

func TestFactsPathPresets(t *testing.T) {
	for kind, want := range map[string]string{"llamacpp": "/props", "vllm": "/version", "tgi": "/info", "custom": ""} {
		if got := FactsPath(kind); got != want {
			t.Errorf("FactsPath(%s) = %q, want %q", kind, got, want)
		}
	}
}

func TestQueryFactsHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/version":
			w.Write([]byte(`{"version":"0.7.0"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	f, err := QueryFacts(context.Background(), nil, "vllm", srv.URL, 10*time.Second)
	if err != nil || f.Version != "0.7.0" {
		t.Fatalf("vllm: %+v %v", f, err)
	}
	if _, err := QueryFacts(context.Background(), nil, "tgi", srv.URL, 10*time.Second); err == nil {
		t.Fatal("tgi against a 404: no error")
	}
}

func TestModelDigestCachedBySizeAndMtime(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(p, []byte("GGUF one"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := func(b string) string { h := sha256.Sum256([]byte(b)); return "sha256:" + hex.EncodeToString(h[:]) }
	ctx := context.Background()
	d, err := ModelDigest(ctx, p)
	if err != nil || d != sum("GGUF one") {
		t.Fatalf("digest %q %v", d, err)
	}
	// Same size, same mtime: the cache answers even though the bytes differ
	// (that is the cache key; a model rewritten in place changes its mtime).
	mt := time.Now().Add(-time.Hour)
	os.Chtimes(p, mt, mt)
	d1, _ := ModelDigest(ctx, p)
	os.WriteFile(p, []byte("GGUF two"), 0o644)
	os.Chtimes(p, mt, mt)
	if d2, _ := ModelDigest(ctx, p); d2 != d1 {
		t.Fatalf("same path, size and mtime: %q then %q (not cached)", d1, d2)
	}
	mt2 := mt.Add(time.Minute)
	os.Chtimes(p, mt2, mt2)
	if d3, _ := ModelDigest(ctx, p); d3 != sum("GGUF two") {
		t.Fatalf("after an mtime change: %q, want the new content's digest", d3)
	}
	if _, err := ModelDigest(ctx, filepath.Dir(p)); err == nil {
		t.Fatal("a directory: no error")
	}
	if _, err := ModelDigest(ctx, p+".missing"); err == nil {
		t.Fatal("a missing file: no error")
	}
}
