package security

import (
	"encoding/base64"
	"os"
	"strings"
	"testing"

	"github.com/rbee-hive/rbee-hive/tools/harness"
)

func readFile(path string) ([]byte, error) { return os.ReadFile(path) }

// TestAuthMatrix sends every protected route of the OpenAPI document each
// kind of bad credential, byte for byte over TCP. Every one is refused with
// a 4xx (401 with the envelope and WWW-Authenticate when the request
// reached the hive; 400 or 431 when net/http already refused the header),
// each 401 is one "denied" audit entry, the right token with a lowercase
// scheme is accepted (RFC 7235), and no token, right or wrong, appears in
// the audit log or the daemon's log.
func TestAuthMatrix(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{})
	tok := d.Token
	// Each wrong credential carries a marker that must never be logged.
	secret := "leak-" + strings.Repeat("q", 8)
	variants := []struct {
		name, header string
		accepted     bool
	}{
		{"no header", "", false},
		{"empty bearer", "Authorization: Bearer ", false},
		{"wrong token", "Authorization: Bearer " + secret + "-wrong", false},
		{"token prefix", "Authorization: Bearer " + tok[:len(tok)-1], false},
		{"token suffix", "Authorization: Bearer " + tok + "x", false},
		{"lowercase scheme wrong token", "Authorization: bearer " + secret + "-lower", false},
		{"basic scheme", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+tok)), false},
		{"no scheme", "Authorization: " + tok, false},
		{"NUL in token", "Authorization: Bearer " + tok + "\x00", false},
		{"control char in token", "Authorization: Bearer " + tok[:4] + "\x01" + tok[4:], false},
		{"escape in token", "Authorization: Bearer " + secret + "\x1b[31m", false},
		{"DEL in token", "Authorization: Bearer " + tok + "\x7f", false},
		{"two tokens", "Authorization: Bearer " + secret + "-two, Bearer " + tok, false},
		{"8 KiB header", "Authorization: Bearer " + secret + strings.Repeat("A", 8<<10), false},
		{"20 KiB header", "Authorization: Bearer " + secret + strings.Repeat("B", 20<<10), false},
		{"lowercase scheme right token", "Authorization: bearer " + tok, true},
	}
	var refused, denied401 int
	for _, rt := range routes(t, d) {
		if rt.Public {
			continue
		}
		for _, v := range variants {
			if v.accepted && rt.Path == "/v1/admin/shutdown" {
				continue // accepted would shut the hive down
			}
			var headers []string
			if v.header != "" {
				headers = []string{v.header}
			}
			body := ""
			if rt.Method == "POST" || rt.Method == "DELETE" {
				body = `{}`
			}
			r := rawDo(t, d, rt.Method, rt.Path, headers, body)
			what := rt.Method + " " + rt.Path + " with " + v.name
			if r.Status >= 500 {
				t.Errorf("%s: %d %s", what, r.Status, r.Body)
				continue
			}
			if v.accepted {
				if r.Status == 401 {
					t.Errorf("%s: 401, want the token accepted: %s", what, r.Body)
				}
				continue
			}
			refused++
			switch r.Status {
			case 401:
				denied401++
				code := errorCode(r.Body)
				if code != "MISSING_API_KEY" && code != "INVALID_API_KEY" {
					t.Errorf("%s: 401 body %s, want the envelope", what, r.Body)
				}
				if v.header == "" && code != "MISSING_API_KEY" {
					t.Errorf("%s: code %s, want MISSING_API_KEY", what, code)
				}
				if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s: WWW-Authenticate %q", what, r.Header.Get("WWW-Authenticate"))
				}
			case 400, 431:
				// net/http refused the header before the hive saw it.
			default:
				t.Errorf("%s: %d %s, want 401 (or 400/431 from net/http)", what, r.Status, r.Body)
			}
		}
	}
	// The hive is still up and the token still works.
	if r := d.Request("GET", "/v1/status", nil); r.Status != 200 {
		t.Fatalf("status after the matrix: %d %s", r.Status, r.Body)
	}

	var denied int
	for _, a := range auditEntries(t, d) {
		if a["outcome"] == "denied" {
			denied++
		}
	}
	if denied != denied401 {
		t.Errorf("%d 401 answers but %d denied audit entries", denied401, denied)
	}
	logs := map[string]string{"audit log": mustRead(t, d.StateDir+"/audit.log"), "daemon log": d.Log(), "daemon stdout": d.Stdout()}
	for name, text := range logs {
		for _, s := range []string{tok, secret, base64.StdEncoding.EncodeToString([]byte("admin:" + tok))} {
			if strings.Contains(text, s) {
				t.Errorf("%s contains a token (%q…)", name, s[:6])
			}
		}
	}
	t.Logf("%d refusals (%d reached the hive as 401, each audited), none leaked a token", refused, denied401)
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
