// This file encodes the health answer without reflection: it is the most
// frequent query (load balancers and routers poll it), and encoding/json
// was the largest part of its cost.

package supervisor

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// appendJSON appends h exactly as writeJSON encodes it (encoding/json
// without HTML escaping, then a newline). ok is false when encoding/json
// would fail (a NaN or infinite number); b is then unusable.
func (h *Health) appendJSON(b []byte) (_ []byte, ok bool) {
	b = append(b, `{"live":`...)
	b = strconv.AppendBool(b, h.Live)
	b = append(b, `,"ready":`...)
	b = strconv.AppendBool(b, h.Ready)
	b = append(b, `,"draining":`...)
	b = strconv.AppendBool(b, h.Draining)
	b = append(b, `,"state":`...)
	b = appendJSONString(b, string(h.State))
	b = append(b, `,"last_error":`...)
	b = appendJSONStringPtr(b, h.LastError)
	b = append(b, `,"engine_version":`...)
	b = appendJSONStringPtr(b, h.EngineVersion)
	m := &h.Metrics
	b = append(b, `,"metrics":{"active_leases":`...)
	b = strconv.AppendInt(b, int64(m.ActiveLeases), 10)
	b = append(b, `,"slots":`...)
	b = strconv.AppendInt(b, int64(m.Slots), 10)
	b = append(b, `,"restart_count":`...)
	b = strconv.AppendInt(b, int64(m.RestartCount), 10)
	b = append(b, `,"starts":`...)
	b = strconv.AppendInt(b, int64(m.Starts), 10)
	b = append(b, `,"consecutive_failures":`...)
	b = strconv.AppendInt(b, int64(m.ConsecutiveFailures), 10)
	b = append(b, `,"uptime_ms":`...)
	b = strconv.AppendInt(b, m.UptimeMS, 10)
	b = append(b, `,"last_heartbeat_ms":`...)
	if m.LastHeartbeatMS == nil {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, *m.LastHeartbeatMS, 10)
	}
	b = append(b, `,"requests_processing":`...)
	if b, ok = appendJSONFloatPtr(b, m.RequestsProcessing); !ok {
		return b, false
	}
	b = append(b, `,"requests_deferred":`...)
	if b, ok = appendJSONFloatPtr(b, m.RequestsDeferred); !ok {
		return b, false
	}
	return append(b, "}}\n"...), true
}

func appendJSONStringPtr(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	return appendJSONString(b, *s)
}

// appendJSONString appends s as a JSON string, as encoding/json without
// HTML escaping writes it: printable ASCII other than '"' and '\' is
// copied; anything else goes through encoding/json itself.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			// A string always encodes (invalid UTF-8 becomes U+FFFD). The
			// copy keeps s itself from escaping, and with it every health
			// answer's strings, to the heap.
			_ = enc.Encode(strings.Clone(s))
			return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSONFloatPtr appends null or *f as encoding/json formats a float64
// (ES6 number to string: %f, or %e outside [1e-6, 1e21) with the exponent
// not padded); ok is false for NaN and infinities, which it refuses.
func appendJSONFloatPtr(b []byte, f *float64) (_ []byte, ok bool) {
	if f == nil {
		return append(b, "null"...), true
	}
	v := *f
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return b, false
	}
	format := byte('f')
	if abs := math.Abs(v); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, v, format, -1, 64)
	if format == 'e' { // e-09 -> e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, true
}

// healthBufs recycles the buffers health answers are encoded into (a
// ResponseWriter copies what it is given).
var healthBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// writeHealth answers h with code 200, the same bytes and headers as
// writeJSON(w, 200, h).
func writeHealth(w http.ResponseWriter, h *Health) {
	bp := healthBufs.Get().(*[]byte)
	defer healthBufs.Put(bp)
	b, ok := h.appendJSON((*bp)[:0])
	if !ok { // what writeJSON answers for a value encoding/json refuses
		writeBody(w, 500, []byte(encodeFailed))
		return
	}
	if cap(b) <= 4<<10 { // a huge last_error's buffer is not kept
		*bp = b[:0]
	}
	writeBody(w, 200, b)
}
