package httpserver

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/rbee-hive/rbee-hive/httpmiddleware"
	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/metrics"
	"github.com/rbee-hive/rbee-hive/registry"
)

// TestRoutesMatchOpenAPI fails when echo serves a route the OpenAPI
// document lacks, or the document has one echo does not serve.
func TestRoutesMatchOpenAPI(t *testing.T) {
	h := newHarness(t, nil)
	var served []string
	for _, r := range h.server.echo.Routes() {
		if r.Method == echo.RouteNotFound {
			continue
		}
		served = append(served, r.Method+" "+r.Path)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	param := regexp.MustCompile(`\{([^}]+)\}`)
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+param.ReplaceAllString(path, ":$1"))
		}
	}
	sort.Strings(served)
	sort.Strings(documented)
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("served but not in openapi.json: %s", r)
		}
	}
	for _, r := range documented {
		if !slices.Contains(served, r) {
			t.Errorf("in openapi.json but not served: %s", r)
		}
	}
	if len(served) != 20 {
		t.Errorf("%d routes, want the 20 of DESIGN.md's table (with the /metrics alias)", len(served))
	}

	// Every $ref resolves, and the document is served as is.
	var components struct {
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	json.Unmarshal(OpenAPI(), &components)
	for _, m := range regexp.MustCompile(`"#/components/schemas/([A-Za-z]+)"`).FindAllStringSubmatch(string(OpenAPI()), -1) {
		if _, ok := components.Components.Schemas[m[1]]; !ok {
			t.Errorf("dangling $ref %s", m[1])
		}
	}
	a := h.do("GET", "/v1/openapi.json", "")
	if a.status != 200 || string(a.body) != string(OpenAPI()) {
		t.Fatalf("GET /v1/openapi.json: %d", a.status)
	}
}

