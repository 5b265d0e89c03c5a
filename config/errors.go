// Problems found in a config file, collected so that one run shows them all.

package config

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing wrong with a config file.
type Problem struct {
	Line int    // 1-based; 0 when the problem concerns the whole file
	Key  string // dotted path such as "pools[1].restart.max"; "" for the file
	Msg  string
}

// Errors is every problem found in one file, sorted by line. Parse returns
// it as its error, so callers can print it whole or inspect Problems.
type Errors struct {
	File     string
	Problems []Problem
}

func newErrors(file string, probs []Problem) *Errors {
	sort.SliceStable(probs, func(i, j int) bool { return probs[i].Line < probs[j].Line })
	return &Errors{File: file, Problems: probs}
}

// Error prints one "file:line: key: msg" per problem, one per line.
func (e *Errors) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.File)
		if p.Line > 0 {
			fmt.Fprintf(&b, ":%d", p.Line)
		}
		if p.Key != "" {
			b.WriteString(": " + p.Key)
		}
		b.WriteString(": " + p.Msg)
	}
	return b.String()
}
