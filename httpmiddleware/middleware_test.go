package httpmiddleware

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	adminToken  = "s3cret-admin-token"
	workerToken = "worker-token-1"
	workerID    = "worker-1"
)

// syncBuffer is an io.Writer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) entries(t *testing.T) []AuditEntry {
	t.Helper()
	var out []AuditEntry
	for _, line := range strings.Split(strings.TrimSpace(s.String()), "\n") {
		if line == "" {
			continue
		}
		var e AuditEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

type observed struct {
	method, route string
	status        int
}

type fixture struct {
	srv      *httptest.Server
	audit    *syncBuffer
	logs     *syncBuffer
	mu       sync.Mutex
	observed []observed
	lastBody []byte
	lastInfo Info
}

// newFixture serves a handler behind Stack over real loopback HTTP. The
// handler records the body and Info it saw, answers 202 to POSTs, panics
// on /panic, reads the whole body on /read, and sets a route template.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{audit: &syncBuffer{}, logs: &syncBuffer{}}
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		SetRoute(r.Context(), "/tmpl"+r.URL.Path)
		body, err := io.ReadAll(r.Body)
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			WriteError(w, http.StatusRequestEntityTooLarge, CodePayloadTooLarge, "too large", nil)
			return
		}
		f.mu.Lock()
		f.lastBody = body
		f.lastInfo = *InfoFrom(r.Context())
		f.mu.Unlock()
		switch {
		case r.URL.Path == "/panic":
			panic("boom secret")
		case r.Method == http.MethodPost:
			w.WriteHeader(http.StatusAccepted)
		default:
			fmt.Fprint(w, "ok")
		}
	})
	cfg := Config{
		Logger: slog.New(slog.NewJSONHandler(f.logs, nil)),
		Observe: func(method, route string, status int, d time.Duration) {
			f.mu.Lock()
			f.observed = append(f.observed, observed{method, route, status})
			f.mu.Unlock()
		},
		MaxBodyBytes: 1024,
		QuietRoutes:  []Route{{http.MethodGet, "/v1/quiet"}},
		Auth: AuthConfig{
			Token:        adminToken,
			Exempt:       []Route{{http.MethodGet, "/v1/health"}},
			WorkerRoutes: []Route{{http.MethodPost, "/v1/heartbeat"}},
			AuthenticateWorker: func(id, tok string) bool {
				return id == workerID && tok == workerToken
			},
			Audit: NewAuditLog(f.audit, func(err error) { t.Errorf("audit write: %v", err) }),
		},
	}
	f.srv = httptest.NewServer(Stack(cfg, inner))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) do(t *testing.T, method, path, auth string, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func errorCode(t *testing.T, body []byte) string {
	t.Helper()
	var e ErrorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("not an error envelope: %q: %v", body, err)
	}
	return e.Error.Code
}

func TestAuth(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name, method, path, auth, body string
		status                         int
		code                           string
		principal                      Principal
	}{
		{"exempt health", "GET", "/v1/health", "", "", 200, "", PrincipalAnonymous},
		{"no header", "GET", "/v1/status", "", "", 401, CodeMissingAPIKey, ""},
		{"blank header", "GET", "/v1/status", "   ", "", 401, CodeMissingAPIKey, ""},
		{"wrong token", "GET", "/v1/status", "Bearer nope", "", 401, CodeInvalidAPIKey, ""},
		{"token prefix", "GET", "/v1/status", "Bearer " + adminToken[:5], "", 401, CodeInvalidAPIKey, ""},
		{"token plus suffix", "GET", "/v1/status", "Bearer " + adminToken + "x", "", 401, CodeInvalidAPIKey, ""},
		{"basic scheme", "GET", "/v1/status", "Basic " + adminToken, "", 401, CodeInvalidAPIKey, ""},
		{"scheme only", "GET", "/v1/status", "Bearer", "", 401, CodeInvalidAPIKey, ""},
		{"admin", "GET", "/v1/status", "Bearer " + adminToken, "", 200, "", PrincipalAdmin},
		{"lowercase scheme", "GET", "/v1/status", "bearer " + adminToken, "", 200, "", PrincipalAdmin},
		{"unknown path needs auth before routing", "GET", "/nope", "", "", 401, CodeMissingAPIKey, ""},
		{"exempt is method specific", "POST", "/v1/health", "", "", 401, CodeMissingAPIKey, ""},
		{"worker token on callback", "POST", "/v1/heartbeat", "Bearer " + workerToken, `{"worker_id":"worker-1","state":"idle"}`, 202, "", PrincipalWorker},
		{"admin token on callback", "POST", "/v1/heartbeat", "Bearer " + adminToken, `{"worker_id":"worker-2"}`, 202, "", PrincipalAdmin},
		{"worker token for another worker", "POST", "/v1/heartbeat", "Bearer " + workerToken, `{"worker_id":"worker-2"}`, 401, CodeInvalidAPIKey, ""},
		{"worker token, no worker id", "POST", "/v1/heartbeat", "Bearer " + workerToken, `{}`, 401, CodeInvalidAPIKey, ""},
		{"worker token, broken json", "POST", "/v1/heartbeat", "Bearer " + workerToken, `{"worker_id":`, 401, CodeInvalidAPIKey, ""},
		{"worker token off the callbacks", "POST", "/v1/workers/spawn", "Bearer " + workerToken, `{"worker_id":"worker-1"}`, 401, CodeInvalidAPIKey, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.do(t, tc.method, tc.path, tc.auth, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if resp.Header.Get(HeaderCorrelationID) == "" {
				t.Error("no correlation id on the response")
			}
			if tc.code != "" {
				if got := errorCode(t, body); got != tc.code {
					t.Errorf("code %s, want %s", got, tc.code)
				}
				if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
				}
				return
			}
			f.mu.Lock()
			info, seen := f.lastInfo, string(f.lastBody)
			f.mu.Unlock()
			if info.Principal != tc.principal {
				t.Errorf("principal %q, want %q", info.Principal, tc.principal)
			}
			if seen != tc.body {
				t.Errorf("handler saw body %q, want %q (restored after the worker id peek)", seen, tc.body)
			}
			if tc.principal == PrincipalWorker && info.WorkerID != workerID {
				t.Errorf("worker id %q", info.WorkerID)
			}
		})
	}
}