// Every route but health needs the token; the checks run before routing.
func TestAuthOnEveryRoute(t *testing.T) {
	// No lifecycle: the admin shutdown call below must not start draining.
	h := newHarness(t, func(c *Config) { c.Lifecycle = nil })
	for _, r := range h.server.echo.Routes() {
		if r.Method == echo.RouteNotFound {
			continue
		}
		path := strings.ReplaceAll(r.Path, ":id", "prov-x")
		t.Run(r.Method+" "+r.Path, func(t *testing.T) {
			noToken := h.do(r.Method, path, "", "-")
			wrong := h.do(r.Method, path, "", "Bearer not-the-token")
			lower := h.do(r.Method, path, "", "bearer "+testToken)
			if r.Path == "/v1/health" {
				if noToken.status != 200 {
					t.Fatalf("health without token: %d", noToken.status)
				}
				return
			}
			noToken.expectError(t, 401, httpmiddleware.CodeMissingAPIKey, "")
			wrong.expectError(t, 401, httpmiddleware.CodeInvalidAPIKey, "")
			if !strings.HasPrefix(noToken.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("no WWW-Authenticate: Bearer")
			}
			if lower.status == 401 {
				t.Errorf("lowercase scheme refused: %s", lower.body)
			}
		})
	}
	h.do("GET", "/v1/no/such/route", "", "-").expectError(t, 401, httpmiddleware.CodeMissingAPIKey, "")
	if strings.Contains(h.audit.String(), "not-the-token") || strings.Contains(h.audit.String(), testToken) {
		t.Fatal("a token reached the audit log")
	}
	if !strings.Contains(h.audit.String(), `"outcome":"denied"`) {
		t.Fatal("auth failures are not audited")
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	h := newHarness(t, nil)
	h.do("GET", "/v1/nope", "").expectError(t, 404, CodeNotFound, "")
	h.do("GET", "/", "").expectError(t, 404, CodeNotFound, "")
	a := h.do("GET", "/v1/workers/spawn", "")
	a.expectError(t, 405, CodeMethodNotAllowed, "")
	if !strings.Contains(a.header.Get("Allow"), "POST") {
		t.Errorf("405 without Allow: %q", a.header.Get("Allow"))
	}
	h.do("DELETE", "/v1/status", "").expectError(t, 405, CodeMethodNotAllowed, "")
}

func TestCorrelationIDOnEveryAnswer(t *testing.T) {
	h := newHarness(t, nil)
	for _, path := range []string{"/v1/health", "/v1/status", "/v1/nope"} {
		req, _ := http.NewRequest("GET", h.srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set(httpmiddleware.HeaderCorrelationID, "queen-77")
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get(httpmiddleware.HeaderCorrelationID); got != "queen-77" {
			t.Errorf("%s: correlation id %q", path, got)
		}
	}
	if got := h.do("GET", "/v1/status", "").header.Get(httpmiddleware.HeaderCorrelationID); len(got) != 36 {
		t.Errorf("generated correlation id %q", got)
	}
}

func TestStrictDecoding(t *testing.T) {
	h := newHarness(t, nil)
	cases := []struct {
		name, path, body string
		status           int
		code, field      string
	}{
		{"unknown field", "/v1/workers/spawn", `{"model_ref":"m","backend":"cpu","gpu":1}`, 400, CodeInvalidRequest, "gpu"},
		{"wrong type", "/v1/workers/spawn", `{"model_ref":"m","backend":"cpu","device":"zero"}`, 400, CodeInvalidRequest, "device"},
		{"wrong type bool", "/v1/workers/spawn", `{"model_ref":"m","backend":"cpu","wait":"yes"}`, 400, CodeInvalidRequest, "wait"},
		{"missing model_ref", "/v1/workers/spawn", `{"backend":"cpu"}`, 400, CodeInvalidRequest, "model_ref"},
		{"missing backend", "/v1/workers/spawn", `{"model_ref":"m"}`, 400, CodeInvalidRequest, "backend"},
		{"negative device", "/v1/workers/spawn", `{"model_ref":"m","backend":"cpu","device":-1}`, 400, CodeInvalidRequest, "device"},
		{"not an object", "/v1/workers/spawn", `[1,2]`, 400, CodeInvalidRequest, ""},
		{"syntax", "/v1/workers/spawn", `{"model_ref":`, 400, CodeInvalidRequest, ""},
		{"trailing data", "/v1/workers/spawn", `{"model_ref":"m","backend":"cpu"} {}`, 400, CodeInvalidRequest, ""},
		{"empty body", "/v1/workers/spawn", ``, 400, CodeInvalidRequest, ""},
		{"provision unknown field", "/v1/models/provision", `{"model_ref":"x","force":true}`, 400, CodeInvalidRequest, "force"},
		{"provision no ref", "/v1/models/provision", `{}`, 400, CodeInvalidRequest, "model_ref"},
		{"shutdown bad id", "/v1/workers/shutdown", `{"worker_id":"../../etc/passwd"}`, 400, CodeInvalidRequest, "worker_id"},
		{"shutdown negative timeout", "/v1/workers/shutdown", `{"worker_id":"worker-0b7e6c1a-3f0e-4a51-9d7e-2c1f0e9a8b7c","timeout_s":-1}`, 400, CodeInvalidRequest, "timeout_s"},
		{"heartbeat bad state", "/v1/heartbeat", `{"worker_id":"worker-0b7e6c1a-3f0e-4a51-9d7e-2c1f0e9a8b7c","state":"loading"}`, 400, CodeInvalidRequest, "state"},
		{"ready without url", "/v1/workers/ready", `{"worker_id":"worker-0b7e6c1a-3f0e-4a51-9d7e-2c1f0e9a8b7c"}`, 400, CodeInvalidRequest, "url"},
		{"ready unknown field", "/v1/workers/ready", `{"worker_id":"worker-0b7e6c1a-3f0e-4a51-9d7e-2c1f0e9a8b7c","url":"http://127.0.0.1:1","extra":1}`, 400, CodeInvalidRequest, "extra"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.do("POST", tc.path, tc.body).expectError(t, tc.status, tc.code, tc.field)
		})
	}
	// Over 1 MiB: 413, declared or streamed.
	big := `{"model_ref":"` + strings.Repeat("a", 1<<20) + `","backend":"cpu"}`
	h.do("POST", "/v1/workers/spawn", big).expectError(t, 413, httpmiddleware.CodePayloadTooLarge, "")
	req, _ := http.NewRequest("POST", h.srv.URL+"/v1/workers/spawn", struct{ *strings.Reader }{strings.NewReader(big)})
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("streamed 1 MiB + body: %d", resp.StatusCode)
	}
	// A valid request passes decoding and reaches the (absent) monitor.
	h.do("POST", "/v1/workers/spawn", `{"model_ref":"m","backend":"cpu"}`).expectError(t, 503, CodeUnavailable, "")
}

