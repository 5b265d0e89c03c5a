package engine

import (
	"regexp"
	"strings"
	"testing"
)

// TestClassifyPatternsSkipLinesCheaply: Classify runs between an engine's
// exit and its restart, over up to CauseWindow lines, so no pattern may scan
// a line that lacks the text every match of it contains. Each pattern
// starts with a literal (which regexp finds with a substring search) or has
// a required literal checked first; and that literal really is required:
// a line without it never matches.
func TestClassifyPatternsSkipLinesCheaply(t *testing.T) {
	sets := [][]matcher{generic, weak}
	for _, r := range classRules {
		sets = append(sets, r.patterns)
	}
	for _, set := range sets {
		for _, m := range set {
			prefix, _ := m.re.LiteralPrefix()
			if prefix == "" && m.need == "" {
				t.Errorf("pattern %q has neither a literal prefix nor a required literal: it scans every line", m.re)
			}
			if m.need != "" && !strings.Contains(m.re.String(), regexp.QuoteMeta(m.need)) {
				t.Errorf("pattern %q: required literal %q is not in it", m.re, m.need)
			}
			if m.literal && m.re.String() != regexp.QuoteMeta(m.need) {
				t.Errorf("pattern %q is matched as the plain substring %q", m.re, m.need)
			}
		}
	}
	// The ones that need a guard, and what it is.
	for pat, need := range map[string]string{
		`(error|fail).*\bnvml\b`:    "nvml",
		`(error|fail).*cuda driver`: "cuda driver",
		`\bxid\b`:                   "xid",
		`\bwarn(ing)?\b`:            "warn",
	} {
		m := compile(pat)[0]
		if m.need != need {
			t.Errorf("pattern %q: required literal %q, want %q", pat, m.need, need)
		}
		if m.match("error in the driver, fail everything") && !strings.Contains("error in the driver, fail everything", need) {
			t.Errorf("pattern %q matched a line without %q", pat, need)
		}
	}
	if !compile(`(error|fail).*\bnvml\b`)[0].match("failed to query nvml: unknown") {
		t.Error("the guarded nvml pattern no longer matches its line")
	}
}
