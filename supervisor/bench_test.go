package supervisor

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/pool-managerd/pool-managerd/actors"
)

// discardWriter is a reusable http.ResponseWriter that keeps nothing but
// the status, so a benchmark measures the API's own cost per request.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(c int)           { w.code = c }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }

// BenchmarkPoolHealth is GET /v1/pools/{id}/health through the daemon's
// whole handler chain (mux, wrap, handler), in process, with the log at
// Info as in production (the access record of a GET is Debug). For CPU and
// allocation profiles of the handler path:
//
//	go test -run '^$' -bench PoolHealth -benchmem -cpuprofile /tmp/cpu.out ./supervisor
func BenchmarkPoolHealth(b *testing.B) {
	td := startDaemonWith(b, func(o *Options) {
		o.Logger = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}, simPool("p"))
	td.waitState("p", actors.StateReady)
	req := httptest.NewRequest("GET", "/v1/pools/p/health", nil)
	w := &discardWriter{h: http.Header{}}
	serve := func(b *testing.B, h http.Handler) {
		b.ReportAllocs()
		for range b.N {
			clear(w.h)
			w.code = 0
			h.ServeHTTP(w, req)
			if w.code != 200 {
				b.Fatalf("HTTP %d", w.code)
			}
		}
	}
	b.Run("daemon", func(b *testing.B) { serve(b, td.srv.Handler) })
	// bare is what poolbench compares the daemon with: a plain ServeMux
	// answering the same bytes.
	rec := httptest.NewRecorder()
	td.srv.Handler.ServeHTTP(rec, req)
	body := rec.Body.Bytes()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/pools/{id}/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(200)
		_, _ = w.Write(body)
	})
	b.Run("bare", func(b *testing.B) { serve(b, mux) })
}
