package httpmiddleware

import (
	"errors"
	"log/slog"
	"net/http"
	"time"
)

// Observer is told about every finished request (metrics). route is the
// template the router matched, "" when none did.
type Observer func(method, route string, status int, d time.Duration)

// RequestLog logs every request through logger (method, route, path,
// status, duration, correlation id) and calls observe. Server errors log at
// Warn, the rest at Info, except successful requests to quiet routes
// (liveness probes, worker heartbeats: frequent and uneventful), which log
// at Debug. nil logger means slog.Default().
func RequestLog(logger *slog.Logger, observe Observer, quiet ...Route) func(http.Handler) http.Handler {
	if logger == nil {
		logger = slog.Default()
	}
	quietSet := routeSet(quiet)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r, info := WithInfo(r)
			start := time.Now()
			rec := newRecorder(w)
			defer func() {
				d := time.Since(start)
				status := rec.status
				if status == 0 {
					// Nothing written: net/http sends 200 for an empty
					// handler. A panic that got this far aborts the
					// connection instead (http.ErrAbortHandler).
					status = http.StatusOK
				}
				p := recover()
				if p != nil {
					status = 0
				}
				level := slog.LevelInfo
				switch {
				case status >= 500 || status == 0:
					level = slog.LevelWarn
				case status < 300 && quietSet[Route{r.Method, r.URL.Path}]:
					level = slog.LevelDebug
				}
				logger.LogAttrs(r.Context(), level, "http request",
					slog.String("method", r.Method),
					slog.String("route", info.Route),
					slog.String("path", r.URL.Path),
					slog.Int("status", status),
					slog.Duration("duration", d),
					slog.Int64("bytes", rec.bytes),
					slog.String("correlation_id", info.CorrelationID),
					slog.String("remote_addr", r.RemoteAddr),
				)
				if observe != nil {
					observe(r.Method, info.Route, status, d)
				}
				if p != nil {
					panic(p)
				}
			}()
			next.ServeHTTP(rec, r)
		})
	}
}

// Recover turns a panic in next into a 500 INTERNAL envelope (when nothing
// was written yet) and logs it with the correlation id; the client never
// sees the panic value. http.ErrAbortHandler passes through, as net/http
// intends.
func Recover(logger *slog.Logger) func(http.Handler) http.Handler {
	if logger == nil {
		logger = slog.Default()
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := newRecorder(w)
			defer func() {
				p := recover()
				if p == nil {
					return
				}
				if err, ok := p.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(p)
				}
				logger.Error("http handler panicked", "panic", p, "method", r.Method,
					"path", r.URL.Path, "correlation_id", CorrelationIDFrom(r.Context()))
				if rec.status == 0 {
					WriteError(rec, http.StatusInternalServerError, CodeInternal, "internal error", nil)
				}
			}()
			next.ServeHTTP(rec, r)
		})
	}
}
