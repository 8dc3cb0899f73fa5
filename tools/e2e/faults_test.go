package e2e

import (
	"errors"
	"net"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// TestStopEscalation: a worker that ignores the HTTP shutdown request is
// terminated with SIGTERM after the grace (timeout_s); one that also ignores
// SIGTERM is killed with SIGKILL, together with the child in its process
// group.
func TestStopEscalation(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the SIGTERM to SIGKILL wait is a fixed 5s")
	}
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{WorkerCommand: knobCommand(e)})
	c := d.Client()
	ctx := ctxFor(t, time.Minute)
	polite := writeModel(t, e, "deaf.gguf", 1024)
	writeKnobs(t, polite, "knobs", "RBEE_REF_SHUTDOWN_DELAY=1h")
	stubborn := writeModel(t, e, "stubborn.gguf", 1024)
	writeKnobs(t, stubborn, "knobs", "RBEE_REF_SHUTDOWN_DELAY=1h", "RBEE_REF_IGNORE_SIGTERM=1", "RBEE_REF_SPAWN_CHILD=1")

	wp := spawnReady(t, c, client.SpawnRequest{ModelRef: polite})
	ws := spawnReady(t, c, client.SpawnRequest{ModelRef: stubborn})
	logs, err := c.WorkerLogs(ctx, ws.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`rbee-ref child (\d+)`).FindSubmatch(logs)
	if m == nil {
		t.Fatalf("stubborn worker's log names no child:\n%s", logs)
	}
	child, _ := strconv.Atoi(string(m[1]))
	if p, ok := harness.ReadProc(child); !ok || p.PGID != ws.PID {
		t.Fatalf("child %d: %+v, want it alive in the worker's group %d", child, p, ws.PID)
	}

	for _, c2 := range []struct {
		w    client.Worker
		want string
	}{{wp, "terminated"}, {ws, "killed"}} {
		res, err := c.ShutdownWorker(ctx, client.ShutdownRequest{WorkerID: c2.w.ID, TimeoutS: 0.2})
		if err != nil || res.Outcome != c2.want {
			t.Fatalf("shutdown %s: %+v, %v; want outcome %s", c2.w.ModelRef, res, err, c2.want)
		}
		waitReaped(t, 5*time.Second, c2.w.PID)
	}
	waitGone(t, 5*time.Second, child)
	waitNoWorkers(t, e, 5*time.Second)
}

// TestUnhealthyRestart: a worker whose HTTP server hangs fails its health
// probes, is marked unhealthy, stopped and restarted by policy.
func TestUnhealthyRestart(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{WorkerCommand: knobCommand(e), Config: map[string]any{
		"health": map[string]any{"interval": "100ms", "timeout": "200ms", "failure_threshold": 2},
		"worker": map[string]any{"grace": "200ms"},
	}})
	c := d.Client()
	ref := writeModel(t, e, "hang.gguf", 1024)
	writeKnobs(t, ref, "once", "RBEE_REF_HANG_AFTER=200ms")
	w := spawnReady(t, c, client.SpawnRequest{ModelRef: ref})
	r := waitWorker(t, c, w.ID, 30*time.Second, "restarted after hanging", func(x client.Worker) bool {
		return x.RestartCount >= 1 && x.State == "idle"
	})
	if r.PID == w.PID || r.LastExit == nil || r.LastExit.Reason != "unhealthy" {
		t.Fatalf("after the hang: pid %d (was %d), last_exit %+v; want a new pid and reason unhealthy", r.PID, w.PID, r.LastExit)
	}
	waitReaped(t, 5*time.Second, w.PID)
	m, err := c.Metrics(ctxFor(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`(?m)^rbee_hive_worker_restarts_total\{reason="unhealthy"\} [1-9]`).Find(m) == nil ||
		regexp.MustCompile(`(?m)^rbee_hive_health_check_failures_total [2-9]`).Find(m) == nil {
		t.Errorf("metrics lack the unhealthy restart or the failed probes:\n%s", grepLines(string(m), "rbee_hive_"))
	}
}

// TestPollReadinessAndReadyTimeout: with worker.readiness poll a worker that
// never calls back is seen ready by polling its health path; one that never
// becomes ready is given up after worker.ready_timeout.
func TestPollReadinessAndReadyTimeout(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{WorkerCommand: knobCommand(e), Config: map[string]any{
		"worker": map[string]any{"readiness": "poll", "ready_timeout": "3s"},
	}})
	c := d.Client()
	ctx := ctxFor(t, time.Minute)
	quiet := writeModel(t, e, "quiet.gguf", 1024)
	writeKnobs(t, quiet, "knobs", "RBEE_REF_READINESS=none", "RBEE_REF_LOAD_DELAY=100ms")
	spawnReady(t, c, client.SpawnRequest{ModelRef: quiet})

	slow := writeModel(t, e, "slow.gguf", 1024)
	writeKnobs(t, slow, "knobs", "RBEE_REF_READINESS=none", "RBEE_REF_LOAD_DELAY=1h")
	w, err := c.Spawn(ctx, client.SpawnRequest{ModelRef: slow, Backend: "cpu", RestartPolicy: "never"})
	if err != nil {
		t.Fatal(err)
	}
	f := waitWorker(t, c, w.ID, 20*time.Second, "failed", func(x client.Worker) bool { return x.State == "failed" })
	if !strings.Contains(f.LastError, "ready") {
		t.Errorf("last_error %q, want it to say the worker was not ready", f.LastError)
	}
	if f.PID > 0 {
		waitReaped(t, 10*time.Second, f.PID)
	}
}

