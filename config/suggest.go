package config

import "strings"

// Closest returns the word of allowed that a misspelt word most likely
// meant (the same measure as the "did you mean" of unknown config keys), or
// "" when none is close. poolctl uses it for mistyped commands.
func Closest(word string, allowed []string) string {
	s := suggest(word, allowed)
	if s == "" {
		return ""
	}
	// suggest's answer is ` (did you mean "x"?)`.
	s = strings.TrimPrefix(s, ` (did you mean "`)
	return strings.TrimSuffix(s, `"?)`)
}
