package api

import (
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/pool-managerd/pool-managerd/actors"
)

// contractRoutes is docs/contract.md §4's table.
var contractRoutes = []string{
	"GET /healthz", "GET /readyz", "GET /metrics",
	"GET /v1/pools", "GET /v1/pools/{id}", "GET /v1/pools/{id}/health",
	"POST /v1/pools/{id}/drain", "POST /v1/pools/{id}/reload", "POST /v1/pools/{id}/start",
	"POST /v1/pools/{id}/leases", "DELETE /v1/pools/{id}/leases/{lease_id}",
	"POST /v1/placement", "GET /v1/events", "GET /v1/pools/{id}/logs",
}

// unauthenticated are the routes docs/contract.md §4 exempts from the token.
var unauthenticated = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

var errorCodes = []string{"INVALID_PARAMS", "UNAUTHORIZED", "POOL_NOT_FOUND", "LEASE_NOT_FOUND",
	"POOL_UNREADY", "POOL_DRAINING", "POOL_BUSY", "RELOAD_IN_PROGRESS", "RELOAD_FAILED",
	"PREFLIGHT_FAILED", // a reload's new model or resources failed its checks; nothing was touched
	"POOL_UNAVAILABLE", "PAYLOAD_TOO_LARGE", "NOT_FOUND", "METHOD_NOT_ALLOWED", "INTERNAL",
	// A reload's new_model_ref is checked before it can reach a shell.
	"INVALID_MODEL_REF", "MODEL_REF_NOT_ALLOWED"}

type obj = map[string]any

func load(t *testing.T) obj {
	t.Helper()
	var doc obj
	if err := yaml.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	return doc
}

// deref follows a local $ref ("#/components/...") until it reaches a node
// that is not a reference; it fails the test on a dangling one.
func deref(t *testing.T, doc obj, node any) obj {
	t.Helper()
	for {
		m, ok := node.(obj)
		if !ok {
			t.Fatalf("not an object: %#v", node)
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		node = any(doc)
		for _, k := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			next, ok := node.(obj)[k]
			if !ok {
				t.Fatalf("dangling $ref %s", ref)
			}
			node = next
		}
	}
}

// operations calls fn for every operation with its route and path item.
func operations(t *testing.T, doc obj, fn func(route string, op, item obj)) {
	for path, item := range doc["paths"].(obj) {
		for key, op := range item.(obj) {
			if methods[key] {
				fn(strings.ToUpper(key)+" "+path, op.(obj), item.(obj))
			}
		}
	}
}

func TestRoutesMatchContract(t *testing.T) {
	routes, err := Routes()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range routes {
		got = append(got, r.String())
	}
	want := slices.Clone(contractRoutes)
	sort.Strings(want)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("routes:\n got %q\nwant %q", got, want)
	}
}

func TestEveryRefResolves(t *testing.T) {
	doc := load(t)
	var walk func(any)
	walk = func(n any) {
		switch n := n.(type) {
		case obj:
			if _, ok := n["$ref"]; ok {
				deref(t, doc, n)
			}
			for _, v := range n {
				walk(v)
			}
		case []any:
			for _, v := range n {
				walk(v)
			}
		}
	}
	walk(doc)
}

// isError says whether a schema is Error, or extends it with allOf.
func isError(t *testing.T, doc obj, schema obj) bool {
	if schema["$ref"] == "#/components/schemas/Error" {
		return true
	}
	all, _ := deref(t, doc, schema)["allOf"].([]any)
	for _, s := range all {
		if isError(t, doc, s.(obj)) {
			return true
		}
	}
	return false
}

