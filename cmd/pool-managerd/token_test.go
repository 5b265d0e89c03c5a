package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pool-managerd/pool-managerd/config"
)

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("  from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := func(f string) *config.Config { return &config.Config{Auth: config.Auth{TokenFile: f}} }

	t.Setenv("POOL_MANAGERD_TOKEN", "")
	if tok, err := readToken(cfg(file)); err != nil || tok != "from-file" {
		t.Fatalf("token file: %q %v", tok, err)
	}
	if tok, err := readToken(cfg("")); err != nil || tok != "" {
		t.Fatalf("no token: %q %v", tok, err)
	}
	if _, err := readToken(cfg(empty)); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty token file accepted: %v", err)
	}
	if _, err := readToken(cfg(filepath.Join(dir, "missing"))); err == nil || !strings.Contains(err.Error(), "auth.token_file") {
		t.Fatalf("missing token file: %v", err)
	}
	t.Setenv("POOL_MANAGERD_TOKEN", "from-env")
	if tok, err := readToken(cfg(file)); err != nil || tok != "from-env" {
		t.Fatalf("the environment must win over the file: %q %v", tok, err)
	}
}
