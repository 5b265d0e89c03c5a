package engine

import (
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	page := `# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 3
llamacpp:requests_deferred{slot="a"} 1
llamacpp:requests_deferred{slot="b"} 2 1700000000
llamacpp:requests_processing_total 99
other 5
`
	got, err := ParseMetrics(strings.NewReader(page), "llamacpp:requests_processing", "llamacpp:requests_deferred", "missing")
	if err != nil {
		t.Fatal(err)
	}
	if got["llamacpp:requests_processing"] != 3 || got["llamacpp:requests_deferred"] != 3 || len(got) != 2 {
		t.Fatalf("got %v", got)
	}
}
