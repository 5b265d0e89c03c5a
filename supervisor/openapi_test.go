package supervisor

import (
	"reflect"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

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

// The health answer's JSON matches the Health schema: every field is a
// property, nullable exactly when the Go type is a pointer (marshals to null).
func TestHealthSchemaMatchesGoType(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Nullable   bool `yaml:"nullable"`
					Properties map[string]struct {
						Nullable bool `yaml:"nullable"`
					} `yaml:"properties"`
				} `yaml:"properties"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	health := doc.Components.Schemas["Health"].Properties
	check := func(where string, typ reflect.Type, nullable func(string) (bool, bool)) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			n, ok := nullable(tag)
			if !ok {
				t.Errorf("%s.%s: missing from the schema", where, tag)
				continue
			}
			if ptr := f.Type.Kind() == reflect.Pointer; ptr != n {
				t.Errorf("%s.%s: nullable %t, Go type %s", where, tag, n, f.Type)
			}
		}
	}
	check("Health", reflect.TypeOf(Health{}), func(k string) (bool, bool) {
		p, ok := health[k]
		return p.Nullable, ok
	})
	check("Health.metrics", reflect.TypeOf(HealthMetrics{}), func(k string) (bool, bool) {
		p, ok := health["metrics"].Properties[k]
		return p.Nullable, ok
	})
}
