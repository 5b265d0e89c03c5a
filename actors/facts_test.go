package actors

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// waitStatus polls the pool's status until ok holds (generous deadline:
// the facts and the digest arrive in the background after ready).
func (h *harness) waitStatus(id string, ok func(PoolStatus) bool) PoolStatus {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := h.get(id)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(st)
			h.t.Fatalf("pool %s: condition not met within 30s; status %s", id, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A llama-server pool whose config names neither engine_version nor slots
// shows what the engine says (/props build_info and total_slots, source
// "engine") and the sha256 of its model file.
func TestEngineFactsRealLlamaDetected(t *testing.T) {
	bin, models := preflightLlama(t)
	model := models + "/tiny-a.gguf"
	h := newHarness(t, nil)
	cfg := llamaPool("facts", bin, model)
	cfg.EngineVersion, cfg.Slots = "", 0
	cfg.Command = append(cfg.Command[:len(cfg.Command)-4:len(cfg.Command)-4], "--parallel", "3", "--threads-http", "4")
	h.spawn(cfg)
	before := h.get("facts")
	if before.EngineVersionSource != nil || before.SlotsSource != nil {
		t.Fatalf("before the engine answered: sources %v %v, want null", before.EngineVersionSource, before.SlotsSource)
	}
	h.waitState("facts", StateReady)
	want := fileSHA256(t, model)
	st := h.waitStatus("facts", func(s PoolStatus) bool {
		return s.SlotsSource != nil && s.EngineVersionSource != nil && s.ModelDigest != nil
	})
	t.Logf("engine_version %q (%s), slots %d (%s), model_digest %s", st.EngineVersion, *st.EngineVersionSource, st.Slots, *st.SlotsSource, *st.ModelDigest)
	if *st.EngineVersionSource != SourceEngine || st.EngineVersion == "" {
		t.Errorf("engine_version %q source %s, want the engine's build_info", st.EngineVersion, *st.EngineVersionSource)
	}
	if st.Slots != 3 || *st.SlotsSource != SourceEngine {
		t.Errorf("slots %d source %s, want 3 from the engine (--parallel 3)", st.Slots, *st.SlotsSource)
	}
	if *st.ModelDigest != want {
		t.Errorf("model_digest %s, want %s", *st.ModelDigest, want)
	}
	b, _ := json.Marshal(st)
	for _, k := range []string{`"engine_version_source":"engine"`, `"slots_source":"engine"`, `"model_digest":"` + want + `"`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("status JSON lacks %s: %s", k, b)
		}
	}
}

// With engine_version and slots in the config, the config wins and the
// sources say so; the digest is still reported.
func TestEngineFactsRealLlamaConfigWins(t *testing.T) {
	bin, models := preflightLlama(t)
	model := models + "/tiny-b.gguf"
	h := newHarness(t, nil)
	cfg := llamaPool("cfg", bin, model)
	cfg.EngineVersion, cfg.Slots = "b4747-pinned", 7
	h.spawn(cfg)
	h.waitState("cfg", StateReady)
	st := h.waitStatus("cfg", func(s PoolStatus) bool { return s.ModelDigest != nil })
	if st.EngineVersion != "b4747-pinned" || st.Slots != 7 || deref(st.EngineVersionSource) != SourceConfig || deref(st.SlotsSource) != SourceConfig {
		t.Fatalf("engine_version %q (%s), slots %d (%s); want the config's, source config",
			st.EngineVersion, deref(st.EngineVersionSource), st.Slots, deref(st.SlotsSource))
	}
	if want := fileSHA256(t, model); *st.ModelDigest != want {
		t.Fatalf("model_digest %s, want %s", *st.ModelDigest, want)
	}
	if strings.Contains(h.logs.String(), `"msg":"engine.facts"`) {
		t.Fatal("the engine was asked although the config sets both")
	}
}

// A model name (not a path) has no digest: model_digest stays null.
func TestModelDigestNullForModelName(t *testing.T) {
	h := newHarness(t, nil)
	h.spawn(simPool("name"))
	st := h.waitState("name", StateReady)
	if st.ModelDigest != nil {
		t.Fatalf("model_digest %s for model_ref %s", *st.ModelDigest, st.ModelRef)
	}
	b, _ := json.Marshal(st)
	if !strings.Contains(string(b), `"model_digest":null`) {
		t.Fatalf("model_digest not null in %s", b)
	}
}
