package supervisor

import (
	"math"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/pool-managerd/pool-managerd/actors"
)

// sameAsWriteJSON fails t unless writeHealth answers h with the status,
// headers and bytes writeJSON(w, 200, h) answers.
func sameAsWriteJSON(t *testing.T, h Health) {
	t.Helper()
	want, got := httptest.NewRecorder(), httptest.NewRecorder()
	writeJSON(want, 200, h)
	writeHealth(got, &h)
	if got.Code != want.Code || got.Body.String() != want.Body.String() || !reflect.DeepEqual(got.Header(), want.Header()) {
		t.Fatalf("writeHealth: %d %v %q\nwriteJSON:   %d %v %q", got.Code, got.Header(), got.Body, want.Code, want.Header(), want.Body)
	}
}

// fillAll sets every field reachable from v (a pointer) to a value other
// than its zero, so a field added to Health or HealthMetrics and not to
// appendJSON shows in the comparison.
func fillAll(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillAll(v.Elem(), n)
	case reflect.Struct:
		for i := range v.NumField() {
			fillAll(v.Field(i), n)
		}
	case reflect.Bool:
		v.SetBool(true)
	case reflect.String:
		v.SetString("s" + string(rune('a'+*n%26)))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n) * 1001)
	case reflect.Float64:
		v.SetFloat(float64(*n) + 0.25)
	default:
		panic("fillAll: add a case for " + v.Kind().String() + " (and to appendJSON)")
	}
}

// TestHealthJSONMatchesEncodingJSON: the health answer's own encoder gives
// encoding/json's bytes for every field set, for strings JSON must escape,
// and for numbers at the edges of its float formatting; NaN is the same
// 500 INTERNAL answer.
func TestHealthJSONMatchesEncodingJSON(t *testing.T) {
	var all Health
	n := 0
	fillAll(reflect.ValueOf(&all).Elem(), &n)
	sameAsWriteJSON(t, all)
	sameAsWriteJSON(t, Health{})
	sameAsWriteJSON(t, Health{State: actors.StateReady, Live: true, Ready: true})

	for _, s := range []string{"", "plain", `quote " and \ backslash`, "<html> & more", "tab\tnewline\n\x00\x1f\x7f",
		"üñïçødé", "\u2028\u2029", "bad utf-8 \xff\xfe", string(make([]byte, 5000))} {
		sameAsWriteJSON(t, Health{State: actors.State(s), LastError: &s, EngineVersion: &s})
	}
	for _, f := range []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 123.456, 1e-6, 9.99e-7, 1e-7, 1.5e-300,
		1e20, 1e21, -1e21, 1.7976931348623157e308, 5e-324, float64(1 << 53)} {
		sameAsWriteJSON(t, Health{Metrics: HealthMetrics{RequestsProcessing: &f, RequestsDeferred: &f}})
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		one := 1.0
		sameAsWriteJSON(t, Health{Metrics: HealthMetrics{RequestsProcessing: &f, RequestsDeferred: &one}})
		sameAsWriteJSON(t, Health{Metrics: HealthMetrics{RequestsProcessing: &one, RequestsDeferred: &f}})
	}
	for _, i := range []int64{math.MinInt64, -1, math.MaxInt64} {
		sameAsWriteJSON(t, Health{Metrics: HealthMetrics{ActiveLeases: int(i), Slots: int(i), RestartCount: int(i),
			Starts: int(i), ConsecutiveFailures: int(i), UptimeMS: i, LastHeartbeatMS: &i}})
	}
}

// FuzzHealthJSON compares the health encoder with encoding/json on
// arbitrary strings and numbers. Plain `go test` runs only the seeds:
//
//	go test -run='^$' -fuzz='^FuzzHealthJSON$' -fuzztime=20s ./supervisor
func FuzzHealthJSON(f *testing.F) {
	f.Add("ready", "exit status 1: \"x\"", "b1234", int64(5), 1.5, 0.0)
	f.Add("", "\xff\u2028<&>", "", int64(-1), 1e-7, 1e21)
	f.Fuzz(func(t *testing.T, state, lastErr, version string, i int64, p, q float64) {
		sameAsWriteJSON(t, Health{Live: i&1 != 0, Ready: i&2 != 0, Draining: i&4 != 0, State: actors.State(state),
			LastError: &lastErr, EngineVersion: nullable(version), Metrics: HealthMetrics{ActiveLeases: int(i), Slots: int(i >> 3),
				RestartCount: int(i >> 7), Starts: int(i >> 11), ConsecutiveFailures: int(i >> 13), UptimeMS: i, LastHeartbeatMS: &i,
				RequestsProcessing: &p, RequestsDeferred: &q}})
	})
}