// TestInsufficientResources: a model whose catalog vram_bytes fits no GPU
// of the dgxh100 mock is refused with 503 and the numbers, and no process
// is started.
func TestInsufficientResources(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	ref := writeModel(t, e, "huge.gguf", 1024)
	d := e.StartDaemon(harness.DaemonOptions{Config: map[string]any{
		"resources": map[string]any{"nvml_mock": "dgxh100"},
		"catalog":   []any{map[string]any{"name": "huge", "model_ref": ref, "vram_bytes": 200 << 30}},
	}})
	_, err := d.Client().Spawn(ctxFor(t, time.Minute), client.SpawnRequest{ModelRef: "huge", Backend: "cuda"})
	if client.IsCode(err, "BACKEND_UNAVAILABLE") {
		t.Skipf("cuda unavailable in this build of the hive: %v", err)
	}
	var ae *client.APIError
	if !client.IsCode(err, "INSUFFICIENT_RESOURCES") || !errors.As(err, &ae) || ae.Status != 503 {
		t.Fatalf("spawn of a 200 GiB model: %v, want 503 INSUFFICIENT_RESOURCES", err)
	}
	if req, _ := ae.Details["required_bytes"].(float64); req != 200<<30 {
		t.Errorf("details %v, want required_bytes %d", ae.Details, int64(200<<30))
	}
	if _, ok := ae.Details["available_bytes"]; !ok {
		t.Errorf("details %v lack available_bytes", ae.Details)
	}
	if procs := e.WorkerProcs(); len(procs) != 0 {
		t.Errorf("a refused spawn started processes: %+v", procs)
	}
}

// TestLeaveWorkersUpgrade: with shutdown.leave_workers a SIGTERM stops the
// hive but not its workers, and the next hive on the same state_dir
// re-adopts them (upgrade without downtime), then stops them at its own
// shutdown.
func TestLeaveWorkersUpgrade(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d1 := e.StartDaemon(harness.DaemonOptions{Config: map[string]any{"shutdown": map[string]any{"leave_workers": true}}})
	w := spawnReady(t, d1.Client(), client.SpawnRequest{ModelRef: writeModel(t, e, "m.gguf", 1024)})
	if st := d1.Stop(30 * time.Second); !st.Success() {
		t.Fatalf("exit %s", st)
	}
	if !harness.Alive(w.PID) {
		t.Fatalf("worker %d did not outlive the hive with leave_workers", w.PID)
	}
	d2 := e.StartDaemon(harness.DaemonOptions{StateDir: d1.StateDir})
	r := waitWorker(t, d2.Client(), w.ID, 20*time.Second, "re-adopted", func(x client.Worker) bool { return x.State == "idle" })
	if r.PID != w.PID {
		t.Fatalf("re-adopted pid %d, want %d", r.PID, w.PID)
	}
	if err := d2.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if st, err := d2.Wait(30 * time.Second); err != nil || !st.Success() {
		t.Fatalf("SIGINT: %v %v", st, err)
	}
	waitGone(t, 5*time.Second, w.PID)
	waitNoWorkers(t, e, 5*time.Second)
}

// TestRestartWhenPortTaken: the port a crashed worker had is taken by
// someone else while it waits out its backoff; the restart must still come
// up, on a free port of the range (DESIGN.md: a free port, checked by
// binding, for every start).
func TestRestartWhenPortTaken(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{WorkerCommand: knobCommand(e), Config: map[string]any{
		"restart": map[string]any{"backoff": map[string]any{"initial": "1s", "max": "1s", "jitter": 0}}}})
	c := d.Client()
	ref := writeModel(t, e, "crash.gguf", 4096)
	writeKnobs(t, ref, "once", "RBEE_REF_CRASH_AFTER=200ms")
	w := spawnReady(t, c, client.SpawnRequest{ModelRef: ref})
	waitWorker(t, c, w.ID, 10*time.Second, "restarting", func(x client.Worker) bool { return x.State == "restarting" })
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(w.Port))
	if err != nil {
		t.Fatalf("take port %d during the backoff: %v", w.Port, err)
	}
	defer ln.Close()
	r := waitWorker(t, c, w.ID, 20*time.Second, "restarted and ready", func(x client.Worker) bool {
		return x.State == "idle" || x.State == "failed"
	})
	if r.State != "idle" || r.Port == w.Port || r.RestartCount != 1 {
		t.Fatalf("restart with port %d taken: %+v, want idle on another port after one restart", w.Port, r)
	}
}
