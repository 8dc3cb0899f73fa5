package security

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// TestNoSecretInOutput: the admin token, a worker's token (read from the
// worker's own environment) and the hub token appear in no API answer, no
// log, no audit entry and no file of the state directory, after a worker's
// whole life with callbacks, a restart and a stop.
func TestNoSecretInOutput(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	hubToken := "hf_" + strings.Repeat("k", 20)
	d := e.StartDaemon(harness.DaemonOptions{Config: map[string]any{"provisioner": map[string]any{"hf_token": hubToken, "hf_endpoint": "http://127.0.0.1:9"}}})
	model := e.Path("models", "m.gguf")
	os.MkdirAll(filepath.Dir(model), 0o755)
	if err := os.WriteFile(model, make([]byte, 1024), 0o644); err != nil {
		t.Fatal(err)
	}
	c := d.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := c.Spawn(ctx, client.SpawnRequest{ModelRef: "file:" + model, Backend: "cpu", Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	env, err := os.ReadFile("/proc/" + strconv.Itoa(w.PID) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	var workerToken string
	for _, kv := range bytes.Split(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("RBEE_WORKER_TOKEN=")); ok {
			workerToken = string(v)
		}
	}
	if len(workerToken) < 16 {
		t.Fatalf("worker token %q: want a long random one", workerToken)
	}
	// Callbacks with the worker token, a crash and restart, a stop.
	wc := client.New(d.URL, workerToken)
	if _, err := wc.Heartbeat(ctx, client.HeartbeatRequest{WorkerID: w.ID, State: "busy"}); err != nil {
		t.Fatalf("heartbeat with the worker token: %v", err)
	}
	if err := killPID(w.PID); err != nil {
		t.Fatal(err)
	}
	if !harness.Poll(30*time.Second, 20*time.Millisecond, func() bool {
		ws, err := c.ListWorkers(ctx, client.ListWorkersOptions{})
		return err == nil && len(ws) == 1 && ws[0].RestartCount == 1 && ws[0].State == "idle"
	}) {
		t.Fatal("the killed worker was not restarted")
	}

	var seen []byte
	for _, p := range []string{"/v1/workers/list", "/v1/workers/health", "/v1/status", "/v1/metrics", "/v1/models/list", "/v1/models/catalog",
		"/v1/workers/logs?worker_id=" + w.ID, "/v1/openapi.json", "/v1/health"} {
		r := d.Request("GET", p, nil)
		seen = append(seen, r.Body...)
		for _, vs := range r.Header {
			seen = append(seen, strings.Join(vs, " ")...)
		}
	}
	if _, err := c.ShutdownWorker(ctx, client.ShutdownRequest{WorkerID: w.ID}); err != nil {
		t.Fatal(err)
	}
	seen = append(seen, d.Log()...)
	seen = append(seen, d.Stdout()...)
	filepath.Walk(d.StateDir, func(path string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			b, _ := os.ReadFile(path)
			for name, secret := range map[string]string{"admin token": d.Token, "worker token": workerToken, "hub token": hubToken} {
				if bytes.Contains(b, []byte(secret)) {
					t.Errorf("%s holds the %s", path, name)
				}
			}
		}
		return nil
	})
	for name, secret := range map[string]string{"admin token": d.Token, "worker token": workerToken, "hub token": hubToken} {
		if bytes.Contains(seen, []byte(secret)) {
			t.Errorf("the %s appears in an API answer or the daemon's log", name)
		}
	}
}

func killPID(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
