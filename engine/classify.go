// This file tells why an engine exited: a class for metrics and the one
// output line most likely to be the cause, for last_error.

package engine

import (
	"regexp"
	"regexp/syntax"
	"sort"
	"strings"
	"sync"
	"time"
)

// Exit classes: the restarts_total{reason} values of an unexpected exit, and
// the prefix of its last_error.
const (
	ReasonExitCode       = "exit_code"        // exited by itself with a status; nothing more specific in its output
	ReasonSignal         = "signal"           // killed by a signal; nothing more specific in its output
	ReasonHostOOM        = "host_oom"         // the kernel's OOM killer ended it (Exit.OOMKilled)
	ReasonCUDAOOM        = "cuda_oom"         // the engine said it ran out of GPU memory
	ReasonModelLoadError = "model_load_error" // the engine said it could not load its model
	ReasonDriverError    = "driver_error"     // the engine reported a GPU driver/CUDA runtime failure (Xid, NVML, CUDA driver)
)

// ExitReasons lists every class Classify returns.
var ExitReasons = []string{ReasonExitCode, ReasonSignal, ReasonHostOOM, ReasonCUDAOOM, ReasonModelLoadError, ReasonDriverError}

// CauseWindow is how many of an engine's last output lines Classify looks at.
const CauseWindow = 50

// classRule is one class's patterns (matched against the lower-cased line).
type classRule struct {
	reason   string
	patterns []matcher
}

// classRules in priority order: when lines of several classes appear, the
// first rule wins. A CUDA OOM or a driver failure during a load is followed
// by llama.cpp's "failed to load model", so both outrank model_load_error.
var classRules = []classRule{
	{ReasonCUDAOOM, compile(
		`cuda out of memory`,
		`cudamalloc failed: out of memory`,
		`cuda error: out of memory`,
		`cuda_error_out_of_memory`,
		`cublas_status_alloc_failed`,
		`outofmemoryerror`, // torch.OutOfMemoryError, torch.cuda.OutOfMemoryError (vLLM, TGI)
		`ggml_backend_cuda_buffer_type_alloc_buffer: allocating .*failed`,
		`unable to allocate cuda[0-9]* buffer`,
		`no available memory for the cache blocks`, // vLLM: the KV cache does not fit
	)},
	{ReasonDriverError, compile(
		`\bxid\b`,
		`cuda driver version is insufficient`,
		`cuda driver.*(error|fail)`,
		`(error|fail).*cuda driver`,
		`cuda runtime error.*unknown error`,
		`cuda error: unknown error`,
		`failed to initialize cuda`,
		`no cuda-capable device`,
		`nvml.*(error|fail|unknown)`,
		`(error|fail).*\bnvml\b`,
		`driver/library version mismatch`,
	)},
	{ReasonModelLoadError, compile(
		`error loading model`,
		`invalid magic characters`,
		`failed to load model`,
		`gguf_init_from_file`,
		`unknown model architecture`,
		`not a valid model identifier`,
		`safetensorerror`,
		`error\(s\) in loading state_dict`,
	)},
}

// generic marks a line that says something went wrong, of no known class.
var generic = compile(`error`, `fail`, `fatal`, `exception`, `out of memory`, `invalid`, `panic`,
	`abort`, `segmentation fault`, `core dumped`, `terminate called`, `cannot`, `unable to`)

// weak marks a line that is only a warning: a generic word in it counts less.
var weak = compile(`\bwarn(ing)?\b`, `^w `, `\[w\]`)

// matcher is one pattern. Classify runs between an engine's exit and its
// restart, over up to CauseWindow lines, so a pattern that does not start
// with a literal (which regexp finds with a fast substring search) but
// still contains one that every match must have, such as
// `(error|fail).*\bnvml\b`, checks that literal first: the backtracking
// scan of a line without "nvml" costs some 10 µs, 50 lines times a dozen
// such patterns milliseconds.
// A pattern that is nothing but a literal is a substring search.
type matcher struct {
	re      *regexp.Regexp
	need    string // every match contains it; "" when re has a literal prefix (or nothing is required)
	literal bool   // re is the literal need: strings.Contains is the whole match
}

func (m matcher) match(s string) bool {
	if m.need != "" && !strings.Contains(s, m.need) {
		return false
	}
	return m.literal || m.re.MatchString(s)
}

func compile(pats ...string) []matcher {
	out := make([]matcher, len(pats))
	for i, p := range pats {
		out[i].re = regexp.MustCompile(p)
		switch prefix, complete := out[i].re.LiteralPrefix(); {
		case complete:
			out[i].need, out[i].literal = prefix, true
		case prefix == "":
			out[i].need = requiredLiteral(p)
		}
	}
	return out
}

