package httpmiddleware

import "net/http"

// DefaultMaxBodyBytes is the request body limit of DESIGN.md: 1 MiB.
const DefaultMaxBodyBytes = 1 << 20

// BodyLimit caps every request body at max bytes (DefaultMaxBodyBytes when
// max <= 0). A body that declares a larger Content-Length is refused at once
// with 413 PAYLOAD_TOO_LARGE; one that streams past the limit makes the
// handler's read fail with *http.MaxBytesError, which handlers answer with
// the same 413.
func BodyLimit(max int64) func(http.Handler) http.Handler {
	if max <= 0 {
		max = DefaultMaxBodyBytes
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > max {
				WriteError(w, http.StatusRequestEntityTooLarge, CodePayloadTooLarge,
					"request body exceeds the size limit", map[string]any{"limit_bytes": max})
				return
			}
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = http.MaxBytesReader(w, r.Body, max)
			}
			next.ServeHTTP(w, r)
		})
	}
}
