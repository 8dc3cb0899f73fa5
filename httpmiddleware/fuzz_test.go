package httpmiddleware

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzAuthorization: whatever the header, the handler is reached exactly
// when it carries the admin token under the Bearer scheme, and a refusal is
// always a 401 envelope.
func FuzzAuthorization(f *testing.F) {
	for _, seed := range []string{"", "Bearer " + adminToken, "bearer " + adminToken, "BEARER  " + adminToken,
		"Bearer", "Bearer ", "Basic abc", "Bearer " + adminToken + "\x00", "Bearer\t" + adminToken, strings.Repeat("B", 9000)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		reached := false
		h := Auth(AuthConfig{Token: adminToken})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
		req := httptest.NewRequest("GET", "/v1/status", nil)
		req.Header["Authorization"] = []string{header}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		scheme, rest, _ := strings.Cut(header, " ")
		want := strings.EqualFold(scheme, "Bearer") && strings.TrimLeft(rest, " ") == adminToken
		if reached != want {
			t.Fatalf("header %q: reached %v, want %v", header, reached, want)
		}
		if !reached && (rec.Code != 401 || !strings.Contains(rec.Body.String(), `"code":"`)) {
			t.Fatalf("header %q: refusal %d %s", header, rec.Code, rec.Body)
		}
	})
}

// FuzzCorrelationID: an accepted id is echoed unchanged and is safe in a
// header; anything else is replaced.
func FuzzCorrelationID(f *testing.F) {
	for _, seed := range []string{"", "abc", "a b", "x\r\nSet-Cookie: y", strings.Repeat("z", 129), "ok-1.2_3"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, id string) {
		var seen string
		h := CorrelationID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = CorrelationIDFrom(r.Context()) }))
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set(HeaderCorrelationID, id)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		got := rec.Header().Get(HeaderCorrelationID)
		if got != seen || !ValidCorrelationID(got) {
			t.Fatalf("id %q: echoed %q, handler saw %q", id, got, seen)
		}
		if ValidCorrelationID(id) != (got == id) {
			t.Fatalf("id %q: echoed %q", id, got)
		}
	})
}