func TestOperationsDeclareErrorsAndAuth(t *testing.T) {
	doc := load(t)
	operations(t, doc, func(route string, op, item obj) {
		responses, ok := op["responses"].(obj)
		if !ok {
			t.Fatalf("%s: responses missing, or a status code is not quoted", route)
		}
		var errs, oks []string
		for code, r := range responses {
			switch {
			case code >= "400":
				errs = append(errs, code)
				schema, _ := deref(t, doc, r)["content"].(obj)["application/json"].(obj)["schema"].(obj)
				if schema == nil || !isError(t, doc, schema) {
					t.Errorf("%s %s: not the Error schema", route, code)
				}
			case code >= "200" && code < "300":
				oks = append(oks, code)
			}
		}
		if len(oks) == 0 || !slices.Contains(errs, "500") {
			t.Errorf("%s: want a 2xx and a 500 response, have %v %v", route, oks, errs)
		}
		sec, overridden := op["security"].([]any)
		path := strings.SplitN(route, " ", 2)[1]
		switch {
		case unauthenticated[path] && (!overridden || len(sec) != 0):
			t.Errorf("%s: must declare security: []", route)
		case !unauthenticated[path] && overridden:
			t.Errorf("%s: must keep the global bearer security", route)
		case !unauthenticated[path] && !slices.Contains(errs, "401"):
			t.Errorf("%s: needs a token, so must declare 401", route)
		}
		// Path parameters and the correlation header, on the operation or its path item.
		params := map[string]bool{}
		for _, list := range []any{item["parameters"], op["parameters"]} {
			l, _ := list.([]any)
			for _, p := range l {
				p := deref(t, doc, p)
				params[p["in"].(string)+":"+p["name"].(string)] = true
			}
		}
		for _, seg := range strings.Split(path, "/") {
			if strings.HasPrefix(seg, "{") && !params["path:"+strings.Trim(seg, "{}")] {
				t.Errorf("%s: path parameter %s undeclared", route, seg)
			}
		}
		if !params["header:X-Correlation-Id"] {
			t.Errorf("%s: X-Correlation-Id parameter undeclared", route)
		}
	})
	if sch := deref(t, doc, doc["components"].(obj)["securitySchemes"].(obj)["bearer"]); sch["scheme"] != "bearer" {
		t.Errorf("bearer scheme: %v", sch)
	}
}

func TestErrorCodes(t *testing.T) {
	doc := load(t)
	enum := deref(t, doc, map[string]any{"$ref": "#/components/schemas/Error"})["properties"].(obj)["code"].(obj)["enum"].([]any)
	var got []string
	for _, c := range enum {
		got = append(got, c.(string))
	}
	if !slices.Equal(got, errorCodes) {
		t.Errorf("Error.code enum %q, want %q", got, errorCodes)
	}
}

func TestRequestBodiesAreStrict(t *testing.T) {
	doc := load(t)
	n := 0
	operations(t, doc, func(route string, op, _ obj) {
		rb, ok := op["requestBody"]
		if !ok {
			return
		}
		n++
		schema := deref(t, doc, deref(t, doc, rb)["content"].(obj)["application/json"].(obj)["schema"])
		if schema["additionalProperties"] != false {
			t.Errorf("%s: body schema must set additionalProperties: false", route)
		}
		for name, p := range schema["properties"].(obj) {
			if strings.HasSuffix(name, "_ms") && p.(obj)["minimum"] != 0 {
				t.Errorf("%s: %s needs minimum: 0", route, name)
			}
		}
	})
	if n != 4 { // drain, reload, leases, placement
		t.Errorf("%d operations have a body, want 4", n)
	}
}

// nullableByMarshalJSON are fields whose Go type is not a pointer but that
// marshal to null anyway, through a MarshalJSON of their struct (an empty
// engine_version is unknown, so null: docs/contract.md §4).
var nullableByMarshalJSON = map[string]bool{"PoolStatus.engine_version": true}

// TestSchemasMatchGoTypes keeps the documented JSON in step with the types
// the daemon marshals: every json field is a property, nullable when the Go
// type can marshal to null.
func TestSchemasMatchGoTypes(t *testing.T) {
	doc := load(t)
	for name, v := range map[string]any{
		"PoolStatus": actors.PoolStatus{}, "Lease": actors.Lease{}, "PoolStateEvent": actors.Transition{},
	} {
		schema := deref(t, doc, obj{"$ref": "#/components/schemas/" + name})
		props := schema["properties"].(obj)
		required := map[string]bool{}
		for _, r := range schema["required"].([]any) {
			required[r.(string)] = true
		}
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			f := typ.Field(i)
			tag, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			// A field always marshalled (null when unknown, never omitted)
			// is required, so a client may count on the key.
			if always := !strings.Contains(opts, "omitempty"); always != required[tag] {
				t.Errorf("%s.%s: required %t, but the Go field is always marshalled: %t", name, tag, required[tag], always)
			}
			p, ok := props[tag]
			if !ok {
				t.Errorf("%s.%s: field missing from the schema", name, tag)
				continue
			}
			nullable := deref(t, doc, p)["nullable"] == true
			canBeNull := f.Type.Kind() == reflect.Pointer || f.Type.Kind() == reflect.Slice ||
				nullableByMarshalJSON[name+"."+tag]
			if f.Type.Kind() == reflect.Pointer && !nullable || nullable && !canBeNull {
				t.Errorf("%s.%s: nullable %t, Go type %s", name, tag, nullable, f.Type)
			}
		}
	}
}
