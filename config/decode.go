// A strict walker over yaml.Node trees. It works on nodes rather than
// struct tags so that every value keeps its line, presence is known (a key
// given as 0 differs from a key left out), and decoding goes on after a
// problem so that all of them are reported together.

package config

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

type decoder struct {
	probs []Problem

	// Aliases and merge keys make the node graph a DAG or, through "<<", a
	// cycle, so a walk that follows them must be bounded (see follow, pairs).
	expanded int                 // cost of the subtrees reached through aliases so far
	sizes    map[*yaml.Node]int  // memo for cost
	merging  map[*yaml.Node]bool // mappings whose pairs are being collected: the merge path
	stopped  bool                // expanded passed maxExpansion; the walk winds down quietly
}

// maxExpansion caps, per document, the nodes walked again because an alias
// (a "<<" source or a plain *value) leads to them. Each node counts 1, plus 1
// per expansionBytes of its text, so a long string repeated by aliases counts
// by its length. A walk without aliases visits every node at most once, so
// parsing stays linear in the file's size however aliases fan out.
const (
	maxExpansion   = 10_000
	expansionBytes = 64
)

func (d *decoder) addf(line int, key, format string, args ...any) {
	if d.stopped {
		return // see follow: what comes after the limit is not checked
	}
	d.probs = append(d.probs, Problem{Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// follow is deref for a value about to be walked. Following an alias charges
// its target's cost to maxExpansion; past the limit it reports the problem
// once (at the alias, under key) and from then on returns only nulls, which
// every walker takes as an empty value, so the walk ends without more work.
func (d *decoder) follow(v *yaml.Node, key string) *yaml.Node {
	if !d.stopped && (v == nil || v.Kind != yaml.AliasNode) {
		return v
	}
	if !d.stopped {
		t := deref(v)
		if d.expanded += d.cost(t); d.expanded <= maxExpansion {
			return t
		}
		d.addf(v.Line, key, "too many alias/merge expansions: more than %d nodes reached through aliases and \"<<\" "+
			"(an alias repeated many times, or aliases of aliases); checking stopped here", maxExpansion)
		d.stopped = true
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
}

// cost is the size of n's subtree for maxExpansion: its nodes through
// Content (an alias is one node; its target is charged when followed) and
// their text. Content never forms a cycle, and the memo makes computing
// costs linear in the document.
func (d *decoder) cost(n *yaml.Node) int {
	if c, ok := d.sizes[n]; ok {
		return c
	}
	c := 1 + len(n.Value)/expansionBytes
	for _, k := range n.Content {
		c += d.cost(k)
	}
	if d.sizes == nil {
		d.sizes = map[*yaml.Node]int{}
	}
	d.sizes[n] = c
	return c
}

// block is a mapping's values by key, after unknown keys were reported.
type block map[string]*yaml.Node

type entry struct{ key, val *yaml.Node }

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// describe names a value's type for messages: `the string "abc"`, `a list`.
func describe(n *yaml.Node) string {
	n = deref(n)
	switch {
	case isNull(n):
		return "an empty value"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.ShortTag() == "!!str":
		return fmt.Sprintf("the string %q", n.Value)
	case n.ShortTag() == "!!bool":
		return "the boolean " + n.Value
	default:
		return "the number " + n.Value
	}
}

// pairs returns a mapping's entries in order, following aliases and "<<"
// merge keys (explicit keys win over merged ones), and reports repeated keys.
// A null counts as an empty mapping.
func (d *decoder) pairs(n *yaml.Node, path string) []entry {
	n = d.follow(n, path)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.addf(n.Line, path, "must be a mapping, not %s", describe(n))
		return nil
	}
	if d.merging == nil {
		d.merging = map[*yaml.Node]bool{}
	}
	d.merging[n] = true
	defer delete(d.merging, n)
	var out, merged []entry
	seen := map[string]int{}
	done := map[*yaml.Node]bool{} // merge sources already merged into n
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.ShortTag() == "!!merge":
			merged = append(merged, d.mergeSources(v, path, done)...)
		case k.Kind != yaml.ScalarNode:
			d.addf(k.Line, path, "keys must be plain strings")
		case seen[k.Value] > 0:
			d.addf(k.Line, join(path, k.Value), "key given twice (first at line %d)", seen[k.Value])
		default:
			seen[k.Value] = k.Line
			out = append(out, entry{k, v})
		}
	}
	for _, e := range merged {
		if _, dup := seen[e.key.Value]; !dup {
			seen[e.key.Value] = e.key.Line
			out = append(out, e)
		}
	}
	return out
}

// mergeSources returns the entries of a "<<" value: a mapping or a list of
// mappings, each maybe an alias. A source that is a mapping on the current
// merge path (being merged into, directly or through other merges) is a
// cycle: it is reported and skipped, where following it would recurse
// forever. A source already in done was merged into the same mapping before
// and could add nothing, so it is skipped too.
func (d *decoder) mergeSources(v *yaml.Node, path string, done map[*yaml.Node]bool) []entry {
	key := join(path, "<<")
	srcs := []*yaml.Node{v}
	if deref(v).Kind == yaml.SequenceNode {
		srcs = d.follow(v, key).Content
	}
	var out []entry
	for _, m := range srcs {
		t := deref(m)
		if done[t] {
			continue
		}
		done[t] = true
		if d.merging[t] {
			d.addf(m.Line, key, "merge cycle: an alias refers to a mapping that contains it")
			continue
		}
		out = append(out, d.pairs(d.follow(m, key), path)...)
	}
	return out
}

// fields returns a mapping's values by key, reporting keys not in allowed.
func (d *decoder) fields(n *yaml.Node, path string, allowed ...string) block {
	b := block{}
	for _, e := range d.pairs(n, path) {
		if !slices.Contains(allowed, e.key.Value) {
			d.addf(e.key.Line, join(path, e.key.Value), "unknown key%s", suggest(e.key.Value, allowed))
			continue
		}
		b[e.key.Value] = e.val
	}
	return b
}

// str accepts any non-null scalar as text, so `engine_version: 2.0` and
// `-ngl, 99` in a command read as written.
func (d *decoder) str(v *yaml.Node, key string) (string, bool) {
	if n := d.follow(v, key); n.Kind == yaml.ScalarNode && !isNull(n) {
		return n.Value, true
	}
	d.addf(v.Line, key, "must be a string, not %s", describe(v))
	return "", false
}

// The *At helpers set *dst from b[name] when the key is present and valid,
// and report whether the key was present with a value of the right type.

func (d *decoder) strAt(b block, path, name string, dst *string) bool {
	v, ok := b[name]
	if !ok {
		return false
	}
	s, ok := d.str(v, join(path, name))
	if ok {
		*dst = s
	}
	return ok
}

func (d *decoder) boolAt(b block, path, name string, dst *bool) {
	v, ok := b[name]
	if !ok {
		return
	}
	if n := d.follow(v, join(path, name)); n.ShortTag() != "!!bool" || n.Decode(dst) != nil {
		d.addf(v.Line, join(path, name), "must be true or false, not %s", describe(v))
	}
}

// intAt accepts integers in [lo, hi].
func (d *decoder) intAt(b block, path, name string, lo, hi int64, dst *int64) bool {
	v, ok := b[name]
	if !ok {
		return false
	}
	key := join(path, name)
	var i int64
	if n := d.follow(v, key); n.ShortTag() != "!!int" || n.Decode(&i) != nil {
		d.addf(v.Line, key, "must be an integer, not %s", describe(v))
		return false
	}
	if i < lo || i > hi {
		d.addf(v.Line, key, "must be %s, not %d", rangeText(float64(lo), float64(hi), math.MaxInt32), i)
		return false
	}
	*dst = i
	return true
}

// intTo is intAt for int fields.
func (d *decoder) intTo(b block, path, name string, lo, hi int64, dst *int) {
	var i int64
	if d.intAt(b, path, name, lo, hi, &i) {
		*dst = int(i)
	}
}

// floatAt accepts integers or decimals in [lo, hi].
func (d *decoder) floatAt(b block, path, name string, lo, hi float64, dst *float64) {
	v, ok := b[name]
	if !ok {
		return
	}
	key := join(path, name)
	var f float64
	if n := d.follow(v, key); (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") || n.Decode(&f) != nil {
		d.addf(v.Line, key, "must be a number, not %s", describe(v))
		return
	}
	if math.IsNaN(f) || f < lo || f > hi {
		d.addf(v.Line, key, "must be %s, not %v", rangeText(lo, hi, math.Inf(1)), f)
		return
	}
	*dst = f
}

func rangeText(lo, hi, unbounded float64) string {
	if hi >= unbounded {
		return fmt.Sprintf(">= %v", lo)
	}
	return fmt.Sprintf("between %v and %v", lo, hi)
}

// durAt accepts Go duration strings; positive additionally rejects 0.
// A bare number is refused: 30 could mean seconds or nanoseconds.
func (d *decoder) durAt(b block, path, name string, positive bool, dst *time.Duration) {
	v, ok := b[name]
	if !ok {
		return
	}
	key := join(path, name)
	n := d.follow(v, key)
	switch {
	case n.ShortTag() == "!!int" || n.ShortTag() == "!!float":
		d.addf(v.Line, key, "duration needs a unit, e.g. 30s (got %s)", n.Value)
		return
	case n.ShortTag() != "!!str":
		d.addf(v.Line, key, "must be a duration such as 30s, not %s", describe(v))
		return
	}
	t, err := time.ParseDuration(n.Value)
	switch {
	case err != nil:
		d.addf(v.Line, key, "invalid duration %q (use Go syntax, e.g. 250ms, 2m, 1h30m)", n.Value)
	case t < 0:
		d.addf(v.Line, key, "must not be negative, not %s", n.Value)
	case t == 0 && positive:
		d.addf(v.Line, key, "must be greater than 0")
	default:
		*dst = t
	}
}

// suggest offers the allowed key closest to a misspelt one, if any is close.
func suggest(key string, allowed []string) string {
	best, bestDist := "", 3
	lower := strings.ToLower(key)
	for _, a := range allowed {
		if abs(len(lower)-len(a)) >= bestDist {
			continue // the distance is at least the difference in length
		}
		if dist := editDistance(lower, a); dist < bestDist && dist <= len(a)/3 {
			best, bestDist = a, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func abs(i int) int {
	if i < 0 {
		return -i
	}
	return i
}

// editDistance is the optimal-string-alignment distance: Levenshtein plus
// adjacent transpositions, so "modle_ref" is one edit from "model_ref".
func editDistance(a, b string) int {
	prev2, prev, cur := make([]int, len(b)+1), make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
