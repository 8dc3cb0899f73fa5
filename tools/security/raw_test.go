package security

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// rawResponse is what came back for a hand-written request.
type rawResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// rawDo writes one HTTP/1.1 request byte for byte (so headers Go's client
// refuses to send, such as control characters, reach the server) and reads
// the answer. An event stream's body is not read.
func rawDo(t *testing.T, d *harness.Daemon, method, path string, headers []string, body string) rawResponse {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", d.Port), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n", method, path)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n" + body)
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatalf("%s %s: write: %v", method, path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: read response: %v", method, path, err)
	}
	defer resp.Body.Close()
	out := rawResponse{Status: resp.StatusCode, Header: resp.Header}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		out.Body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	}
	return out
}

// envelope is the API's error body.
type envelope struct {
	Error struct {
		Code    string         `json:"code"`
		Message string         `json:"message"`
		Details map[string]any `json:"details"`
	} `json:"error"`
}

// errorCode returns the envelope's code, or "" when the body is not one.
func errorCode(b []byte) string {
	var e envelope
	if json.Unmarshal(b, &e) != nil {
		return ""
	}
	return e.Error.Code
}

// route is one operation of the hive's OpenAPI document.
type route struct {
	Method, Path string
	Public       bool
}

// routes lists the operations the running hive documents, with {id}
// filled in.
func routes(t *testing.T, d *harness.Daemon) []route {
	t.Helper()
	r := d.Request("GET", "/v1/openapi.json", nil)
	if r.Status != 200 {
		t.Fatalf("openapi: %d %s", r.Status, r.Body)
	}
	var doc struct {
		Paths map[string]map[string]struct {
			Security *[]map[string][]string `json:"security"`
		} `json:"paths"`
	}
	r.JSON(t, &doc)
	var out []route
	for path, ops := range doc.Paths {
		for method, op := range ops {
			out = append(out, route{
				Method: strings.ToUpper(method),
				Path:   strings.ReplaceAll(path, "{id}", "prov-does-not-exist"),
				Public: op.Security != nil && len(*op.Security) == 0,
			})
		}
	}
	if len(out) < 18 {
		t.Fatalf("openapi lists %d operations, the API table has 19", len(out))
	}
	return out
}

// auditEntries reads the hive's audit log (JSON lines).
func auditEntries(t *testing.T, d *harness.Daemon) []map[string]any {
	t.Helper()
	b, err := readFile(d.StateDir + "/audit.log")
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}