func TestAuthOffWithoutToken(t *testing.T) {
	h := Stack(Config{Logger: slog.New(slog.DiscardHandler)}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := InfoFrom(r.Context()).Principal; p != PrincipalAnonymous {
			t.Errorf("principal %q", p)
		}
	}))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Get(srv.URL + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// A header value with control characters never reaches the handler as a
// token: net/http refuses it on the wire, and parseBearer refuses it when
// a request is built in process.
func TestAuthControlCharacters(t *testing.T) {
	f := newFixture(t)
	status, _ := rawRequest(t, f.srv.Listener.Addr().String(),
		"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+adminToken+"\x01\r\n\r\n")
	if status != 400 {
		t.Errorf("control char on the wire: status %d, want 400", status)
	}
	for _, tok := range []string{adminToken + "\x00", adminToken + "\x7f", "\t" + adminToken, adminToken + " x"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/v1/status", nil)
		req.Header["Authorization"] = []string{"Bearer " + tok}
		Auth(AuthConfig{Token: adminToken})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			t.Errorf("token %q reached the handler", tok)
		})).ServeHTTP(rec, req)
		if rec.Code != 401 || errorCode(t, rec.Body.Bytes()) != CodeInvalidAPIKey {
			t.Errorf("token %q: %d %s", tok, rec.Code, rec.Body)
		}
	}
}

