package e2e

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// TestRequestValidation: bodies with unknown fields, wrong types or over
// 1 MiB are refused with the error envelope; correlation ids are echoed
// when valid and made up otherwise.
func TestRequestValidation(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{})
	cases := []struct {
		name, body string
		status     int
		code       string
	}{
		{"unknown field", `{"model_ref":"hf:a/b","backend":"cpu","colour":"blue"}`, 400, "INVALID_REQUEST"},
		{"wrong type", `{"model_ref":42,"backend":"cpu"}`, 400, "INVALID_REQUEST"},
		{"not JSON", `{"model_ref":`, 400, "INVALID_REQUEST"},
		{"missing backend", `{"model_ref":"hf:a/b"}`, 400, "INVALID_REQUEST"},
		{"over 1 MiB", `{"model_ref":"` + strings.Repeat("a", 1<<20+10) + `","backend":"cpu"}`, 413, "PAYLOAD_TOO_LARGE"},
	}
	for _, c := range cases {
		r := d.Request("POST", "/v1/workers/spawn", c.body)
		var env envelope
		if r.Status != c.status || json.Unmarshal(r.Body, &env) != nil || env.Error.Code != c.code {
			t.Errorf("%s: %d %.200s, want %d %s", c.name, r.Status, r.Body, c.status, c.code)
		}
	}
	r := d.Request("POST", "/v1/workers/spawn", `{"model_ref":"hf:a/b","backend":"tpu"}`)
	var env envelope
	r.JSON(t, &env)
	if r.Status != 400 || env.Error.Details["field"] != "backend" {
		t.Errorf("bad backend: %d %s, want 400 naming details.field backend", r.Status, r.Body)
	}

	req := func(id string) string {
		resp := d.RequestHeaders("GET", "/v1/status", map[string]string{"X-Correlation-ID": id})
		return resp.Header.Get("X-Correlation-ID")
	}
	if got := req("e2e-trace.42"); got != "e2e-trace.42" {
		t.Errorf("valid correlation id answered with %q", got)
	}
	if got := req("bad id with spaces"); got == "" || got == "bad id with spaces" {
		t.Errorf("invalid correlation id answered with %q, want a new one", got)
	}
	if ws := e.WorkerProcs(); len(ws) != 0 {
		t.Errorf("refused requests started processes: %+v", ws)
	}
}

// TestDrainRefusesWork: while the hive drains (a worker is slow to stop),
// health says shutting_down with 503 and mutating requests get 503
// SHUTTING_DOWN; then it exits 0 with the worker gone.
func TestDrainRefusesWork(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{WorkerCommand: knobCommand(e), Config: map[string]any{"worker": map[string]any{"grace": "1500ms"}}})
	c := d.Client()
	ref := writeModel(t, e, "slow-stop.gguf", 1024)
	writeKnobs(t, ref, "knobs", "RBEE_REF_SHUTDOWN_DELAY=1h")
	w := spawnReady(t, c, client.SpawnRequest{ModelRef: ref})
	if _, err := c.AdminShutdown(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	var health harness.Response
	if !harness.Poll(3*time.Second, 5*time.Millisecond, func() bool {
		health = d.RequestAuth("GET", "/v1/health", "", nil)
		return health.Status == 503
	}) {
		t.Fatalf("health during the drain: %d %s", health.Status, health.Body)
	}
	var h map[string]any
	health.JSON(t, &h)
	if h["status"] != "shutting_down" {
		t.Errorf("health body %s", health.Body)
	}
	r := d.Request("POST", "/v1/workers/spawn", client.SpawnRequest{ModelRef: ref, Backend: "cpu"})
	var env envelope
	if r.Status != 503 || json.Unmarshal(r.Body, &env) != nil || env.Error.Code != "SHUTTING_DOWN" {
		t.Errorf("spawn during the drain: %d %s, want 503 SHUTTING_DOWN", r.Status, r.Body)
	}
	st, err := d.Wait(30 * time.Second)
	if err != nil || !st.Success() {
		t.Fatalf("exit %v %v", st, err)
	}
	waitGone(t, 5*time.Second, w.PID)
	waitNoWorkers(t, e, 5*time.Second)
}

// TestConcurrentSpawns: many spawns at once each get their own process and
// port, all become ready, and one shutdown stops them all.
func TestConcurrentSpawns(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{})
	c := d.Client()
	ref := writeModel(t, e, "m.gguf", 4096)
	const n = 8
	var mu sync.Mutex
	pids, ports := map[int]bool{}, map[int]bool{}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			w, err := c.Spawn(ctxFor(t, time.Minute), client.SpawnRequest{ModelRef: ref, Backend: "cpu", Wait: true})
			if err != nil || w.State != "idle" {
				t.Errorf("spawn: %+v, %v", w, err)
				return
			}
			mu.Lock()
			pids[w.PID], ports[w.Port] = true, true
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(pids) != n || len(ports) != n {
		t.Fatalf("%d distinct pids and %d distinct ports for %d workers", len(pids), len(ports), n)
	}
	if got := len(e.WorkerProcs()); got != n {
		t.Errorf("%d worker processes alive, want %d", got, n)
	}
	if st := d.Stop(30 * time.Second); !st.Success() {
		t.Fatalf("exit %s", st)
	}
	waitNoWorkers(t, e, 5*time.Second)
}

// TestProvisionErrors: what a caller sees when the hub cannot deliver: an
// unknown repo, a gated one without a token, content that never matches its
// hash. Nothing corrupt lands in the cache.
func TestProvisionErrors(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	hub := e.StartHub()
	if _, err := hub.AddRepo("e2e/gated", &hubtest.File{Path: "m.gguf", Content: hubtest.Bytes([]byte("secret weights")), LFS: true}); err != nil {
		t.Fatal(err)
	}
	hub.SetGated("e2e/gated", true)
	if _, err := hub.AddRepo("e2e/corrupt", &hubtest.File{Path: "m.gguf", Content: hubtest.Synthetic(3, 64<<10), LFS: true,
		Faults: hubtest.Faults{Corrupt: true, CorruptAt: 100}}); err != nil {
		t.Fatal(err)
	}
	d := e.StartDaemon(harness.DaemonOptions{Config: map[string]any{"provisioner": map[string]any{"hf_endpoint": hub.URL()}}})
	c := d.Client()
	ctx := ctxFor(t, time.Minute)
	for _, tc := range []struct{ ref, code string }{
		{"hf:e2e/missing/m.gguf", "MODEL_NOT_FOUND"},
		{"hf:e2e/gated/m.gguf", "ACCESS_DENIED"},
		{"hf:e2e/corrupt/m.gguf", "UPSTREAM_ERROR"},
	} {
		_, err := c.Provision(ctx, tc.ref, true)
		if !client.IsCode(err, tc.code) {
			t.Errorf("provision %s: %v, want %s", tc.ref, err, tc.code)
		}
	}
	models, err := c.ListModels(ctx)
	if err != nil || len(models) != 0 {
		t.Errorf("models after failed provisions: %+v, %v", models, err)
	}
	if _, err := c.Spawn(ctx, client.SpawnRequest{ModelRef: "hf:e2e/gated/m.gguf", Backend: "cpu"}); !client.IsCode(err, "ACCESS_DENIED") {
		t.Errorf("spawn of a gated model: %v, want ACCESS_DENIED", err)
	}
}
