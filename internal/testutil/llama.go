package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Where tests find a real llama.cpp llama-server and its two tiny models;
// README ("Tests against a real engine") says the same to users.
const (
	LlamaServerEnv = "POOL_MANAGERD_LLAMA_SERVER" // path of a llama-server binary
	LlamaModelsEnv = "POOL_MANAGERD_LLAMA_MODELS" // folder of tiny-a.gguf and tiny-b.gguf; default: beside the binary
)

// Llama is a llama-server binary and the folder of its test models.
type Llama struct {
	Server string // absolute path of the binary
	Models string // folder holding tiny-a.gguf and tiny-b.gguf
}

// Model is the absolute path of one of the test models ("tiny-a.gguf").
func (l Llama) Model(name string) string { return filepath.Join(l.Models, name) }

// FindLlama locates llama-server and both tiny models, or skips the test
// naming what it could not find: $POOL_MANAGERD_LLAMA_SERVER when set (the
// models beside it, or in $POOL_MANAGERD_LLAMA_MODELS); else
// shared/engines/llama.cpp/llama-server in a folder beside the working
// directory or beside any folder above it (a project checkout keeps its
// shared test engines next to the repository).
func FindLlama(t testing.TB) Llama {
	t.Helper()
	var l Llama
	if p := os.Getenv(LlamaServerEnv); p != "" {
		if !isFile(p) {
			t.Skipf("%s=%s: no such file", LlamaServerEnv, p)
		}
		l.Server = p
	} else {
		var tried []string
		if wd, err := os.Getwd(); err == nil {
			for d := wd; ; d = filepath.Dir(d) {
				c := filepath.Join(filepath.Dir(d), "shared", "engines", "llama.cpp", "llama-server")
				tried = append(tried, c)
				if isFile(c) {
					l.Server = c
					break
				}
				if filepath.Dir(d) == d {
					break
				}
			}
		}
		if l.Server == "" {
			t.Skipf("no llama-server (set %s to one): none of %s exists", LlamaServerEnv, strings.Join(tried, ", "))
		}
	}
	if abs, err := filepath.Abs(l.Server); err == nil {
		l.Server = abs
	}
	l.Models = filepath.Dir(l.Server)
	if d := os.Getenv(LlamaModelsEnv); d != "" {
		l.Models = d
	}
	for _, m := range []string{"tiny-a.gguf", "tiny-b.gguf"} {
		if !isFile(l.Model(m)) {
			t.Skipf("test model %s missing (set %s to the folder holding tiny-a.gguf and tiny-b.gguf)", l.Model(m), LlamaModelsEnv)
		}
	}
	return l
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
