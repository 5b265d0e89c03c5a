// This file tells why an engine exited: a class for metrics and the one
// output line most likely to be the cause, for last_error.

package engine

import (
	"regexp"
	"strings"
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
	patterns []*regexp.Regexp
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

func compile(pats ...string) []*regexp.Regexp {
	out := make([]*regexp.Regexp, len(pats))
	for i, p := range pats {
		out[i] = regexp.MustCompile(p)
	}
	return out
}

func anyMatch(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
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

// RecentLines returns the text of the last n output lines of this process
// (both streams, oldest first), from its pool's sink: lines an earlier engine
// of the same pool wrote are left out. Empty without a sink.
func (p *Process) RecentLines(n int) []string {
	if p.sink == nil || n <= 0 {
		return nil
	}
	// The sink holds every pool engine's lines; ask for more than n so that
	// lines of this process are not crowded out, then keep this process's.
	tail := p.sink.Tail(DefaultRingSize)
	out := make([]string, 0, n)
	for _, l := range tail {
		if !l.At.Before(p.startedAt) {
			out = append(out, l.Text)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}