// rawRequest writes req on a fresh connection and returns the status code.
func rawRequest(t *testing.T, addr, req string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestCorrelationID(t *testing.T) {
	f := newFixture(t)
	auth := "Bearer " + adminToken
	resp, _ := f.do(t, "GET", "/v1/status", auth, "", HeaderCorrelationID, "req-42.a_b")
	if got := resp.Header.Get(HeaderCorrelationID); got != "req-42.a_b" {
		t.Errorf("valid id not echoed: %q", got)
	}
	f.mu.Lock()
	if f.lastInfo.CorrelationID != "req-42.a_b" {
		t.Errorf("handler saw %q", f.lastInfo.CorrelationID)
	}
	f.mu.Unlock()
	seen := map[string]bool{}
	for _, bad := range []string{"", "has space", strings.Repeat("a", 129), "quote\"", "semi;colon", "ünï"} {
		resp, _ := f.do(t, "GET", "/v1/status", auth, "", HeaderCorrelationID, bad)
		got := resp.Header.Get(HeaderCorrelationID)
		if got == bad || !ValidCorrelationID(got) || len(got) != 36 || seen[got] {
			t.Errorf("for %q got %q, want a fresh uuid", bad, got)
		}
		seen[got] = true
	}
	// Also on errors produced before routing.
	resp, _ = f.do(t, "GET", "/v1/status", "", "", HeaderCorrelationID, "abc")
	if resp.StatusCode != 401 || resp.Header.Get(HeaderCorrelationID) != "abc" {
		t.Errorf("401 without the correlation id: %d %q", resp.StatusCode, resp.Header.Get(HeaderCorrelationID))
	}
	if !ValidCorrelationID(strings.Repeat("x", 128)) {
		t.Error("128 chars must be valid")
	}
}

func TestAuditLog(t *testing.T) {
	f := newFixture(t)
	f.do(t, "GET", "/v1/status", "Bearer wrong-token", "", HeaderCorrelationID, "cid-1")
	f.do(t, "POST", "/v1/workers/spawn", "Bearer "+adminToken, `{"model_ref":"x"}`, HeaderCorrelationID, "cid-2")
	f.do(t, "GET", "/v1/status", "Bearer "+adminToken, "") // not mutating: not audited
	f.do(t, "POST", "/v1/heartbeat", "Bearer "+workerToken, `{"worker_id":"worker-1"}`, HeaderCorrelationID, "cid-3")

	entries := f.audit.entries(t)
	if len(entries) != 3 {
		t.Fatalf("%d entries, want 3:\n%s", len(entries), f.audit)
	}
	for _, tok := range []string{adminToken, workerToken, "wrong-token"} {
		if strings.Contains(f.audit.String(), tok) {
			t.Fatalf("audit log contains a token: %s", f.audit)
		}
	}
	d := entries[0]
	if d.Outcome != "denied" || d.CorrelationID != "cid-1" || d.TokenFingerprint != Fingerprint("wrong-token") ||
		d.Method != "GET" || d.Path != "/v1/status" || d.RemoteAddr == "" || d.Reason == "" {
		t.Errorf("denied entry: %+v", d)
	}
	m := entries[1]
	if m.Outcome != "202" || m.Status != 202 || m.Route != "/tmpl/v1/workers/spawn" || m.CorrelationID != "cid-2" ||
		m.Principal != PrincipalAdmin || m.TokenFingerprint != Fingerprint(adminToken) {
		t.Errorf("mutating entry: %+v", m)
	}
	w := entries[2]
	if w.Principal != PrincipalWorker || w.WorkerID != workerID || w.TokenFingerprint != Fingerprint(workerToken) {
		t.Errorf("worker entry: %+v", w)
	}
	if len(Fingerprint("x")) != 6 || Fingerprint("") != "" || Fingerprint("a") == Fingerprint("b") {
		t.Error("fingerprint shape")
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestAuditWriteFailureDoesNotFailRequest(t *testing.T) {
	var mu sync.Mutex
	var failures int
	audit := NewAuditLog(failingWriter{}, func(error) { mu.Lock(); failures++; mu.Unlock() })
	srv := httptest.NewServer(Stack(Config{Logger: slog.New(slog.DiscardHandler), Auth: AuthConfig{Token: "t", Audit: audit}},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })))
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest("DELETE", srv.URL+"/x", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if resp.StatusCode != 204 || failures != 1 {
		t.Errorf("status %d, failures %d", resp.StatusCode, failures)
	}
	var nilLog *AuditLog
	nilLog.Write(AuditEntry{}) // a nil log discards
}

func TestBodyLimit(t *testing.T) {
	f := newFixture(t)
	auth := "Bearer " + adminToken
	resp, body := f.do(t, "POST", "/v1/workers/spawn", auth, strings.Repeat("a", 1024))
	if resp.StatusCode != 202 {
		t.Fatalf("at the limit: %d %s", resp.StatusCode, body)
	}
	// Declared too large: refused before anything reads it.
	resp, body = f.do(t, "POST", "/v1/workers/spawn", auth, strings.Repeat("a", 1025))
	if resp.StatusCode != 413 || errorCode(t, body) != CodePayloadTooLarge {
		t.Fatalf("declared over the limit: %d %s", resp.StatusCode, body)
	}
	// Without a token the size does not matter: 401, audited as denied.
	resp, body = f.do(t, "POST", "/v1/workers/spawn", "", strings.Repeat("a", 1025))
	if resp.StatusCode != 401 || errorCode(t, body) != CodeMissingAPIKey {
		t.Fatalf("declared over the limit without a token: %d %s", resp.StatusCode, body)
	}
	// Streamed (chunked, no Content-Length): the handler's read fails.
	req, _ := http.NewRequest("POST", f.srv.URL+"/v1/workers/spawn", io.MultiReader(strings.NewReader(strings.Repeat("b", 1025))))
	req.ContentLength = -1
	req.Header.Set("Authorization", auth)
	r2, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	if r2.StatusCode != 413 || errorCode(t, b2) != CodePayloadTooLarge {
		t.Fatalf("streamed over the limit: %d %s", r2.StatusCode, b2)
	}
	entries := f.audit.entries(t)
	if len(entries) != 4 || entries[1].Status != 413 || entries[2].Outcome != "denied" || entries[3].Status != 413 {
		t.Fatalf("audit of the oversized calls: %+v", entries)
	}
	// A worker callback too large to authenticate is 413 as well, declared
	// or streamed.
	resp, body = f.do(t, "POST", "/v1/heartbeat", "Bearer "+workerToken, `{"worker_id":"worker-1","x":"`+strings.Repeat("c", 1100)+`"}`)
	if resp.StatusCode != 413 || errorCode(t, body) != CodePayloadTooLarge {
		t.Fatalf("declared worker callback over the limit: %d %s", resp.StatusCode, body)
	}
	req, _ = http.NewRequest("POST", f.srv.URL+"/v1/heartbeat", io.MultiReader(strings.NewReader(`{"worker_id":"worker-1","x":"`+strings.Repeat("c", 1100)+`"}`)))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+workerToken)
	r3, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b3, _ := io.ReadAll(r3.Body)
	r3.Body.Close()
	if r3.StatusCode != 413 || errorCode(t, b3) != CodePayloadTooLarge {
		t.Fatalf("worker callback over the limit: %d %s", r3.StatusCode, b3)
	}
}

func TestRecoverAndRequestLog(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do(t, "POST", "/panic", "Bearer "+adminToken, "{}", HeaderCorrelationID, "cid-panic")
	if resp.StatusCode != 500 || errorCode(t, body) != CodeInternal || strings.Contains(string(body), "boom") {
		t.Fatalf("panic: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get(HeaderCorrelationID) != "cid-panic" {
		t.Error("no correlation id on the 500")
	}
	f.do(t, "GET", "/v1/health", "", "", HeaderCorrelationID, "cid-ok")
	f.do(t, "GET", "/v1/quiet", "Bearer "+adminToken, "", HeaderCorrelationID, "cid-quiet")
	f.do(t, "GET", "/v1/quiet", "", "", HeaderCorrelationID, "cid-quiet-denied")

	logs := f.logs.String()
	if !strings.Contains(logs, `"correlation_id":"cid-panic"`) || !strings.Contains(logs, `"route":"/tmpl/v1/health"`) ||
		!strings.Contains(logs, `"status":500`) || !strings.Contains(logs, `"duration"`) {
		t.Errorf("request log:\n%s", logs)
	}
	if strings.Contains(logs, "cid-quiet\"") || !strings.Contains(logs, "cid-quiet-denied") {
		t.Errorf("a quiet route's success must log at debug, its failure at info:\n%s", logs)
	}
	entries := f.audit.entries(t)
	if len(entries) != 2 || entries[0].Status != 500 {
		t.Errorf("a panicking mutating call is audited with 500: %+v", entries)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := []observed{{"POST", "/tmpl/panic", 500}, {"GET", "/tmpl/v1/health", 200}, {"GET", "/tmpl/v1/quiet", 200}, {"GET", "", 401}}
	if fmt.Sprint(f.observed) != fmt.Sprint(want) {
		t.Errorf("observed %v, want %v", f.observed, want)
	}
}

// An 8 KiB Authorization header is an ordinary (wrong) token; one larger
// than the server's header limit is refused by net/http with a clean 431.
func TestLargeAuthorizationHeader(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do(t, "GET", "/v1/status", "Bearer "+strings.Repeat("a", 8<<10), "")
	if resp.StatusCode != 401 || errorCode(t, body) != CodeInvalidAPIKey {
		t.Fatalf("8 KiB token: %d %s", resp.StatusCode, body)
	}
	srv := httptest.NewUnstartedServer(f.srv.Config.Handler)
	srv.Config.MaxHeaderBytes = 4 << 10
	srv.Start()
	t.Cleanup(srv.Close)
	status, _ := rawRequest(t, srv.Listener.Addr().String(),
		"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+strings.Repeat("a", 16<<10)+"\r\n\r\n")
	if status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized header: %d", status)
	}
}

// Streaming handlers (SSE) keep working through the recorders.
func TestFlushThroughStack(t *testing.T) {
	h := Stack(Config{Logger: slog.New(slog.DiscardHandler)}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "data: 1\n\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("flush: %v", err)
		}
	}))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "data: 1\n\n" {
		t.Fatalf("%q", b)
	}
}

func BenchmarkAuthAdmin(b *testing.B) {
	h := Auth(AuthConfig{Token: adminToken})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	req := httptest.NewRequest("GET", "/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	w := httptest.NewRecorder()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}
