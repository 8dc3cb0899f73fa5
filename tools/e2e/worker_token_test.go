package e2e

import (
	"bytes"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// workerToken reads the RBEE_WORKER_TOKEN the hive gave a worker process.
func workerToken(t *testing.T, pid int) string {
	t.Helper()
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range bytes.Split(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("RBEE_WORKER_TOKEN=")); ok && len(v) > 0 {
			return string(v)
		}
	}
	t.Fatalf("worker %d has no RBEE_WORKER_TOKEN", pid)
	return ""
}

// TestWorkerTokens: a worker's token (from its environment) authenticates
// its own callbacks only: heartbeats for itself change its state, a
// heartbeat in another worker's name and any admin route are refused.
func TestWorkerTokens(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	// No probe in the test's time: its body ("idle") would race the busy
	// heartbeat.
	d := e.StartDaemon(harness.DaemonOptions{Config: map[string]any{"health": map[string]any{"interval": "1h"}}})
	c := d.Client()
	ref := writeModel(t, e, "m.gguf", 1024)
	a := spawnReady(t, c, client.SpawnRequest{ModelRef: ref})
	b := spawnReady(t, c, client.SpawnRequest{ModelRef: ref})
	tokA := workerToken(t, a.PID)
	if tokA == d.Token || tokA == workerToken(t, b.PID) {
		t.Fatal("worker tokens are not per worker")
	}
	ctx := ctxFor(t, 30*time.Second)
	asA := client.New(d.URL, tokA)

	if _, err := asA.Heartbeat(ctx, client.HeartbeatRequest{WorkerID: a.ID, State: "busy"}); err != nil {
		t.Fatalf("own heartbeat: %v", err)
	}
	if busy, err := c.ListWorkers(ctx, client.ListWorkersOptions{State: "busy"}); err != nil || len(busy) != 1 || busy[0].ID != a.ID || busy[0].LastHeartbeat == nil {
		t.Fatalf("after a busy heartbeat: %+v, %v", busy, err)
	}
	if _, err := asA.Heartbeat(ctx, client.HeartbeatRequest{WorkerID: a.ID, State: "idle"}); err != nil {
		t.Fatalf("own heartbeat: %v", err)
	}
	if _, err := asA.Heartbeat(ctx, client.HeartbeatRequest{WorkerID: b.ID, State: "busy"}); !client.IsCode(err, "INVALID_API_KEY") {
		t.Errorf("heartbeat in another worker's name: %v, want INVALID_API_KEY", err)
	}
	if _, err := asA.Ready(ctx, client.ReadyRequest{WorkerID: b.ID, URL: b.URL, ModelRef: ref, Backend: "cpu"}); !client.IsCode(err, "INVALID_API_KEY") {
		t.Errorf("ready in another worker's name: %v, want INVALID_API_KEY", err)
	}
	if _, err := asA.ListWorkers(ctx, client.ListWorkersOptions{}); !client.IsCode(err, "INVALID_API_KEY") {
		t.Errorf("admin route with a worker token: %v, want INVALID_API_KEY", err)
	}
	if _, err := asA.ShutdownWorker(ctx, client.ShutdownRequest{WorkerID: b.ID}); !client.IsCode(err, "INVALID_API_KEY") {
		t.Errorf("shutdown with a worker token: %v, want INVALID_API_KEY", err)
	}
	if _, err := asA.AdminShutdown(ctx); !client.IsCode(err, "INVALID_API_KEY") {
		t.Errorf("admin shutdown with a worker token: %v, want INVALID_API_KEY", err)
	}
	ws, err := c.ListWorkers(ctx, client.ListWorkersOptions{State: "idle"})
	if err != nil || len(ws) != 2 {
		t.Errorf("both workers idle and alive: %+v, %v", ws, err)
	}
	if _, err := c.Heartbeat(ctx, client.HeartbeatRequest{WorkerID: "worker-00000000-0000-0000-0000-000000000000"}); !client.IsCode(err, "WORKER_NOT_FOUND") {
		t.Errorf("admin heartbeat for an unknown worker: %v, want WORKER_NOT_FOUND", err)
	}
}
