// The log contract: docs/logging.md's tables against what the daemon writes.
// The tables are parsed here, so the doc and the code cannot drift apart.

package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

const logDoc = "../../docs/logging.md"

// docEvent is one row of a docs/logging.md table.
type docEvent struct {
	levels   []string        // allowed levels
	required map[string]bool // fields always present
	optional map[string]bool // fields marked with "?"
}

var (
	docLevelRE = regexp.MustCompile(`\b(DEBUG|INFO|WARN|ERROR)\b`)
	docCodeRE  = regexp.MustCompile("`([^`]+)`")
)

// parseLogDoc reads every table whose header is "| event | level | fields |".
func parseLogDoc(t *testing.T) map[string]docEvent {
	t.Helper()
	b, err := os.ReadFile(logDoc)
	if err != nil {
		t.Fatal(err)
	}
	events := map[string]docEvent{}
	inTable := false
	for n, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case !strings.HasPrefix(line, "|"):
			inTable = false
			continue
		case len(cells) >= 3 && cells[0] == "event" && cells[1] == "level" && cells[2] == "fields":
			inTable = true
			continue
		case !inTable || strings.HasPrefix(cells[0], "---"):
			continue
		}
		name := docCodeRE.FindStringSubmatch(cells[0])
		if len(cells) < 3 || name == nil {
			t.Fatalf("%s:%d: malformed row %q", logDoc, n+1, line)
		}
		ev := docEvent{levels: docLevelRE.FindAllString(cells[1], -1), required: map[string]bool{}, optional: map[string]bool{}}
		if len(ev.levels) == 0 {
			t.Fatalf("%s:%d: no level in %q", logDoc, n+1, cells[1])
		}
		for _, m := range docCodeRE.FindAllStringSubmatch(cells[2], -1) {
			if f, ok := strings.CutSuffix(m[1], "?"); ok {
				ev.optional[f] = true
			} else {
				ev.required[m[1]] = true
			}
		}
		if _, dup := events[name[1]]; dup {
			t.Fatalf("%s:%d: %q documented twice", logDoc, n+1, name[1])
		}
		events[name[1]] = ev
	}
	if len(events) == 0 {
		t.Fatalf("%s: no event tables", logDoc)
	}
	return events
}

// checkRecord reports how r departs from its documented row.
func checkRecord(t *testing.T, doc map[string]docEvent, r record) {
	t.Helper()
	if len(r.Dups) > 0 {
		t.Errorf("record repeats keys %v: %s", r.Dups, r.Raw)
	}
	if r.str("component") == "protoactor" {
		return // the actor library's own warnings: not part of the contract
	}
	ev, ok := doc[r.msg()]
	if !ok {
		t.Errorf("record not documented in %s: %s", logDoc, r.Raw)
		return
	}
	if !slices.Contains(ev.levels, r.str("level")) {
		t.Errorf("%q has level %s, documented %v: %s", r.msg(), r.str("level"), ev.levels, r.Raw)
	}
	have := map[string]bool{}
	for _, k := range r.Keys {
		switch k {
		case "time", "level", "msg":
		default:
			have[k] = true
			if !ev.required[k] && !ev.optional[k] {
				t.Errorf("%q has undocumented field %q: %s", r.msg(), k, r.Raw)
			}
		}
	}
	for k := range ev.required {
		if !have[k] {
			t.Errorf("%q lacks documented field %q: %s", r.msg(), k, r.Raw)
		}
	}
}

