package httpserver

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpmiddleware"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
)

const testToken = "test-admin-token"

// lockedBuffer is an io.Writer safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lifecycle is a shutdown switch with the Lifecycle interface.
type lifecycle struct {
	mu       sync.Mutex
	down     bool
	requests []string
}

func (l *lifecycle) ShuttingDown() bool { l.mu.Lock(); defer l.mu.Unlock(); return l.down }
func (l *lifecycle) RequestShutdown(reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = true
	l.requests = append(l.requests, reason)
}

type harness struct {
	t      testing.TB
	srv    *httptest.Server
	server *Server
	reg    *registry.Registry
	res    *resources.Manager
	audit  *lockedBuffer
	life   *lifecycle
}

// newHarness serves a Server over real loopback HTTP with a real registry
// and a resource manager on go-nvml's dgxh100 mock. mutate adjusts the
// config (the provisioner and monitor are nil unless it sets them).
func newHarness(t testing.TB, mutate func(*Config)) *harness {
	t.Helper()
	reg, err := registry.Open(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	res, err := resources.New(resources.Options{NVMLMock: "dgxh100", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Close() })
	h := &harness{t: t, reg: reg, res: res, audit: &lockedBuffer{}, life: &lifecycle{}}
	cfg := Config{
		Registry:  reg,
		Resources: res,
		Lifecycle: h.life,
		Token:     testToken,
		AuditLog:  h.audit,
		Logger:    slog.New(slog.DiscardHandler),
		Version:   "1.2.3-test",
		StartedAt: time.Now().Add(-90 * time.Second),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.server = s
	h.srv = httptest.NewServer(s.Handler())
	t.Cleanup(h.srv.Close)
	return h
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) errorBody(t *testing.T) httpmiddleware.ErrorDetail {
	t.Helper()
	var e httpmiddleware.ErrorBody
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error.Code == "" {
		t.Fatalf("status %d: not an error envelope: %q (%v)", a.status, a.body, err)
	}
	return e.Error
}

// expectError checks status and code (and details.field when field != "").
func (a answer) expectError(t *testing.T, status int, code, field string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %s", a.status, status, a.body)
	}
	e := a.errorBody(t)
	if e.Code != code {
		t.Fatalf("code %s, want %s: %s", e.Code, code, a.body)
	}
	if field != "" && e.Details["field"] != field {
		t.Fatalf("details.field %v, want %s: %s", e.Details["field"], field, a.body)
	}
}

// do sends a request with the admin token unless auth is given ("-" for
// none).
func (h *harness) do(method, path, body string, auth ...string) answer {
	h.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.srv.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	a := "Bearer " + testToken
	if len(auth) > 0 {
		a = auth[0]
	}
	if a != "-" {
		req.Header.Set("Authorization", a)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return h.send(req)
}

// send sends req as it is and reads the whole answer.
func (h *harness) send(req *http.Request) answer {
	h.t.Helper()
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}
