package httpmiddleware

import (
	"log/slog"
	"net/http"
)

// Config configures Stack.
type Config struct {
	Auth         AuthConfig
	Logger       *slog.Logger
	Observe      Observer // metrics; nil: none
	MaxBodyBytes int64    // 0: DefaultMaxBodyBytes
}

// Stack wraps next in every middleware of this package, outermost first:
// correlation id, request log, recovery, body limit, auth, audit.
//
// The body limit runs before auth, so a body read to authenticate a worker
// callback is bounded too, and an oversized declared body is refused before
// anything reads it. cfg.Auth.Audit also receives every mutating request
// that passed authentication.
func Stack(cfg Config, next http.Handler) http.Handler {
	if cfg.Auth.MaxBodyBytes <= 0 {
		cfg.Auth.MaxBodyBytes = cfg.MaxBodyBytes
	}
	h := Audit(cfg.Auth.Audit)(next)
	h = Auth(cfg.Auth)(h)
	h = BodyLimit(cfg.MaxBodyBytes)(h)
	h = Recover(cfg.Logger)(h)
	h = RequestLog(cfg.Logger, cfg.Observe)(h)
	return CorrelationID(h)
}
