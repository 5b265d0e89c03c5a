package gpu

import (
	"fmt"
	"strconv"
	"strings"
)

// parseVersion reads a dotted driver version ("535.104.05") as numbers, so
// "535.0" < "535.104" and "99.0" < "100.0". A missing part counts as 0.
func parseVersion(s string) ([]int, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	out := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a dotted version number", s)
		}
		out[i] = n
	}
	return out, nil
}

// versionLess reports a < b, comparing part by part.
func versionLess(a, b []int) bool {
	for i := 0; i < len(a) || i < len(b); i++ {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return x < y
		}
	}
	return false
}
