package actors

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/pool-managerd/pool-managerd/engine"
)

// Engine facts: what the status says about the engine beyond its state.
//
// engine_version and slots come from the config when it sets them
// (engine_version_source and slots_source "config"). When it does not, the
// actor asks the engine once it is ready (engine.QueryFacts: llama-server
// GET /props build_info and total_slots, vLLM GET /version, TGI GET /info
// version) and shows the answer with source "engine"; slots taken from the
// engine bound leases like configured ones. A failed query leaves them
// unknown (logged as engine.facts_failed); they are asked again at the next
// ready. model_digest is hashed in the background on every preload of a
// model file (engine.ModelDigest caches it by path, size and mtime).

// factsTimeout bounds the one facts query of a ready engine.
const factsTimeout = 10 * time.Second

// queryFacts runs in a goroutine started by becomeReady when the config
// leaves engine_version or slots to the engine; it may read only its
// arguments, a.d and atomics.
func (a *pool) queryFacts(ctx context.Context, gen uint64, kind, baseURL string) {
	f, err := engine.QueryFacts(ctx, a.d.ProbeClient, kind, baseURL, factsTimeout)
	if ctx.Err() != nil {
		return
	}
	SendPool(a.root, a.self, &engineFactsMsg{gen: gen, facts: f, err: err})
}

// wantsFacts reports whether the config leaves anything to ask the engine.
func (a *pool) wantsFacts() bool {
	return engine.FactsPath(a.cfg.Engine) != "" && (a.cfg.EngineVersion == "" || a.cfg.Slots == 0)
}

// onEngineFacts applies the engine's answer (ready or draining, same
// engine); what the config sets is never replaced.
func (a *pool) onEngineFacts(m *engineFactsMsg) {
	if m.gen != a.gen || a.proc == nil {
		return
	}
	if m.err != nil {
		a.log.Info("engine.facts_failed", "pid", a.procPid(), "path", engine.FactsPath(a.cfg.Engine), "err", m.err)
		return
	}
	if a.cfg.EngineVersion == "" && m.facts.Version != "" {
		a.st.EngineVersion, a.st.EngineVersionSource = m.facts.Version, ptr(SourceEngine)
	}
	if a.cfg.Slots == 0 && m.facts.Slots > 0 {
		a.st.Slots, a.st.SlotsSource = m.facts.Slots, ptr(SourceEngine)
	}
	a.dirty = true
	a.log.Info("engine.facts", "pid", a.procPid(), "engine_version", a.st.EngineVersion, "slots", a.st.Slots,
		"engine_version_source", deref(a.st.EngineVersionSource), "slots_source", deref(a.st.SlotsSource))
}

// startDigest hashes the model file in the background when model_ref is
// an absolute path (any state; called by startPreload). It never blocks the
// actor or the start: the result arrives as a modelDigestMsg.
func (a *pool) startDigest(path string) {
	if !filepath.IsAbs(path) {
		return
	}
	if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() {
		return
	}
	self, root := a.self, a.root
	go func() {
		d, err := engine.ModelDigest(context.Background(), path)
		SendPool(root, self, &modelDigestMsg{path: path, digest: d, err: err})
	}()
}

// onModelDigest shows a digest if it belongs to the current model_ref.
func (a *pool) onModelDigest(m *modelDigestMsg) {
	if m.path != a.cfg.ModelRef {
		return
	}
	if m.err != nil {
		a.log.Info("engine.model_digest_failed", "model_ref", m.path, "err", m.err)
		return
	}
	a.digestOf, a.st.ModelDigest = m.path, ptr(m.digest)
	a.dirty = true
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
