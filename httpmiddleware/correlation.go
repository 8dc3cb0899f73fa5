package httpmiddleware

import (
	"net/http"

	"github.com/google/uuid"
)

// HeaderCorrelationID carries the correlation id on requests and responses
// (and, set by the monitor, to workers as RBEE_CORRELATION_ID).
const HeaderCorrelationID = "X-Correlation-ID"

// MaxCorrelationIDLen bounds an accepted correlation id.
const MaxCorrelationIDLen = 128

// ValidCorrelationID reports whether id may be echoed and passed on: 1 to
// 128 characters of [A-Za-z0-9._-]. Anything else (spaces, quotes, control
// characters, header injection attempts) is replaced by a fresh id, so the
// value is always safe in logs, headers and environment variables.
func ValidCorrelationID(id string) bool {
	if len(id) == 0 || len(id) > MaxCorrelationIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// CorrelationID accepts the request's X-Correlation-ID when it is valid,
// otherwise generates a UUID; it stores the id in the request's Info,
// rewrites the request header to it (so proxies and handlers see one
// value) and echoes it on the response before anything else writes.
func CorrelationID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r, info := WithInfo(r)
		id := r.Header.Get(HeaderCorrelationID)
		if !ValidCorrelationID(id) {
			id = uuid.NewString()
		}
		info.CorrelationID = id
		r.Header.Set(HeaderCorrelationID, id)
		w.Header().Set(HeaderCorrelationID, id)
		next.ServeHTTP(w, r)
	})
}
