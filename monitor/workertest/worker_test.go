package workertest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv("RBEE_REFWORKER_MAIN") == "1" {
		Main()
		return
	}
	os.Exit(m.Run())
}

// TestProtocol runs the worker as a process: it calls back with its token
// and address, serves its endpoints, and exits 0 after POST /v1/shutdown.
func TestProtocol(t *testing.T) {
	type report struct {
		auth string
		body map[string]any
	}
	got := make(chan report, 1)
	hive := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		got <- report{r.Header.Get("Authorization"), body}
	}))
	defer hive.Close()

	cmd := exec.Command(os.Args[0], "--worker-id", "worker-1", "--model", "/m.gguf", "--model-ref", "file:/m.gguf",
		"--backend", "cuda", "--device", "2", "--port", "0", "--callback-url", hive.URL+"/v1/workers/ready")
	cmd.Env = append(os.Environ(), "RBEE_REFWORKER_MAIN=1", "GORACE=atexit_sleep_ms=0", "RBEE_WORKER_TOKEN=secret", EnvVRAMBytes+"=42", EnvBusy+"=1")
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
	}()

	var rep report
	select {
	case rep = <-got:
	case err := <-done:
		t.Fatalf("worker exited before its callback: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no ready callback")
	}
	if rep.auth != "Bearer secret" || rep.body["worker_id"] != "worker-1" || rep.body["model_ref"] != "file:/m.gguf" ||
		rep.body["backend"] != "cuda" || rep.body["device"] != float64(2) || rep.body["vram_bytes"] != float64(42) {
		t.Fatalf("callback: %+v", rep)
	}
	url, _ := rep.body["url"].(string)
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("url %q", url)
	}
	call := func(method, path string) string {
		req, _ := http.NewRequest(method, url+path, strings.NewReader(`{"messages":[]}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return string(b)
	}
	if b := call("GET", "/health"); !strings.Contains(b, `"state":"busy"`) || !strings.Contains(b, `"vram_bytes":42`) {
		t.Fatalf("health: %s", b)
	}
	if b := call("GET", "/v1/models"); !strings.Contains(b, "file:/m.gguf") {
		t.Fatalf("models: %s", b)
	}
	if b := call("POST", "/v1/chat/completions"); !strings.Contains(b, "chat.completion") {
		t.Fatalf("chat: %s", b)
	}
	call("POST", "/v1/shutdown")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after shutdown")
	}
	if !strings.HasPrefix(out.String(), "rbee-ref start ") || !strings.Contains(out.String(), "rbee-ref exit ") {
		t.Fatalf("stdout: %q", out.String())
	}
}

func TestCrashAtStartExitCode(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "RBEE_REFWORKER_MAIN=1", "GORACE=atexit_sleep_ms=0", EnvCrashAtStart+"=1", EnvExitCode+"=9")
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 9 {
		t.Fatalf("exit: %v", err)
	}
}
