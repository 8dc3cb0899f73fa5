package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// TestSpawnListLogsShutdown drives the worker lifecycle as queen-rbee does:
// a model from the hub (hubserver binary, HF_ENDPOINT in the config) and one
// from a local directory, spawn → ready → list → health → logs → shutdown,
// and checks the processes behind the records.
func TestSpawnListLogsShutdown(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	repo := e.Path("repos", "e2e", "tiny")
	if err := os.MkdirAll(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "model.gguf"), []byte(strings.Repeat("rbee", 64<<10)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := e.StartDaemon(harness.DaemonOptions{
		Config: map[string]any{"provisioner": map[string]any{"hf_endpoint": hubFromDir(t, e, e.Path("repos"))}},
		Env:    []string{"RBEE_REF_PRINT_LINES=3"},
	})
	c := d.Client()
	ctx := ctxFor(t, 2*time.Minute)

	// Spawn without wait: 202 and a loading record at once.
	hfRef := "hf:e2e/tiny/model.gguf"
	w1, err := c.Spawn(ctx, client.SpawnRequest{ModelRef: hfRef, Backend: "cpu"})
	if err != nil {
		t.Fatalf("spawn %s: %v", hfRef, err)
	}
	if !strings.HasPrefix(w1.ID, "worker-") || w1.State != "loading" || w1.ModelRef != hfRef {
		t.Fatalf("spawn answer %+v, want a loading worker-<uuid> for %s", w1, hfRef)
	}
	w1 = waitWorker(t, c, w1.ID, time.Minute, "idle", func(w client.Worker) bool { return w.State == "idle" })
	p1, ok := harness.ReadProc(w1.PID)
	if !ok || !strings.Contains(p1.Cmdline, w1.ID) || !strings.Contains(p1.Cmdline, "--port") {
		t.Fatalf("worker pid %d: process %+v, want the reference worker for %s", w1.PID, p1, w1.ID)
	}
	if p1.PGID != w1.PID {
		t.Errorf("worker %d runs in process group %d, want its own", w1.PID, p1.PGID)
	}
	if w1.URL == "" || w1.Port == 0 || w1.ReadyAt == nil {
		t.Errorf("ready record lacks url, port or ready_at: %+v", w1)
	}

	// A model from a local directory, spawned with wait.
	fileRef := writeModel(t, e, "local.gguf", 1<<20)
	w2 := spawnReady(t, c, client.SpawnRequest{ModelRef: fileRef, RestartPolicy: "never"})

	all, err := c.ListWorkers(ctx, client.ListWorkersOptions{})
	if err != nil || len(all) != 2 {
		t.Fatalf("list: %d workers, %v; want 2", len(all), err)
	}
	byRef, err := c.ListWorkers(ctx, client.ListWorkersOptions{ModelRef: fileRef})
	if err != nil || len(byRef) != 1 || byRef[0].ID != w2.ID || byRef[0].RestartPolicy != "never" {
		t.Fatalf("list ?model_ref=%s: %+v, %v", fileRef, byRef, err)
	}
	if none, err := c.ListWorkers(ctx, client.ListWorkersOptions{State: "busy"}); err != nil || len(none) != 0 {
		t.Fatalf("list ?state=busy: %+v, %v", none, err)
	}

	hs, err := c.WorkersHealth(ctx, w1.ID)
	if err != nil || len(hs) != 1 || hs[0].WorkerID != w1.ID || hs[0].State != "idle" {
		t.Fatalf("health of %s: %+v, %v", w1.ID, hs, err)
	}
	logs, err := c.WorkerLogs(ctx, w1.ID, 2)
	if err != nil {
		t.Fatalf("logs: %v", err)
	}
	if got := strings.Split(strings.TrimRight(string(logs), "\n"), "\n"); len(got) != 2 || !strings.Contains(string(logs), "rbee-ref line 3") {
		t.Errorf("logs tail=2: %q, want the last two lines ending with line 3", logs)
	}

	models, err := c.ListModels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range models {
		if m.ModelRef == hfRef {
			found = true
			if m.SizeBytes != 256<<10 || len(m.InUseBy) != 1 || m.InUseBy[0] != w1.ID {
				t.Errorf("model %s: %+v, want 256 KiB in use by %s", hfRef, m, w1.ID)
			}
		}
	}
	if !found {
		t.Errorf("models/list lacks %s: %+v", hfRef, models)
	}
	if _, err := c.Evict(ctx, hfRef); !client.IsCode(err, "MODEL_IN_USE") {
		t.Errorf("evict of a model in use: %v, want MODEL_IN_USE", err)
	}

	// Stop both: the reference worker honours POST /v1/shutdown.
	for _, w := range []client.Worker{w1, w2} {
		res, err := c.ShutdownWorker(ctx, client.ShutdownRequest{WorkerID: w.ID})
		if err != nil || res.Outcome != "graceful" || res.WorkerID != w.ID {
			t.Fatalf("shutdown %s: %+v, %v; want graceful", w.ID, res, err)
		}
		waitReaped(t, 10*time.Second, w.PID)
	}
	if ws, err := c.ListWorkers(ctx, client.ListWorkersOptions{}); err != nil || len(ws) != 0 {
		t.Fatalf("list after shutdown: %+v, %v", ws, err)
	}
	if _, err := c.ShutdownWorker(ctx, client.ShutdownRequest{WorkerID: w1.ID}); !client.IsCode(err, "WORKER_NOT_FOUND") {
		t.Errorf("second shutdown: %v, want WORKER_NOT_FOUND", err)
	}
	ev, err := c.Evict(ctx, hfRef)
	if err != nil || ev.FreedBytes < 256<<10 {
		t.Errorf("evict once unused: %+v, %v", ev, err)
	}
	waitNoWorkers(t, e, 10*time.Second)

	m, err := c.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`rbee_hive_requests_total\{code="202",method="POST",route="/v1/workers/spawn"\} 1`,
		`rbee_hive_requests_total\{code="200",method="POST",route="/v1/workers/spawn"\} 1`,
		`rbee_hive_requests_total\{code="409",method="DELETE",route="/v1/models/evict"\} 1`,
		`rbee_hive_worker_ready_seconds_count 2`,
		`rbee_hive_provision_bytes_total 262144`,
		`rbee_hive_workers_total 0`,
	} {
		if !regexp.MustCompile(`(?m)^` + re + `$`).Match(m) {
			t.Errorf("metrics lack %s:\n%s", re, grepLines(string(m), "rbee_hive_"))
		}
	}
	if st := d.Stop(30 * time.Second); !st.Success() {
		t.Fatalf("SIGTERM exit %s", st)
	}
}

