package supervisor

import (
	"sort"
	"testing"

	"github.com/pool-managerd/pool-managerd/api"
)

// The OpenAPI description and the server's route table list exactly the same
// method+path pairs, so neither can drift from the other.
func TestOpenAPIMatchesHandlers(t *testing.T) {
	spec, err := api.Routes()
	if err != nil {
		t.Fatal(err)
	}
	var doc, srv []string
	for _, r := range spec {
		doc = append(doc, r.Method+" "+r.Path)
	}
	for _, r := range (&Daemon{}).Routes() {
		srv = append(srv, r[0]+" "+r[1])
	}
	sort.Strings(doc)
	sort.Strings(srv)
	if len(doc) != len(srv) {
		t.Fatalf("openapi.yaml has %d routes, the server %d:\n%v\n%v", len(doc), len(srv), doc, srv)
	}
	for i := range doc {
		if doc[i] != srv[i] {
			t.Fatalf("route mismatch: openapi %q vs server %q", doc[i], srv[i])
		}
	}
}
