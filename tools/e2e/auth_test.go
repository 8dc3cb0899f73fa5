package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/rbee-hive/rbee-hive/tools/harness"
)

type openAPI struct {
	Security []map[string][]string `json:"security"`
	Paths    map[string]map[string]struct {
		Security *[]map[string][]string `json:"security"`
	} `json:"paths"`
}

type envelope struct {
	Error struct {
		Code    string         `json:"code"`
		Message string         `json:"message"`
		Details map[string]any `json:"details"`
	} `json:"error"`
}

// TestAuthOnEveryRoute walks the hive's own OpenAPI document: every
// operation that does not declare itself public answers 401 with the error
// envelope and WWW-Authenticate, MISSING_API_KEY without a token and
// INVALID_API_KEY with a wrong one; the public ones answer without a token.
func TestAuthOnEveryRoute(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{})

	r := d.Request("GET", "/v1/openapi.json", nil)
	if r.Status != 200 {
		t.Fatalf("GET /v1/openapi.json: %d %s", r.Status, r.Body)
	}
	var doc openAPI
	r.JSON(t, &doc)
	if len(doc.Paths) < 15 {
		t.Fatalf("openapi document lists %d paths; the API table has 19", len(doc.Paths))
	}
	var protected, public int
	for path, ops := range doc.Paths {
		url := strings.ReplaceAll(path, "{id}", "prov-does-not-exist")
		for method, op := range ops {
			method = strings.ToUpper(method)
			if op.Security != nil && len(*op.Security) == 0 {
				public++
				if r := d.RequestAuth(method, url, "", nil); r.Status != 200 {
					t.Errorf("%s %s is public but answered %d without a token", method, path, r.Status)
				}
				continue
			}
			protected++
			for _, c := range []struct{ auth, code string }{
				{"", "MISSING_API_KEY"},
				{"Bearer wrong-" + d.Token, "INVALID_API_KEY"},
				{"Basic " + d.Token, "INVALID_API_KEY"},
			} {
				r := d.RequestAuth(method, url, c.auth, `{}`)
				if r.Status != 401 {
					t.Errorf("%s %s with Authorization %q: %d, want 401", method, path, c.auth, r.Status)
					continue
				}
				var env envelope
				if err := json.Unmarshal(r.Body, &env); err != nil || env.Error.Code != c.code || env.Error.Message == "" {
					t.Errorf("%s %s with Authorization %q: body %s, want error code %s", method, path, c.auth, r.Body, c.code)
				}
				if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s %s: WWW-Authenticate %q", method, path, r.Header.Get("WWW-Authenticate"))
				}
				if r.Header.Get("X-Correlation-ID") == "" {
					t.Errorf("%s %s: 401 without X-Correlation-ID", method, path)
				}
			}
		}
	}
	if public != 1 || protected < 18 {
		t.Errorf("%d public and %d protected operations; want GET /v1/health alone public", public, protected)
	}
	// Nothing above shut the hive down, and the admin token works.
	if r := d.RequestAuth("GET", "/v1/health", "", nil); r.Status != 200 {
		t.Fatalf("health after the walk: %d %s", r.Status, r.Body)
	}
	for _, path := range []string{"/v1/status", "/v1/workers/list", "/v1/models/list", "/v1/models/catalog", "/v1/workers/health", "/v1/metrics", "/metrics"} {
		if r := d.Request("GET", path, nil); r.Status != 200 {
			t.Errorf("GET %s with the admin token: %d %s", path, r.Status, r.Body)
		}
	}
}