// hubFromDir serves the repos under dir (<org>/<name>/files, files of 1 KiB
// and more as LFS) with the hubserver program, as a user would, or in this
// process while that program is not part of the tree; it returns the
// HF_ENDPOINT.
func hubFromDir(t *testing.T, e *harness.Env, dir string) string {
	t.Helper()
	if e.Bins.HubServer != "" {
		return e.StartHubServer("--repos", dir, "--lfs-min", "1KiB").URL
	}
	t.Log("tools/cmd/hubserver not built: serving the repos in-process")
	hub := e.StartHub()
	orgs, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, org := range orgs {
		names, err := os.ReadDir(filepath.Join(dir, org.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if _, err := hub.AddDir(org.Name()+"/"+n.Name(), filepath.Join(dir, org.Name(), n.Name()), 1024); err != nil {
				t.Fatal(err)
			}
		}
	}
	return hub.URL()
}

// TestSpawnErrors checks the error answers of spawn as a caller sees them.
func TestSpawnErrors(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{})
	c := d.Client()
	ctx := ctxFor(t, time.Minute)
	cases := []struct {
		req  client.SpawnRequest
		code string
	}{
		{client.SpawnRequest{ModelRef: "file:/etc/passwd", Backend: "cpu"}, "INVALID_REQUEST"},
		{client.SpawnRequest{ModelRef: "hf:a/../b", Backend: "cpu"}, "INVALID_REQUEST"},
		{client.SpawnRequest{ModelRef: "file:" + e.Path("models", "missing.gguf"), Backend: "cpu"}, "MODEL_NOT_FOUND"},
		{client.SpawnRequest{ModelRef: writeModel(t, e, "m.gguf", 1024), Backend: "tpu"}, "INVALID_REQUEST"},
	}
	for _, c2 := range cases {
		_, err := c.Spawn(ctx, c2.req)
		if !client.IsCode(err, c2.code) {
			t.Errorf("spawn %+v: %v, want %s", c2.req, err, c2.code)
		}
	}
	if ws, err := c.ListWorkers(context.Background(), client.ListWorkersOptions{}); err != nil || len(ws) != 0 {
		t.Fatalf("failed spawns left workers: %+v, %v", ws, err)
	}
	waitNoWorkers(t, e, 5*time.Second)
}
