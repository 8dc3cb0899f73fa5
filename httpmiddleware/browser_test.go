package httpmiddleware

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Without a token, a request that a web page could have made (an Origin
// that is not loopback, a Host that is not a loopback name: DNS rebinding)
// is 403 FORBIDDEN and audited, never served; local clients are served.
// With a token the check is not needed (a page can neither know the token
// nor send it cross-site without a preflight the hive never grants).
func TestBrowserRequestsWithoutToken(t *testing.T) {
	audit := &syncBuffer{}
	served := 0
	h := Stack(Config{Logger: slog.New(slog.DiscardHandler), Auth: AuthConfig{Audit: NewAuditLog(audit, nil)}},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served++ }))
	cases := []struct {
		host, origin string
		ok           bool
	}{
		{"127.0.0.1:8080", "", true},
		{"localhost:8080", "", true},
		{"LOCALHOST", "", true},
		{"[::1]:8080", "", true},
		{"127.0.0.2:8080", "http://127.0.0.2:8080", true},
		{"127.0.0.1:8080", "http://localhost:3000", true},
		{"", "", true},
		{"127.0.0.1:8080", "http://evil.example", false},
		{"127.0.0.1:8080", "https://evil.example:443", false},
		{"127.0.0.1:8080", "null", false},
		{"127.0.0.1:8080", "file://", false},
		{"127.0.0.1:8080", "http://127.0.0.1.evil.example", false},
		{"evil.example:8080", "", false},
		{"rebind.evil.example:8080", "http://rebind.evil.example:8080", false},
		{"10.0.0.5:8080", "", false},
		{"localhost.evil.example", "", false},
	}
	for _, c := range cases {
		served = 0
		r := httptest.NewRequest("POST", "/v1/admin/shutdown", nil)
		r.Host = c.host
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if c.ok != (served == 1) || (!c.ok && (w.Code != 403 || !strings.Contains(w.Body.String(), CodeForbidden))) {
			t.Errorf("Host %q Origin %q: status %d, served %d; want served %v", c.host, c.origin, w.Code, served, c.ok)
		}
	}
	if n := strings.Count(audit.String(), `"outcome":"denied"`); n != 9 {
		t.Errorf("%d denied audit entries, want 9:\n%s", n, audit.String())
	}

	// With a token the same requests reach the token check.
	h = Stack(Config{Logger: slog.New(slog.DiscardHandler), Auth: AuthConfig{Token: "t0ken"}},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	r := httptest.NewRequest("GET", "/v1/status", nil)
	r.Host = "evil.example"
	r.Header.Set("Origin", "http://evil.example")
	r.Header.Set("Authorization", "Bearer t0ken")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Errorf("with the token: %d %s", w.Code, w.Body)
	}
}
