package security

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// rawExact sends a request whose every header the caller writes (Host
// included) and returns the status and body.
func rawExact(t *testing.T, d *harness.Daemon, method, path string, headers []string, body string) (int, string) {
	t.Helper()
	c := dial(t, d)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nConnection: close\r\n", method, path)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	io.WriteString(c, b.String())
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(rb)
}

// TestBrowserAttacksWithoutToken: a hive without a token (allowed on
// loopback only) must not obey a web page. A page on another site can make
// the browser POST to http://127.0.0.1:<port> without a preflight (a
// "simple" request: no body, or text/plain), and DNS rebinding lets it read
// answers under its own host name. The hive refuses any request whose
// Origin is not a loopback origin and any whose Host is not a loopback
// name, with 403 and an audit entry; command-line clients (no Origin, Host
// 127.0.0.1 or localhost) are served as before.
func TestBrowserAttacksWithoutToken(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{NoToken: true})
	local := fmt.Sprintf("Host: 127.0.0.1:%d", d.Port)
	for _, c := range []struct {
		name, method, path string
		headers            []string
		body               string
	}{
		{"cross-site shutdown", "POST", "/v1/admin/shutdown", []string{local, "Origin: http://evil.example"}, ""},
		{"cross-site text/plain provision", "POST", "/v1/models/provision", []string{local, "Origin: https://evil.example", "Content-Type: text/plain"}, `{"model_ref":"hf:a/b"}`},
		{"cross-site spawn", "POST", "/v1/workers/spawn", []string{local, "Origin: http://evil.example:8080", "Content-Type: text/plain"}, `{"model_ref":"tiny","backend":"cpu"}`},
		{"sandboxed origin", "POST", "/v1/admin/shutdown", []string{local, "Origin: null"}, ""},
		{"DNS rebinding read", "GET", "/v1/status", []string{fmt.Sprintf("Host: evil.example:%d", d.Port)}, ""},
		{"DNS rebinding shutdown", "POST", "/v1/admin/shutdown", []string{fmt.Sprintf("Host: rebind.evil.example:%d", d.Port), fmt.Sprintf("Origin: http://rebind.evil.example:%d", d.Port)}, ""},
	} {
		status, body := rawExact(t, d, c.method, c.path, c.headers, c.body)
		if status != 403 || errorCode([]byte(body)) != "FORBIDDEN" {
			t.Errorf("%s: %d %s, want 403 FORBIDDEN", c.name, status, body)
		}
	}
	if r := d.Request("GET", "/v1/health", nil); r.Status != 200 {
		t.Fatalf("the hive is %d after the attacks: %s", r.Status, r.Body)
	}
	// What a local client sends is served.
	for _, h := range [][]string{
		{local},
		{fmt.Sprintf("Host: localhost:%d", d.Port)},
		{local, fmt.Sprintf("Origin: http://127.0.0.1:%d", d.Port)},
		{fmt.Sprintf("Host: [::1]:%d", d.Port)},
	} {
		if status, body := rawExact(t, d, "GET", "/v1/status", h, ""); status != 200 {
			t.Errorf("GET /v1/status with %q: %d %s", h, status, body)
		}
	}
	denied := 0
	for _, a := range auditEntries(t, d) {
		if a["outcome"] == "denied" {
			denied++
		}
	}
	if denied < 6 {
		t.Errorf("%d denied audit entries, want one per refused browser request", denied)
	}
}
