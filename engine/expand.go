// This file expands ${NAME} placeholders in argv and env values. There is no
// shell anywhere: an argument stays one argument whatever it contains.

package engine

import (
	"fmt"
	"sort"
	"strings"
)

// Expand replaces every ${NAME} inside s with vars[NAME]. An unknown name, an
// empty ${} or an unterminated ${ is an error. A "$" not followed by "{" is
// kept as is; there is no escape for a literal "${".
func Expand(s string, vars map[string]string) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	rest := s
	for {
		i := strings.Index(rest, "${")
		if i < 0 {
			b.WriteString(rest)
			return b.String(), nil
		}
		b.WriteString(rest[:i])
		end := strings.IndexByte(rest[i+2:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated ${ in %q", s)
		}
		name := rest[i+2 : i+2+end]
		val, ok := vars[name]
		switch {
		case name == "":
			return "", fmt.Errorf("empty placeholder ${} in %q", s)
		case !ok:
			return "", fmt.Errorf("unknown placeholder ${%s} in %q (known: %s)", name, s, knownNames(vars))
		}
		b.WriteString(val)
		rest = rest[i+2+end+1:]
	}
}

// ExpandAll expands every element of args; the error names the index.
func ExpandAll(args []string, vars map[string]string) ([]string, error) {
	out := make([]string, len(args))
	for i, a := range args {
		v, err := Expand(a, vars)
		if err != nil {
			return nil, fmt.Errorf("argument %d: %w", i, err)
		}
		out[i] = v
	}
	return out, nil
}

func knownNames(vars map[string]string) string {
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