func TestQueryValidation(t *testing.T) {
	h := newHarness(t, nil)
	h.do("GET", "/v1/workers/list?state=sleeping", "").expectError(t, 400, CodeInvalidRequest, "state")
	for _, id := range []string{"", "../../etc/passwd", "worker-1", "worker-0b7e6c1a-3f0e-4a51-9d7e-2c1f0e9a8b7c/../x", "%2e%2e%2fetc%2fpasswd"} {
		h.do("GET", "/v1/workers/logs?worker_id="+id, "").expectError(t, 400, CodeInvalidRequest, "worker_id")
	}
	const id = "worker-0b7e6c1a-3f0e-4a51-9d7e-2c1f0e9a8b7c"
	for _, tail := range []string{"0", "-1", "10001", "x", "1e3"} {
		h.do("GET", "/v1/workers/logs?worker_id="+id+"&tail="+tail, "").expectError(t, 400, CodeInvalidRequest, "tail")
	}
	h.do("GET", "/v1/workers/health?worker_id=nope", "").expectError(t, 400, CodeInvalidRequest, "worker_id")
	h.do("POST", "/v1/models/provision?wait=maybe", `{"model_ref":"x"}`).expectError(t, 400, CodeInvalidRequest, "wait")
	h.do("DELETE", "/v1/models/evict", "").expectError(t, 400, CodeInvalidRequest, "model_ref")
	h.do("DELETE", "/v1/models/evict?model_ref=a", `{"model_ref":"b"}`).expectError(t, 400, CodeInvalidRequest, "model_ref")
	h.do("DELETE", "/v1/models/evict", `{"model_ref":"b","x":1}`).expectError(t, 400, CodeInvalidRequest, "x")
}

func TestWorkerListFromRegistry(t *testing.T) {
	h := newHarness(t, nil)
	for i, spec := range []struct {
		id, ref string
		state   registry.State
	}{
		{"worker-00000000-0000-4000-8000-000000000001", "hf:a/b", registry.StateLoading},
		{"worker-00000000-0000-4000-8000-000000000002", "hf:a/c", registry.StateLoading},
	} {
		if _, err := h.reg.Register(registry.Worker{ID: spec.id, ModelRef: spec.ref, Backend: "cpu",
			CreatedAt: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)}); err != nil {
			t.Fatal(err)
		}
	}
	c := client.New(h.srv.URL, testToken)
	all, err := c.ListWorkers(t.Context(), client.ListWorkersOptions{})
	if err != nil || len(all) != 2 || all[0].ID != "worker-00000000-0000-4000-8000-000000000001" {
		t.Fatalf("list: %v %+v", err, all)
	}
	some, err := c.ListWorkers(t.Context(), client.ListWorkersOptions{ModelRef: "hf:a/c", State: "loading"})
	if err != nil || len(some) != 1 || some[0].ModelRef != "hf:a/c" {
		t.Fatalf("filtered: %v %+v", err, some)
	}
	none, err := c.ListWorkers(t.Context(), client.ListWorkersOptions{State: "idle"})
	if err != nil || none == nil || len(none) != 0 {
		t.Fatalf("empty list must be [] : %v %#v", err, none)
	}
	a := h.do("GET", "/v1/workers/list?state=idle", "")
	if strings.TrimSpace(string(a.body)) != `{"workers":[]}` {
		t.Fatalf("empty list body %s", a.body)
	}
}

func TestHealthStatusAndShutdown(t *testing.T) {
	h := newHarness(t, nil)
	c := client.New(h.srv.URL, testToken)
	anon := client.New(h.srv.URL, "")
	health, err := anon.Health(t.Context())
	if err != nil || health != (client.Health{Status: "alive", Version: "1.2.3-test", APIVersion: "v1"}) {
		t.Fatalf("health: %v %+v", err, health)
	}

	st, err := c.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "1.2.3-test" || st.UptimeS < 90 || len(st.Workers) != len(registry.States()) {
		t.Fatalf("status: %+v", st)
	}
	var cuda int
	for _, d := range st.Devices {
		if d.Backend == "cuda" {
			cuda++
			if d.TotalBytes == 0 || !strings.Contains(d.Name, "H100") {
				t.Errorf("device %+v", d)
			}
		}
	}
	if cuda != 8 {
		t.Fatalf("dgxh100 mock: %d cuda devices, want 8: %+v", cuda, st.Devices)
	}

	// Admin shutdown: 202, then health 503 and mutating calls 503, while
	// worker callbacks still pass the gate (here to the absent monitor).
	if _, err := anon.AdminShutdown(t.Context()); !client.IsCode(err, httpmiddleware.CodeMissingAPIKey) {
		t.Fatalf("admin shutdown without token: %v", err)
	}
	out, err := c.AdminShutdown(t.Context())
	if err != nil || out.Status != "shutting_down" {
		t.Fatalf("admin shutdown: %v %+v", err, out)
	}
	if len(h.life.requests) != 1 || h.life.requests[0] != "admin" {
		t.Fatalf("lifecycle saw %v", h.life.requests)
	}
	health, err = anon.Health(t.Context())
	if err != nil || health.Status != "shutting_down" {
		t.Fatalf("health while shutting down: %v %+v", err, health)
	}
	if a := h.do("GET", "/v1/health", "", "-"); a.status != 503 || strings.TrimSpace(string(a.body)) != `{"status":"shutting_down"}` {
		t.Fatalf("health: %d %s", a.status, a.body)
	}
	h.do("POST", "/v1/workers/spawn", `{"model_ref":"m","backend":"cpu"}`).expectError(t, 503, CodeShuttingDown, "")
	h.do("DELETE", "/v1/models/evict?model_ref=x", "").expectError(t, 503, CodeShuttingDown, "")
	h.do("POST", "/v1/heartbeat", `{"worker_id":"worker-0b7e6c1a-3f0e-4a51-9d7e-2c1f0e9a8b7c"}`).expectError(t, 503, CodeUnavailable, "")
	if _, err := c.AdminShutdown(t.Context()); err != nil {
		t.Fatalf("admin shutdown is idempotent: %v", err)
	}
	if _, err := c.Status(t.Context()); err != nil {
		t.Fatalf("reads keep working while draining: %v", err)
	}

	// The audit log has every mutating call with its outcome.
	audit := h.audit.String()
	for _, want := range []string{`"route":"/v1/admin/shutdown"`, `"outcome":"202"`, `"outcome":"503"`, `"correlation_id":"`} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit log lacks %s:\n%s", want, audit)
		}
	}
}