// TestLogContract runs the daemon through a pool's lifecycle and checks
// every record it writes against docs/logging.md.
func TestLogContract(t *testing.T) {
	t.Parallel()
	doc := parseLogDoc(t)
	cfg := tempConfig(t, configYAML(simHead,
		simPool("life", []string{"--load-time", "100ms"}),
		simPool("noisy", []string{"--spam", "1000"}))) // over the 200 lines/s forwarded
	d := startDaemon(t, "-config", cfg)
	first := byID(d.waitPools("life and noisy ready", allReady("life", "noisy")))["life"]

	// Crash: an exit the daemon did not ask for → backoff → a new engine.
	if err := syscall.Kill(first.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	second := d.waitPool("life", "ready again with a new engine", func(p poolStatus, _ int) bool {
		return p.State == "ready" && p.RestartCount == 1 && p.PID != nil && p.pid() != first.pid()
	})
	if code, err := d.do("POST", "/v1/pools/life/drain", "{}", nil); err != nil || code != 202 {
		t.Fatalf("POST drain = HTTP %d (%v), want 202", code, err)
	}
	d.waitPool("life", "stopped", func(p poolStatus, _ int) bool { return p.State == "stopped" && p.PID == nil })
	d.waitLog("engine output dropped", "pool_id", "noisy")
	d.stop()

	recs := d.records()
	for _, r := range recs {
		checkRecord(t, doc, r)
	}

	// What this run must have produced, each in its documented shape.
	for _, want := range []struct {
		msg string
		kv  []any
	}{
		{"daemon.started", nil},
		{"engine.spawned", []any{"pool_id", "life", "pid", first.pid(), "restart_count", 0, "starts", 1}},
		{"engine.ready", []any{"pool_id", "life", "pid", first.pid()}},
		{"engine.exited", []any{"pool_id", "life", "pid", first.pid(), "signal", "SIGKILL", "exit_code", -1, "reason", "unexpected", "class", "signal"}},
		{"pool.failure", []any{"pool_id", "life", "reason", "signal", "pid", first.pid()}},
		{"engine.stopped", []any{"pool_id", "life", "pid", first.pid()}},
		{"engine.spawned", []any{"pool_id", "life", "pid", second.pid(), "restart_count", 1, "starts", 2}},
		{"engine.ready", []any{"pool_id", "life", "pid", second.pid()}},
		{"api.request", []any{"method", "POST", "path", "/v1/pools/life/drain", "code", 202}},
		{"drain.started", []any{"pool_id", "life", "reason", "api"}},
		{"engine.stopped", []any{"pool_id", "life", "pid", second.pid()}},
		{"drain.finished", []any{"pool_id", "life", "reason", "api", "forced", false, "final_leases", 0}},
		{"engine output", []any{"pool_id", "life", "stream", "stdout"}},
		{"engine output", []any{"pool_id", "noisy", "stream", "stdout"}},
		{"engine output dropped", []any{"pool_id", "noisy"}},
		{"daemon.signal", []any{"signal", "SIGTERM"}},
		{"daemon.stopping", nil},
		{"daemon.stopped", nil},
	} {
		if len(find(recs, want.msg, want.kv...)) == 0 {
			t.Errorf("no %q record with %v", want.msg, want.kv)
		}
	}

	// An engine that exited by itself within stop_grace: no signal field.
	for _, r := range find(recs, "engine.stopped", "pool_id", "life", "pid", second.pid()) {
		if _, ok := r.Fields["signal"]; ok {
			t.Errorf("engine.stopped after a clean exit has a signal: %s", r.Raw)
		}
	}

	// The pool's whole life, in order, and pool.state's level rule.
	var path []string
	for _, r := range find(recs, "pool.state", "pool_id", "life") {
		path = append(path, r.str("from")+">"+r.str("to"))
		warn := r.str("to") == "backoff" || r.str("to") == "failed"
		if (r.str("level") == "WARN") != warn {
			t.Errorf("pool.state to %s at level %s: %s", r.str("to"), r.str("level"), r.Raw)
		}
		if r.str("to") == "backoff" {
			for _, k := range []string{"pid", "next_restart_at", "backoff_ms", "last_error"} {
				if _, ok := r.Fields[k]; !ok {
					t.Errorf("pool.state to backoff lacks %q: %s", k, r.Raw)
				}
			}
		}
	}
	wantPath := []string{"stopped>preload", "preload>ready", "ready>backoff", "backoff>preload", "preload>ready",
		"ready>draining", "draining>stopped"}
	if !slices.Equal(path, wantPath) {
		t.Errorf("pool life's transitions = %v, want %v", path, wantPath)
	}
}

// logCall is one slog call in the daemon's source whose message is a
// string literal.
type logCall struct {
	where string // file path
	msg   string
	args  []string // the attributes after the message, as written
}

var logCallStartRE = regexp.MustCompile(`\.(Debug|Info|Warn|Error|Log|LogAttrs)\(`)

// scanLogCalls finds the slog calls in one Go source file.
func scanLogCalls(path, src string) []logCall {
	var out []logCall
	for _, m := range logCallStartRE.FindAllStringSubmatchIndex(src, -1) {
		args := splitArgs(src[m[1]:])
		msgAt := 0
		if name := src[m[2]:m[3]]; name == "Log" || name == "LogAttrs" {
			msgAt = 2 // (ctx, level, msg, ...)
		}
		if len(args) <= msgAt || !strings.HasPrefix(args[msgAt], `"`) {
			continue // err.Error(), a constant message, ...
		}
		msg, err := strconv.Unquote(args[msgAt])
		if err != nil {
			continue
		}
		out = append(out, logCall{where: path, msg: msg, args: args[msgAt+1:]})
	}
	return out
}

// splitArgs splits a call's argument list (src starts right after its
// opening parenthesis) at top-level commas, skipping string and rune
// literals.
func splitArgs(src string) []string {
	var args []string
	depth, from := 0, 0
	for i := 0; i < len(src); i++ {
		switch c := src[i]; c {
		case '"', '\'', '`':
			for i++; i < len(src) && src[i] != c; i++ {
				if src[i] == '\\' && c != '`' {
					i++
				}
			}
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			if depth == 0 {
				if a := strings.TrimSpace(src[from:i]); a != "" {
					args = append(args, a)
				}
				return args
			}
			depth--
		case ',':
			if depth == 0 {
				args = append(args, strings.TrimSpace(src[from:i]))
				from = i + 1
			}
		}
	}
	return nil
}

// daemonLogCalls scans every non-test Go file of the daemon's packages.
func daemonLogCalls(t *testing.T) []logCall {
	t.Helper()
	var calls []logCall
	for _, dir := range []string{"../../actors", "../../supervisor", "../../engine", "../../gpu", "."} {
		err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			if strings.Contains(path, filepath.Join("engine", "sim")) {
				return nil // the simulator is an engine, not the daemon: its output is "engine output"
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			calls = append(calls, scanLogCalls(path, string(b))...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(calls) < 20 {
		t.Fatalf("found only %d log calls; is the scanner broken?", len(calls))
	}
	return calls
}

// TestLogDocCoversEveryLogCall is the static half of the contract: every
// message logged by the daemon's packages has a row in docs/logging.md, also
// the ones no end-to-end run can provoke (NVML events, API panics).
func TestLogDocCoversEveryLogCall(t *testing.T) {
	t.Parallel()
	doc := parseLogDoc(t)
	var missing []string
	for _, c := range daemonLogCalls(t) {
		if _, ok := doc[c.msg]; !ok {
			missing = append(missing, c.where+": "+c.msg)
		}
	}
	// The engine output messages are constants in engine/sink.go.
	for _, msg := range []string{"engine output", "engine output dropped"} {
		if _, ok := doc[msg]; !ok {
			missing = append(missing, "engine/sink.go: "+msg)
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("log message not documented in %s: %s", logDoc, m)
	}
}

// TestLogDocNamesOnlyLoggedEvents is the other direction: every row of
// docs/logging.md is a message some log call of the daemon writes, so a reader
// never greps the journal for an event that cannot come.
func TestLogDocNamesOnlyLoggedEvents(t *testing.T) {
	t.Parallel()
	logged := map[string]bool{"engine output": true, "engine output dropped": true} // constants in engine/sink.go
	for _, c := range daemonLogCalls(t) {
		logged[c.msg] = true
	}
	var stale []string
	for msg := range parseLogDoc(t) {
		if !logged[msg] {
			stale = append(stale, msg)
		}
	}
	sort.Strings(stale)
	for _, m := range stale {
		t.Errorf("%s documents %q, which no log call of the daemon writes", logDoc, m)
	}
}

// TestLogCallsDoNotRepeatMsg: an attribute named "msg" makes slog's JSON
// object hold "msg" twice, and most readers keep the last value, losing the
// event name. The events that still do so are listed under "Known issues"
// in docs/logging.md; this keeps that list exact in both directions.
func TestLogCallsDoNotRepeatMsg(t *testing.T) {
	t.Parallel()
	doc := parseLogDoc(t)
	b, err := os.ReadFile(logDoc)
	if err != nil {
		t.Fatal(err)
	}
	_, known, _ := strings.Cut(string(b), "## Known issues")
	listed := map[string]bool{}
	for _, m := range docCodeRE.FindAllStringSubmatch(known, -1) {
		if _, ok := doc[m[1]]; ok {
			listed[m[1]] = true
		}
	}
	offenders := map[string]bool{}
	for _, c := range daemonLogCalls(t) {
		for _, a := range c.args {
			if a == `"msg"` {
				offenders[c.msg] = true
				if !listed[c.msg] {
					t.Errorf("%s: %q passes an attribute named \"msg\", which duplicates the record's msg key", c.where, c.msg)
				}
			}
		}
	}
	for name := range listed {
		if !offenders[name] {
			t.Errorf("%s lists %q under Known issues, but no log call repeats msg for it any more: update the doc", logDoc, name)
		}
	}
}
