// Package api holds the OpenAPI description of pool-managerd's HTTP API
// (docs/contract.md §4). It is embedded so that tests and tools read the very file
// operators are given, and Routes lets the daemon's tests check that its
// handlers and this description list the same endpoints.
package api

import (
	_ "embed"
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// OpenAPI is openapi.yaml, as shipped.
//
//go:embed openapi.yaml
var OpenAPI []byte

// Route is one operation: an upper-case HTTP method and an OpenAPI path
// template such as /v1/pools/{id} (the same syntax as net/http patterns).
type Route struct {
	Method, Path string
}

func (r Route) String() string { return r.Method + " " + r.Path }

// methods are the keys of an OpenAPI path item that name operations; the
// others (parameters, summary, ...) do not.
var methods = map[string]bool{"get": true, "put": true, "post": true, "delete": true,
	"options": true, "head": true, "patch": true, "trace": true}

// Routes lists every operation in OpenAPI, sorted by path, then method.
func Routes() ([]Route, error) {
	var doc struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(OpenAPI, &doc); err != nil {
		return nil, fmt.Errorf("api: openapi.yaml: %w", err)
	}
	var out []Route
	for path, item := range doc.Paths {
		for key := range item {
			if methods[key] {
				out = append(out, Route{Method: strings.ToUpper(key), Path: path})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Method < out[j].Method
	})
	return out, nil
}