func TestUnconfiguredParts(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Lifecycle = nil })
	for _, p := range []string{"/v1/events", "/v1/metrics", "/metrics", "/v1/models/list", "/v1/models/catalog", "/v1/models/provision/prov-1", "/v1/workers/health"} {
		h.do("GET", p, "").expectError(t, 503, CodeUnavailable, "")
	}
	h.do("POST", "/v1/admin/shutdown", "").expectError(t, 503, CodeUnavailable, "")
}

func TestMetricsRoutesAndRequestObservation(t *testing.T) {
	events := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("event: hello\ndata: {}\n\n"))
	})
	var m *metrics.Metrics
	h := newHarness(t, func(c *Config) {
		m = metrics.New(c.Registry, c.Resources, nil)
		c.Metrics = m
		c.Events = events
	})
	c := client.New(h.srv.URL, testToken)
	if a := h.do("GET", "/v1/events", ""); a.status != 200 || !strings.Contains(string(a.body), "event: hello") {
		t.Fatalf("/v1/events: %d %s", a.status, a.body)
	}
	h.do("GET", "/v1/models/provision/prov-secret-id", "")
	h.do("GET", "/v1/some/raw/path", "")
	h.do("GET", "/v1/status", "", "-")
	if a := h.do("GET", "/metrics", ""); a.status != 200 {
		t.Fatalf("/metrics: %d", a.status)
	}
	text, err := c.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`rbee_hive_requests_total{code="200",method="GET",route="/v1/events"} 1`,
		`rbee_hive_requests_total{code="503",method="GET",route="/v1/models/provision/:id"} 1`,
		`rbee_hive_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`rbee_hive_requests_total{code="401",method="GET",route="unmatched"} 1`,
		`rbee_hive_requests_total{code="200",method="GET",route="/metrics"} 1`,
		`rbee_hive_workers_by_state{state="idle"} 0`,
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, leak := range []string{"prov-secret-id", "/v1/some/raw/path"} {
		if strings.Contains(string(text), leak) {
			t.Errorf("a raw path reached a metric label: %s", leak)
		}
	}
}

// HTTPServer's limits: an 8 KiB Authorization header is an ordinary wrong
// token; a header block over 16 KiB is a clean 431.
func TestHTTPServerLimits(t *testing.T) {
	h := newHarness(t, nil)
	hs := h.server.HTTPServer("127.0.0.1:0")
	if hs.ReadHeaderTimeout != 10*time.Second || hs.ReadTimeout != 60*time.Second || hs.WriteTimeout != 0 ||
		hs.IdleTimeout != 120*time.Second || hs.MaxHeaderBytes != 16<<10 {
		t.Fatalf("limits: %+v", hs)
	}
	// httptest serves it (and waits for every connection at Close).
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = hs
	srv.Start()
	t.Cleanup(srv.Close)
	base := srv.URL

	c := client.New(base, strings.Repeat("k", 8<<10))
	if _, err := c.Status(t.Context()); !client.IsCode(err, httpmiddleware.CodeInvalidAPIKey) {
		t.Fatalf("8 KiB token: %v", err)
	}
	req, _ := http.NewRequest("GET", base+"/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+strings.Repeat("k", 40<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("40 KiB header: %d", resp.StatusCode)
	}
	if _, err := client.New(base, testToken).Status(t.Context()); err != nil {
		t.Fatalf("the server still serves: %v", err)
	}
}
