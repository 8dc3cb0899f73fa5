package httpserver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rbee-hive/rbee-hive/httpmiddleware"
	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/monitor"
	"github.com/rbee-hive/rbee-hive/monitor/workertest"
	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
	"github.com/rbee-hive/rbee-hive/restart"
)

// The test binary is also the reference worker: the monitor re-executes it
// with RBEE_REFWORKER_MAIN=1 (the monitor's own tests do the same).
func TestMain(m *testing.M) {
	if os.Getenv("RBEE_REFWORKER_MAIN") == "1" {
		workertest.Main()
		return
	}
	goleak.VerifyTestMain(m)
}

// stack is a whole hive behind the server: real registry, resources
// (CPU only), provisioner (a local model dir and a hubtest hub), monitor
// spawning reference workers, all over loopback HTTP.
type stack struct {
	*harness
	prov     *provisioner.Provisioner
	mon      *monitor.Monitor
	hub      *hubtest.Server
	modelRef string // file: ref of a small local model
	admin    *client.Client
}

type stackOpts struct {
	env     []string // reference worker knobs
	catalog []provisioner.CatalogEntry
	// lifecycle, when set, builds the server's Lifecycle over the monitor.
	lifecycle func(*monitor.Monitor) Lifecycle
}

func newStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	st := &stack{}
	modelDir := t.TempDir()
	modelPath := filepath.Join(modelDir, "tiny.gguf")
	if err := os.WriteFile(modelPath, bytes.Repeat([]byte("m"), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	st.modelRef = "file:" + modelPath
	hub, err := hubtest.New(hubtest.Options{Token: "hub-secret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close() })
	st.hub = hub
	catalog := append([]provisioner.CatalogEntry{
		{Name: "tiny", ModelRef: st.modelRef, Description: "a tiny local model"},
		{Name: "huge", ModelRef: "hf:acme/huge/huge.gguf", VRAMBytes: 1 << 50},
	}, o.catalog...)
	st.prov, err = provisioner.New(provisioner.Config{
		CacheDir:     t.TempDir(),
		Endpoint:     hub.URL(),
		Token:        "-", // never the developer's own HF token
		LocalDirs:    []string{modelDir},
		Catalog:      catalog,
		RetryInitial: time.Millisecond,
		MaxAttempts:  2,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.prov.Close() })

	// The hive's address must be known before the monitor (callback URL).
	srv := httptest.NewUnstartedServer(nil)
	t.Cleanup(srv.Close)
	hiveURL := "http://" + srv.Listener.Addr().String()

	st.harness = newHarness(t, func(c *Config) {
		mon, res := startTestMonitor(t, c.Registry, st.prov, hiveURL, func(mc *monitor.Config) {
			mc.Env = append(mc.Env, o.env...)
			mc.Grace, mc.TermTimeout = 2*time.Second, 2*time.Second
			mc.DefaultPolicy = restart.OnFailure
			mc.Restart.MaxRestarts = 100
		})
		c.Resources = res
		st.mon = mon
		c.Monitor = mon
		if o.lifecycle != nil {
			c.Lifecycle = o.lifecycle(mon)
		}
		c.Provisioner = st.prov
	})
	// Serve on the address the workers were told.
	srv.Config.Handler = st.server.Handler()
	srv.Start()
	st.harness.srv.Close()
	st.harness.srv = srv
	st.admin = client.New(srv.URL, testToken)
	return st
}

// workerEnv reads key from a live worker's environment (what the hive
// gave it: RBEE_WORKER_TOKEN, RBEE_CORRELATION_ID, ...).
func workerEnv(t *testing.T, pid int, key string) string {
	t.Helper()
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(env), "\x00") {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	t.Fatalf("the worker has no %s", key)
	return ""
}

func apiCode(err error) string {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// A worker's whole life through the API and the typed client: spawn and
// wait (the worker's ready callback authenticates with its own token),
// list, health, logs, heartbeats, model in use, stop.
func TestWorkerLifecycleOverHTTP(t *testing.T) {
	st := newStack(t, stackOpts{env: []string{"RBEE_REF_PRINT_LINES=3", "RBEE_REF_VRAM_BYTES=4096"}})
	ctx := client.WithCorrelationID(t.Context(), "queen-spawn-1")

	w, err := st.admin.Spawn(ctx, client.SpawnRequest{ModelRef: "tiny", Backend: "cpu", Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	if w.State != registry.StateIdle || w.ModelRef != st.modelRef || w.ReadyAt == nil || !workerIDPattern.MatchString(w.ID) {
		t.Fatalf("spawned with wait: %+v", w)
	}
	workers, err := st.admin.ListWorkers(t.Context(), client.ListWorkersOptions{State: "idle", ModelRef: "tiny"})
	if err != nil || len(workers) != 1 || workers[0].ID != w.ID {
		t.Fatalf("list by catalog name: %v %+v", err, workers)
	}
	health, err := st.admin.WorkersHealth(t.Context(), w.ID)
	if err != nil || len(health) != 1 || health[0].WorkerID != w.ID || health[0].State != "idle" {
		t.Fatalf("health: %v %+v", err, health)
	}
	logs, err := st.admin.WorkerLogs(t.Context(), w.ID, 2)
	if err != nil || strings.Count(string(logs), "\n") != 2 {
		t.Fatalf("logs tail 2: %v %q", err, logs)
	}
	if logs, _ = st.admin.WorkerLogs(t.Context(), w.ID, 0); !strings.Contains(string(logs), "rbee-ref line 3") {
		t.Fatalf("logs: %q", logs)
	}

	// Heartbeats: the worker's own token works for it and no other id;
	// the admin token works too.
	if cid := workerEnv(t, w.PID, "RBEE_CORRELATION_ID"); cid != "queen-spawn-1" {
		t.Fatalf("the spawn's correlation id did not reach the worker: %q", cid)
	}
	tok := workerEnv(t, w.PID, "RBEE_WORKER_TOKEN")
	wc := client.New(st.admin.BaseURL(), tok)
	vram := int64(777)
	hb, err := wc.Heartbeat(t.Context(), client.HeartbeatRequest{WorkerID: w.ID, State: "busy", VRAMBytes: &vram})
	if err != nil || hb.State != registry.StateBusy || hb.VRAMBytes != 777 || hb.LastHeartbeat == nil {
		t.Fatalf("heartbeat with the worker token: %v %+v", err, hb)
	}
	other := "worker-00000000-0000-4000-8000-000000000000"
	if _, err := wc.Heartbeat(t.Context(), client.HeartbeatRequest{WorkerID: other}); apiCode(err) != httpmiddleware.CodeInvalidAPIKey {
		t.Fatalf("worker token for another id: %v", err)
	}
	if _, err := wc.Status(t.Context()); apiCode(err) != httpmiddleware.CodeInvalidAPIKey {
		t.Fatalf("worker token off the callbacks: %v", err)
	}
	if _, err := st.admin.Heartbeat(t.Context(), client.HeartbeatRequest{WorkerID: w.ID, State: "idle"}); err != nil {
		t.Fatalf("heartbeat with the admin token: %v", err)
	}
	if _, err := st.admin.Heartbeat(t.Context(), client.HeartbeatRequest{WorkerID: other}); apiCode(err) != CodeWorkerNotFound {
		t.Fatalf("heartbeat of an unknown worker: %v", err)
	}
	// A second ready callback for a ready worker is a state conflict.
	if _, err := wc.Ready(t.Context(), client.ReadyRequest{WorkerID: w.ID, URL: w.URL, ModelRef: w.ModelRef, Backend: "cpu"}); apiCode(err) != CodeInvalidState {
		t.Fatalf("second ready: %v", err)
	}

	// The model is in use: listed with its user, not evictable.
	models, err := st.admin.ListModels(t.Context())
	if err != nil || len(models) != 1 || models[0].ModelRef != st.modelRef || len(models[0].InUseBy) != 1 || models[0].InUseBy[0] != w.ID {
		t.Fatalf("models: %v %+v", err, models)
	}
	if _, err := st.admin.Evict(t.Context(), st.modelRef); apiCode(err) != CodeModelInUse || !strings.Contains(err.Error(), w.ID) {
		t.Fatalf("evict in use: %v (want the code and the worker named)", err)
	}
	status, err := st.admin.Status(t.Context())
	if err != nil || status.Workers["idle"] != 1 || len(status.Devices) != 1 || status.Devices[0].ReservedBytes == 0 || status.Cache.Dir == "" {
		t.Fatalf("status: %v %+v", err, status)
	}

	out, err := st.admin.ShutdownWorker(t.Context(), client.ShutdownRequest{WorkerID: w.ID, TimeoutS: 5})
	if err != nil || out.WorkerID != w.ID || out.Outcome != "graceful" {
		t.Fatalf("shutdown: %v %+v", err, out)
	}
	if _, err := st.admin.ShutdownWorker(t.Context(), client.ShutdownRequest{WorkerID: w.ID}); apiCode(err) != CodeWorkerNotFound {
		t.Fatalf("second shutdown: %v", err)
	}
	if _, err := st.admin.WorkerLogs(t.Context(), w.ID, 10); apiCode(err) != CodeWorkerNotFound {
		t.Fatalf("logs of a removed worker: %v", err)
	}
	if workers, _ := st.admin.ListWorkers(t.Context(), client.ListWorkersOptions{}); len(workers) != 0 {
		t.Fatalf("workers left: %+v", workers)
	}

	// The spawn was audited with the queen's correlation id; the worker's
	// callbacks with its principal; no token anywhere.
	audit := st.audit.String()
	for _, want := range []string{`"correlation_id":"queen-spawn-1"`, `"route":"/v1/workers/spawn"`, `"principal":"worker"`, `"route":"/v1/workers/ready"`} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit lacks %s", want)
		}
	}
	if strings.Contains(audit, tok) || strings.Contains(audit, testToken) {
		t.Fatal("a token reached the audit log")
	}
}

// Spawn errors, each from the module that decides it, mapped once.
func TestSpawnErrorsOverHTTP(t *testing.T) {
	st := newStack(t, stackOpts{})
	dev := 3
	cases := []struct {
		name   string
		req    client.SpawnRequest
		status int
		code   string
		field  string
	}{
		{"unknown backend", client.SpawnRequest{ModelRef: "tiny", Backend: "tpu"}, 400, CodeInvalidRequest, "backend"},
		{"cuda unavailable", client.SpawnRequest{ModelRef: "tiny", Backend: "cuda"}, 503, CodeBackendUnavailable, ""},
		{"bad restart policy", client.SpawnRequest{ModelRef: "tiny", Backend: "cpu", RestartPolicy: "sometimes"}, 400, CodeInvalidRequest, "restart_policy"},
		{"unknown device", client.SpawnRequest{ModelRef: "tiny", Backend: "cpu", Device: &dev}, 400, CodeInvalidRequest, "device"},
		{"ref outside local dirs", client.SpawnRequest{ModelRef: "file:/etc/passwd", Backend: "cpu"}, 400, CodeInvalidRequest, "model_ref"},
		{"traversal ref", client.SpawnRequest{ModelRef: "hf:acme/../x", Backend: "cpu"}, 400, CodeInvalidRequest, "model_ref"},
		{"missing model", client.SpawnRequest{ModelRef: "hf:acme/nothing/x.gguf", Backend: "cpu"}, 404, CodeModelNotFound, ""},
		{"no memory", client.SpawnRequest{ModelRef: "huge", Backend: "cpu"}, 503, CodeInsufficientResources, ""},
	}
	if _, err := st.hub.AddRepo("acme/huge", &hubtest.File{Path: "huge.gguf", Content: hubtest.Bytes([]byte("tiny but the catalog says huge"))}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := st.admin.Spawn(t.Context(), tc.req)
			var ae *client.APIError
			if !errors.As(err, &ae) || ae.Status != tc.status || ae.Code != tc.code {
				t.Fatalf("got %v, want %d %s", err, tc.status, tc.code)
			}
			if tc.field != "" && ae.Details["field"] != tc.field {
				t.Fatalf("details %v, want field %s", ae.Details, tc.field)
			}
			if tc.code == CodeInsufficientResources {
				for _, k := range []string{"device", "required_bytes", "available_bytes"} {
					if _, ok := ae.Details[k]; !ok {
						t.Fatalf("details lack %s: %v", k, ae.Details)
					}
				}
			}
		})
	}
	if n := len(st.reg.List(registry.Filter{})); n != 0 {
		t.Fatalf("failed spawns left %d records", n)
	}
}

// A worker that dies at start with restart policy never: spawn with wait
// answers 500 SPAWN_FAILED naming the worker.
func TestSpawnWaitFailure(t *testing.T) {
	st := newStack(t, stackOpts{env: []string{"RBEE_REF_CRASH_AT_START=1", "RBEE_REF_EXIT_CODE=3"}})
	_, err := st.admin.Spawn(t.Context(), client.SpawnRequest{ModelRef: "tiny", Backend: "cpu", RestartPolicy: "never", Wait: true})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != 500 || ae.Code != CodeSpawnFailed || ae.Details["worker_id"] == nil {
		t.Fatalf("spawn of a crashing worker: %v", err)
	}
	id, _ := ae.Details["worker_id"].(string)
	if workers, _ := st.admin.ListWorkers(t.Context(), client.ListWorkersOptions{}); len(workers) == 1 && workers[0].ID == id {
		if _, err := st.admin.ShutdownWorker(t.Context(), client.ShutdownRequest{WorkerID: id}); err != nil {
			t.Fatalf("shutting down the failed worker: %v", err)
		}
	}
}

// Provisioning from the hub: 202 with an id, status, the SSE progress
// stream ending in done, then cached (200); errors mapped.
func TestProvisionOverHTTP(t *testing.T) {
	st := newStack(t, stackOpts{catalog: []provisioner.CatalogEntry{{Name: "small", ModelRef: "hf:acme/small/small.gguf", VRAMBytes: 1 << 20}}})
	if _, err := st.hub.AddRepo("acme/small", &hubtest.File{Path: "small.gguf", Content: hubtest.Synthetic(7, 3<<20), LFS: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.hub.AddRepo("acme/gated", &hubtest.File{Path: "g.gguf", Content: hubtest.Bytes([]byte("secret weights"))}); err != nil {
		t.Fatal(err)
	}
	st.hub.SetGated("acme/gated", true)
	// Slow the download down enough to watch it.
	st.hub.SetFaults("acme/small", "small.gguf", hubtest.Faults{CutAfter: 1 << 20, CutTimes: 1, Stall: 50 * time.Millisecond})
	ref := "hf:acme/small/small.gguf"

	res, err := st.admin.Provision(t.Context(), ref, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted == nil || !strings.HasPrefix(res.Accepted.ProvisionID, "prov-") || res.Accepted.ModelRef != ref {
		t.Fatalf("provision: %+v %+v", res.Accepted, res.Model)
	}
	id := res.Accepted.ProvisionID
	// The same ref (here through its catalog name) in flight joins it.
	again, err := st.admin.Provision(t.Context(), "small", false)
	if err != nil || (again.Accepted != nil && again.Accepted.ProvisionID != id) {
		t.Fatalf("second provision of the same ref: %v %+v", err, again.Accepted)
	}
	stream, err := st.admin.ProvisionEvents(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var progress int
	var final client.ProvisionEvent
	for {
		ev, err := stream.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == "progress" {
			progress++
			if ev.Status.ProvisionID != id {
				t.Fatalf("progress of %s", ev.Status.ProvisionID)
			}
			continue
		}
		final = ev
	}
	if progress == 0 || final.Type != "done" || final.Model == nil || final.Model.ModelRef != ref || final.Model.SizeBytes != 3<<20 {
		t.Fatalf("events: %d progress, final %+v", progress, final)
	}
	ps, err := st.admin.ProvisionStatus(t.Context(), id)
	if err != nil || ps.State != "ready" || ps.BytesDone != 3<<20 {
		t.Fatalf("status: %v %+v", err, ps)
	}
	res, err = st.admin.Provision(t.Context(), "small", false)
	if err != nil || res.Model == nil || res.Model.ModelRef != ref || res.Model.InUseBy == nil {
		t.Fatalf("cached provision: %v %+v", err, res)
	}
	cat, err := st.admin.Catalog(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cached := map[string]bool{}
	for _, e := range cat {
		cached[e.Name] = e.Cached
	}
	if !cached["small"] || cached["huge"] || len(cat) != 3 {
		t.Fatalf("catalog: %+v", cat)
	}
	// wait=true blocks until ready.
	res, err = st.admin.Provision(t.Context(), "tiny", true)
	if err != nil || res.Model == nil || res.Model.ModelRef != st.modelRef {
		t.Fatalf("provision with wait: %v %+v", err, res)
	}

	for _, tc := range []struct {
		ref    string
		status int
		code   string
	}{
		{"hf:acme/gated/g.gguf", 403, CodeAccessDenied},
		{"hf:acme/missing/x.gguf", 404, CodeModelNotFound},
		{"hf:acme/small/nope.gguf", 404, CodeModelNotFound},
		{"nope:x", 400, CodeInvalidRequest},
	} {
		_, err := st.admin.Provision(t.Context(), tc.ref, true)
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != tc.status || ae.Code != tc.code {
			t.Errorf("provision %s: %v, want %d %s", tc.ref, err, tc.status, tc.code)
			continue
		}
		if tc.code == CodeAccessDenied && ae.Details["hint"] != "set HF_TOKEN" {
			t.Errorf("access denied without the hint: %v", ae.Details)
		}
	}
	// A failing provision's event stream ends with the error envelope.
	res, err = st.admin.Provision(t.Context(), "hf:acme/gated/g.gguf", false)
	if err == nil && res.Accepted != nil {
		s2, err := st.admin.ProvisionEvents(t.Context(), res.Accepted.ProvisionID)
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		var last client.ProvisionEvent
		for {
			ev, err := s2.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			last = ev
		}
		if last.Type != "error" || last.Err == nil || last.Err.Code != CodeAccessDenied {
			t.Fatalf("failed provision's last event: %+v", last)
		}
	} else if apiCode(err) != CodeAccessDenied {
		t.Fatalf("gated provision without wait: %v", err)
	}

	if _, err := st.admin.ProvisionStatus(t.Context(), "prov-unknown"); apiCode(err) != CodeProvisionNotFound {
		t.Fatalf("unknown provision: %v", err)
	}
	if _, err := st.admin.ProvisionEvents(t.Context(), "prov-unknown"); apiCode(err) != CodeProvisionNotFound {
		t.Fatalf("unknown provision events: %v", err)
	}

	ev, err := st.admin.Evict(t.Context(), ref)
	if err != nil || ev.FreedBytes != 3<<20 {
		t.Fatalf("evict: %v %+v", err, ev)
	}
	if _, err := st.admin.Evict(t.Context(), ref); apiCode(err) != CodeModelNotCached {
		t.Fatalf("second evict: %v", err)
	}
	a := st.do("DELETE", "/v1/models/evict", `{"model_ref":"`+st.modelRef+`"}`)
	if a.status != 200 {
		t.Fatalf("evict by body: %d %s", a.status, a.body)
	}
	if doc, err := st.admin.OpenAPI(t.Context()); err != nil || !bytes.Equal(doc, OpenAPI()) {
		t.Fatalf("openapi via client: %v", err)
	}
	if _, err := st.admin.Health(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// startTestMonitor starts a monitor over reg and prov whose workers are this
// test binary re-executed as the reference worker (see TestMain), on a cpu
// device; adjust tunes the config. Cleanup stops every worker.
func startTestMonitor(tb testing.TB, reg *registry.Registry, prov *provisioner.Provisioner, hiveURL string,
	adjust func(*monitor.Config)) (*monitor.Monitor, *resources.Manager) {
	tb.Helper()
	res, err := resources.New(resources.Options{DisableCUDA: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { res.Close() })
	base := 20000 + rand.IntN(40000)
	cfg := monitor.Config{
		Command: []string{os.Args[0], "--worker-id", "{worker_id}", "--model", "{model_path}",
			"--model-ref", "{model_ref}", "--backend", "{backend}", "--device", "{device}",
			"--port", "{port}", "--callback-url", "{callback_url}"},
		Env:              []string{"RBEE_REFWORKER_MAIN=1"},
		Readiness:        monitor.ReadinessCallback,
		PortMin:          base,
		PortMax:          base + 99,
		ReadyTimeout:     20 * time.Second,
		LogMaxBytes:      1 << 20,
		LogDir:           tb.TempDir(),
		HealthInterval:   time.Second,
		HealthTimeout:    time.Second,
		FailureThreshold: 3,
		Restart: restart.Config{
			Backoff:     restart.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, Multiplier: 2},
			MaxRestarts: 5, Window: time.Minute, StableAfter: time.Minute,
		},
		HiveURL: hiveURL,
		Logger:  slog.New(slog.DiscardHandler),
	}
	adjust(&cfg)
	mon, err := monitor.New(cfg, reg, res, prov)
	if err != nil {
		tb.Fatal(err)
	}
	if err := mon.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		mon.StopAll(ctx)
		mon.Close()
	})
	return mon, res
}