// requiredLiteral is the longest literal that every match of pat contains:
// a case-sensitive literal element of its top-level concatenation; "" when
// it has none.
func requiredLiteral(pat string) string {
	re, err := syntax.Parse(pat, syntax.Perl)
	if err != nil {
		return ""
	}
	re = re.Simplify()
	if re.Op == syntax.OpLiteral && re.Flags&syntax.FoldCase == 0 {
		return string(re.Rune)
	}
	best := ""
	if re.Op == syntax.OpConcat {
		for _, sub := range re.Sub {
			if sub.Op == syntax.OpLiteral && sub.Flags&syntax.FoldCase == 0 && len(string(sub.Rune)) > len(best) {
				best = string(sub.Rune)
			}
		}
	}
	return best
}

func anyMatch(ms []matcher, s string) bool {
	for _, m := range ms {
		if m.match(s) {
			return true
		}
	}
	return false
}

// Classification is why an engine exited.
type Classification struct {
	Reason string // one of ExitReasons
	// Cause is the output line most likely to say why ("" when the engine
	// printed nothing); CauseMatched is false when it is merely the last line.
	Cause        string
	CauseMatched bool
}

// Classify looks at how a process ended and at its last output lines (oldest
// first; only the last CauseWindow count) and returns its class and cause.
//
// The class: host_oom when the kernel's OOM killer ended it; else the first
// of cuda_oom, driver_error, model_load_error whose messages appear in the
// window; else signal or exit_code from the Exit.
//
// The cause is the earliest line of the winning class's messages (the first
// message is the root; what follows is its consequences, e.g. llama-server's
// "invalid magic characters" comes before "failed to load model" and
// "exiting due to model loading error"). Without a class message it is the
// earliest line with a generic error word (error, failed, fatal, exception,
// out of memory, invalid, panic, abort, ...) that is not a warning, then the
// earliest such warning, then the last non-empty line.
func Classify(ex Exit, lines []string) Classification {
	if len(lines) > CauseWindow {
		lines = lines[len(lines)-CauseWindow:]
	}
	lower := make([]string, len(lines))
	for i, l := range lines {
		lower[i] = strings.ToLower(l)
	}
	c := Classification{Reason: ReasonExitCode}
	if ex.Signal != "" {
		c.Reason = ReasonSignal
	}
	found := false
	for _, r := range classRules {
		for i, l := range lower {
			if anyMatch(r.patterns, l) {
				c.Cause, c.CauseMatched, found = lines[i], true, true
				c.Reason = r.reason
				break
			}
		}
		if found {
			break
		}
	}
	if ex.OOMKilled {
		c.Reason = ReasonHostOOM // the kernel's word beats anything the engine printed
	}
	if found {
		return c
	}
	weakAt := -1
	for i, l := range lower {
		if !anyMatch(generic, l) {
			continue
		}
		if !anyMatch(weak, l) {
			c.Cause, c.CauseMatched = lines[i], true
			return c
		}
		if weakAt < 0 {
			weakAt = i
		}
	}
	if weakAt >= 0 {
		c.Cause, c.CauseMatched = lines[weakAt], true
		return c
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.TrimSpace(lines[i]) != "" {
			c.Cause = lines[i]
			break
		}
	}
	return c
}

// recentLines keeps the last CauseWindow lines of one stream of one
// process, with the time each was written. The zero value is ready.
type recentLines struct {
	mu    sync.Mutex
	lines []Line // ring once full
	next  int
}

func (r *recentLines) add(text string) {
	l := Line{At: time.Now(), Text: text}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) < CauseWindow {
		r.lines = append(r.lines, l)
		return
	}
	r.lines[r.next] = l
	r.next = (r.next + 1) % CauseWindow
}

// snapshot returns the kept lines, oldest first.
func (r *recentLines) snapshot() []Line {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Line, 0, len(r.lines))
	out = append(out, r.lines[r.next:]...)
	return append(out, r.lines[:r.next]...)
}

// RecentLines returns the text of the last n (at most CauseWindow) output
// lines of this process, both streams merged by the time the daemon read
// them (so the order across streams is approximate), oldest first. Unlike the pool's Sink it never holds a line of an earlier
// engine of the same pool.
func (p *Process) RecentLines(n int) []string {
	if n <= 0 || p.stdout == nil || p.stderr == nil {
		return nil
	}
	n = min(n, CauseWindow)
	all := append(p.stdout.recent.snapshot(), p.stderr.recent.snapshot()...)
	sort.SliceStable(all, func(i, j int) bool { return all[i].At.Before(all[j].At) })
	if len(all) > n {
		all = all[len(all)-n:]
	}
	out := make([]string, len(all))
	for i, l := range all {
		out[i] = l.Text
	}
	return out
}
