// This file asks a ready engine what it is (version, parallel slots) and
// computes model digests.

package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Facts is what an engine says about itself. Zero fields are unknown.
type Facts struct {
	Version string // the engine's own version or build string
	Slots   int    // requests it serves in parallel (llama-server's total_slots)
}

// factsBodyLimit bounds how much of a facts answer is read: llama-server's
// /props carries its chat template, a few kB; anything past 1 MiB is not an
// answer worth parsing.
const factsBodyLimit = 1 << 20

// FactsPath is the path an engine of kind (a pool's engine: llamacpp, vllm,
// tgi) answers Facts at; "" when the kind has none.
func FactsPath(kind string) string {
	switch kind {
	case "llamacpp":
		return "/props"
	case "vllm":
		return "/version"
	case "tgi":
		return "/info"
	}
	return ""
}

// ParseFacts reads an engine's answer at FactsPath(kind):
//
//   - llamacpp, GET /props: build_info (e.g. "b4747-c392e509"; a build made
//     without git says "b0-unknown", which is reported as it is) and
//     total_slots;
//   - vllm, GET /version: {"version": "0.6.3"};
//   - tgi, GET /info: version, and max_concurrent_requests is not a slot
//     count (it is an admission limit), so Slots stays unknown.
func ParseFacts(kind string, body []byte) (Facts, error) {
	var f Facts
	switch kind {
	case "llamacpp":
		var v struct {
			BuildInfo  string `json:"build_info"`
			TotalSlots *int   `json:"total_slots"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return f, fmt.Errorf("llama-server /props: %w", err)
		}
		f.Version = v.BuildInfo
		if v.TotalSlots != nil && *v.TotalSlots > 0 {
			f.Slots = *v.TotalSlots
		}
	case "vllm", "tgi":
		var v struct {
			Version string `json:"version"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return f, fmt.Errorf("%s %s: %w", kind, FactsPath(kind), err)
		}
		f.Version = v.Version
	default:
		return f, fmt.Errorf("engine %q has no facts endpoint", kind)
	}
	f.Version = strings.TrimSpace(f.Version)
	if len(f.Version) > 128 { // a label in metrics and logs, not a document
		f.Version = f.Version[:128]
	}
	return f, nil
}

// QueryFacts GETs baseURL+FactsPath(kind) once, waiting at most timeout, and
// parses the answer (see ParseFacts).
func QueryFacts(ctx context.Context, client *http.Client, kind, baseURL string, timeout time.Duration) (Facts, error) {
	path := FactsPath(kind)
	if path == "" {
		return Facts{}, fmt.Errorf("engine %q has no facts endpoint", kind)
	}
	status, body, err := Request(ctx, client, http.MethodGet, baseURL+path, "", nil, timeout, factsBodyLimit)
	if err != nil {
		if status != 0 {
			return Facts{}, fmt.Errorf("GET %s: %w", path, err)
		}
		return Facts{}, err
	}
	if status/100 != 2 {
		return Facts{}, fmt.Errorf("GET %s: HTTP %d", path, status)
	}
	return ParseFacts(kind, body)
}

// Model digests.
//
// ModelDigest hashes a model file (sha256) and caches the answer by path,
// size and modification time, so a restart or a reload back to the same
// file costs nothing, and a file replaced in place is hashed again. At most
// digestWorkers files are hashed at once (256 pools starting together must
// not read 256 models at once); callers run it in a goroutine of their own.

const digestWorkers = 2

type digestKey struct {
	path  string
	size  int64
	mtime int64
}

type digestEntry struct {
	done   chan struct{}
	digest string
	err    error
}

var (
	digestMu    sync.Mutex
	digestCache = map[digestKey]*digestEntry{}
	digestSem   = make(chan struct{}, digestWorkers)
)

// ModelDigest returns "sha256:<hex>" of the regular file at path. Concurrent
// calls for the same file share one computation. ctx abandons the wait
// only: the computation finishes and fills the cache regardless.
func ModelDigest(ctx context.Context, path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	key := digestKey{path: path, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	digestMu.Lock()
	e, ok := digestCache[key]
	if !ok {
		e = &digestEntry{done: make(chan struct{})}
		digestCache[key] = e
		go func() {
			digestSem <- struct{}{}
			e.digest, e.err = hashFile(path)
			<-digestSem
			if e.err != nil { // a read error is not cached: the next start tries again
				digestMu.Lock()
				delete(digestCache, key)
				digestMu.Unlock()
			}
			close(e.done)
		}()
	}
	digestMu.Unlock()
	select {
	case <-e.done:
		return e.digest, e.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
