package httpmiddleware

import (
	"log/slog"
	"net/http"
)

// Config configures Stack.
type Config struct {
	Auth    AuthConfig
	Logger  *slog.Logger
	Observe Observer // metrics; nil: none
	// QuietRoutes log their successful requests at Debug (see RequestLog).
	QuietRoutes  []Route
	MaxBodyBytes int64 // 0: DefaultMaxBodyBytes
}

// Stack wraps next in every middleware of this package, outermost first:
// correlation id, request log, recovery, auth, audit, body limit.
//
// Auth comes before the body limit, so an unauthenticated request is 401
// (and audited as denied) whatever its size; the body auth reads to find a
// worker callback's id is bounded by the same limit. The audit sits outside
// the body limit, so an authenticated mutating call refused with 413 is
// audited too. cfg.Auth.Audit receives every mutating request that passed
// authentication.
func Stack(cfg Config, next http.Handler) http.Handler {
	if cfg.Auth.MaxBodyBytes <= 0 {
		cfg.Auth.MaxBodyBytes = cfg.MaxBodyBytes
	}
	h := BodyLimit(cfg.MaxBodyBytes)(next)
	h = Audit(cfg.Auth.Audit)(h)
	h = Auth(cfg.Auth)(h)
	h = Recover(cfg.Logger)(h)
	h = RequestLog(cfg.Logger, cfg.Observe, cfg.QuietRoutes...)(h)
	return CorrelationID(h)
}
