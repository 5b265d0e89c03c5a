package config

import (
	"os"
	"regexp"
	"testing"
)

// The package doc is the key reference the README points to: every key a
// pool accepts is named there.
func TestDocNamesEveryPoolKey(t *testing.T) {
	b, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range poolKeys {
		if !regexp.MustCompile(`(?m)^//\s.*\b` + regexp.QuoteMeta(k) + `\b`).Match(b) {
			t.Errorf("doc.go does not name pool key %q", k)
		}
	}
}
