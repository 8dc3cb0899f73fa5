package security

import (
	"bytes"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// TestPathTraversal tries to reach files outside provisioner.local_dirs and
// the hive's state through model references (spawn, provision, evict),
// symlinks planted in a local dir, and worker ids (logs, health, shutdown).
// Every attempt is a 4xx with the envelope; no worker starts, the files
// outside are untouched and never served.
func TestPathTraversal(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	models := e.Path("models")
	outside := e.Path("outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(models, 0o755); err != nil {
		t.Fatal(err)
	}
	secretContent := []byte("root:x:0:0:secret outside the model dirs\n")
	secret := filepath.Join(outside, "secret.gguf")
	if err := os.WriteFile(secret, secretContent, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(models, "link.gguf")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(models, "dirlink")); err != nil {
		t.Fatal(err)
	}
	// A hub endpoint on loopback where nothing listens: no reference may
	// get as far as the network, and none may leave the machine.
	d := e.StartDaemon(harness.DaemonOptions{Config: map[string]any{"provisioner": map[string]any{"hf_endpoint": "http://127.0.0.1:9"}}})

	refs := []string{
		"file:" + secret,
		"file:/etc/passwd",
		"file:" + models + "/../outside/secret.gguf",
		"file:" + models + "/./../outside/secret.gguf",
		"file:" + models + "/link.gguf",
		"file:" + models + "/dirlink/secret.gguf",
		"file:" + models + "/%2e%2e/outside/secret.gguf",
		"file:outside/secret.gguf",
		"file:" + models + "/../../../../../../etc/passwd",
		"file:" + models + "/\x00secret.gguf",
		"hf:../../etc/passwd",
		"hf:org/../../etc/passwd",
		"hf:org/repo/../../../../etc/passwd",
		"hf:org/repo/../../secret.gguf@main",
		"hf:org/repo@../../../etc",
		"hf:org/repo@refs/../../x",
		"hf:/etc/passwd",
		"hf:org/repo/%2e%2e/%2e%2e/x",
		"../../etc/passwd",
		"/etc/passwd",
		"tinyllama/../../etc/passwd",
	}
	mutating := 0 // refused POST and DELETE calls, each of which must be audited
	check := func(what string, r harness.Response) {
		t.Helper()
		if strings.HasPrefix(what, "spawn") || strings.HasPrefix(what, "provision") || strings.HasPrefix(what, "evict") ||
			strings.HasPrefix(what, "shutdown") || strings.HasPrefix(what, "heartbeat") || strings.HasPrefix(what, "ready") {
			mutating++
		}
		if r.Status < 400 || r.Status >= 500 {
			t.Errorf("%s: %d %s, want a 4xx", what, r.Status, r.Body)
			return
		}
		if errorCode(r.Body) == "" {
			t.Errorf("%s: %d body %q is not the error envelope", what, r.Status, r.Body)
		}
		if bytes.Contains(r.Body, []byte("root:x:0:0")) || bytes.Contains(r.Body, []byte("secret outside")) {
			t.Errorf("%s: the answer carries the file's content: %s", what, r.Body)
		}
	}
	for _, ref := range refs {
		check("spawn "+ref, d.Request("POST", "/v1/workers/spawn", map[string]any{"model_ref": ref, "backend": "cpu", "wait": true}))
		check("provision "+ref, d.Request("POST", "/v1/models/provision?wait=true", map[string]any{"model_ref": ref}))
		check("evict "+ref, d.Request("DELETE", "/v1/models/evict?model_ref="+url.QueryEscape(ref), nil))
		check("evict body "+ref, d.Request("DELETE", "/v1/models/evict", map[string]any{"model_ref": ref}))
	}
	ids := []string{"../../etc/passwd", "..%2f..%2fetc%2fpasswd", "/etc/passwd", "worker-../../../etc/passwd",
		"worker-00000000-0000-0000-0000-000000000000/../../audit", "../audit.log", "..", ".", "worker-\x00", strings.Repeat("a", 4096)}
	for _, id := range ids {
		q := url.QueryEscape(id)
		check("logs "+id, d.Request("GET", "/v1/workers/logs?worker_id="+q+"&tail=100", nil))
		check("health "+id, d.Request("GET", "/v1/workers/health?worker_id="+q, nil))
		check("shutdown "+id, d.Request("POST", "/v1/workers/shutdown", map[string]any{"worker_id": id}))
		check("heartbeat "+id, d.Request("POST", "/v1/heartbeat", map[string]any{"worker_id": id}))
		check("ready "+id, d.Request("POST", "/v1/workers/ready", map[string]any{"worker_id": id, "url": "http://127.0.0.1:1", "model_ref": "x", "backend": "cpu", "device": 0}))
	}
	// Raw paths that a client library would clean up.
	for _, p := range []string{"/v1/../v1/status", "/v1/workers/../../etc/passwd", "/v1/models/provision/..%2f..%2fetc%2fpasswd", "/v1/models/provision/../../../etc/passwd/events"} {
		r := rawDo(t, d, "GET", p, []string{"Authorization: Bearer " + d.Token}, "")
		if r.Status >= 500 || bytes.Contains(r.Body, []byte("root:x:0:0")) {
			t.Errorf("GET %s: %d %s", p, r.Status, r.Body)
		}
	}

	audited := 0
	for _, a := range auditEntries(t, d) {
		status, _ := a["status"].(float64)
		if (a["method"] == "POST" || a["method"] == "DELETE") && status >= 400 && status < 500 {
			audited++
		}
	}
	if audited < mutating {
		t.Errorf("%d refused mutating calls, %d audited with their status", mutating, audited)
	}

	if b, err := os.ReadFile(secret); err != nil || !bytes.Equal(b, secretContent) {
		t.Fatalf("the file outside the model dirs was changed or removed: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(models, "link.gguf")); err != nil {
		t.Errorf("the planted symlink was removed: %v", err)
	}
	if p := e.WorkerProcs(); len(p) != 0 {
		t.Errorf("refused spawns started processes: %+v", p)
	}
	var list struct {
		Models []map[string]any `json:"models"`
	}
	d.Request("GET", "/v1/models/list", nil).JSON(t, &list)
	if len(list.Models) != 0 {
		t.Errorf("refused references were cached: %v", list.Models)
	}
}
