package monitor

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
	"github.com/rbee-hive/rbee-hive/restart"
)

func TestSpawnReadyByCallbackThenStopGraceful(t *testing.T) {
	h := newHarness(t, harnessOpts{env: []string{"RBEE_REF_VRAM_BYTES=1234", "RBEE_REF_PRINT_LINES=3"}})
	w, err := h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: h.modelRef, Backend: "cpu", CorrelationID: "corr-1"})
	if err != nil {
		t.Fatal(err)
	}
	if w.State != registry.StateLoading || w.PID <= 0 || w.Port < h.cfg.PortMin || w.Port > h.cfg.PortMax {
		t.Fatalf("spawned record: %+v", w)
	}
	if !strings.HasPrefix(w.ID, "worker-") || w.RestartPolicy != "on-failure" || w.Backend != "cpu" {
		t.Fatalf("spawned record: %+v", w)
	}
	if h.reservedBytes() == 0 {
		t.Fatal("no memory reserved for the worker")
	}
	ready := h.waitReady(w.ID)
	if ready.State != registry.StateIdle || ready.ReadyAt == nil || ready.VRAMBytes != 1234 ||
		ready.URL != "http://127.0.0.1:"+strconv.Itoa(w.Port) {
		t.Fatalf("ready record: %+v", ready)
	}
	waitUntil(t, "the observer to see the ready", func() bool {
		h.obs.mu.Lock()
		defer h.obs.mu.Unlock()
		return h.obs.readies == 1
	})
	if h.mon().AuthenticateWorker(w.ID, "wrong") || h.mon().AuthenticateWorker("worker-nope", "") {
		t.Fatal("a wrong token authenticated")
	}
	logs := h.logs(w.ID)
	env := "rbee-ref env RBEE_WORKER_ID=" + w.ID + " RBEE_HIVE_URL=" + h.hive.URL + " RBEE_CORRELATION_ID=corr-1 CUDA_VISIBLE_DEVICES= CUDA_DEVICE_ORDER=PCI_BUS_ID token_set=true"
	if !strings.Contains(logs, env) {
		t.Fatalf("worker environment: want %q in\n%s", env, logs)
	}
	if !strings.Contains(logs, "rbee-ref line 3") {
		t.Fatalf("logs lack the worker's output:\n%s", logs)
	}
	if got, _ := h.mon().Logs(w.ID, 1); strings.Count(string(got), "\n") != 1 {
		t.Fatalf("Logs(1) = %q", got)
	}
	if !h.mon().InUse(w.ModelRef) || len(h.mon().UsersOf(w.ModelRef)) != 1 {
		t.Fatal("model not in use")
	}

	out, err := h.mon().Stop(context.Background(), w.ID, 0)
	if err != nil || out != OutcomeGraceful {
		t.Fatalf("stop = %q, %v", out, err)
	}
	if _, err := h.reg.Get(w.ID); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("record after stop: %v", err)
	}
	if !pidGone(w.PID) {
		t.Fatal("worker process survived the stop")
	}
	waitUntil(t, "the process group to be gone", func() bool { return groupGone(w.PID) })
	if h.reservedBytes() != 0 || h.portsHeld() != 0 {
		t.Fatalf("after stop: reserved %d, ports %d", h.reservedBytes(), h.portsHeld())
	}
	if _, err := h.mon().Stop(context.Background(), w.ID, 0); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("second stop: %v", err)
	}
}

func TestSpawnReadyByPoll(t *testing.T) {
	h := newHarness(t, harnessOpts{
		env: []string{"RBEE_REF_READINESS=none", "RBEE_REF_LOAD_DELAY=100ms", "RBEE_REF_BUSY=1"},
		cfg: func(c *Config) { c.Readiness = ReadinessPoll; c.HealthInterval = 20 * time.Millisecond },
	})
	w := h.spawn("")
	ready := h.waitReady(w.ID)
	if ready.ReadyAt == nil {
		t.Fatalf("ready record: %+v", ready)
	}
	// The health probes apply the body's state.
	h.waitFor(w.ID, "busy from the probe body", func(w registry.Worker) bool { return w.State == registry.StateBusy })
	hs, err := h.mon().Health(w.ID)
	if err != nil || len(hs) != 1 || !hs[0].Healthy || hs[0].LastProbeAt == nil {
		t.Fatalf("health = %+v, %v", hs, err)
	}
}

func TestReadyTimeoutIsAFailedStart(t *testing.T) {
	h := newHarness(t, harnessOpts{
		env: []string{"RBEE_REF_READINESS=none"}, // never calls back
		cfg: func(c *Config) { c.ReadyTimeout = 300 * time.Millisecond },
	})
	w := h.spawn("never")
	_, err := h.mon().WaitReady(context.Background(), w.ID)
	if !errors.Is(err, ErrSpawnFailed) {
		t.Fatalf("wait ready: %v", err)
	}
	f := h.waitFor(w.ID, "failed", func(w registry.Worker) bool { return w.State == registry.StateFailed })
	if f.LastExit == nil || f.LastExit.Reason != string(restart.ExitStartFailed) || f.LastExit.Signal != "SIGKILL" ||
		!strings.Contains(f.LastError, "not ready within") {
		t.Fatalf("failed record: %+v exit %+v", f, f.LastExit)
	}
	if !pidGone(w.PID) || h.reservedBytes() != 0 {
		t.Fatal("a timed-out worker kept its process or memory")
	}
}

func TestCrashRestartsWithANewPID(t *testing.T) {
	h := newHarness(t, harnessOpts{env: []string{"RBEE_REF_CRASH_AFTER=150ms", "RBEE_REF_EXIT_CODE=3"}})
	w := h.spawn("on-failure")
	h.waitReady(w.ID)
	again := h.waitFor(w.ID, "restarted and ready", func(x registry.Worker) bool {
		return x.RestartCount >= 1 && x.PID != 0 && x.PID != w.PID && x.State == registry.StateIdle
	})
	if again.LastExit == nil || again.LastExit.Code == nil || *again.LastExit.Code != 3 ||
		again.LastExit.Reason != string(restart.ExitError) {
		t.Fatalf("last exit: %+v", again.LastExit)
	}
	if !pidGone(w.PID) {
		t.Fatal("the crashed process is still there")
	}
	h.obs.mu.Lock()
	reasons := append([]string(nil), h.obs.restarts...)
	h.obs.mu.Unlock()
	if len(reasons) == 0 || reasons[0] != "error" {
		t.Fatalf("observer restarts: %v", reasons)
	}
}

func TestPolicyNeverFails(t *testing.T) {
	h := newHarness(t, harnessOpts{env: []string{"RBEE_REF_CRASH_AFTER=50ms", "RBEE_REF_EXIT_CODE=7"}})
	w := h.spawn("never")
	h.waitReady(w.ID)
	f := h.waitFor(w.ID, "failed", func(w registry.Worker) bool { return w.State == registry.StateFailed })
	if f.RestartCount != 0 || f.LastExit == nil || *f.LastExit.Code != 7 || !strings.Contains(f.LastError, "policy never") {
		t.Fatalf("failed record: %+v exit %+v", f, f.LastExit)
	}
	if h.reservedBytes() != 0 || h.portsHeld() != 0 {
		t.Fatal("a failed worker kept its memory or port")
	}
	// A failed worker is kept until it is shut down.
	if out, err := h.mon().Stop(context.Background(), w.ID, 0); err != nil || out != OutcomeGraceful {
		t.Fatalf("stop failed worker: %q %v", out, err)
	}
	if h.reg.Len() != 0 {
		t.Fatal("record kept after stop")
	}
}

func TestCrashLoopFailsAfterBudget(t *testing.T) {
	h := newHarness(t, harnessOpts{
		env: []string{"RBEE_REF_CRASH_AT_START=1"},
		cfg: func(c *Config) { c.Restart.MaxRestarts = 2 },
	})
	w := h.spawn("always")
	f := h.waitFor(w.ID, "failed", func(w registry.Worker) bool { return w.State == registry.StateFailed })
	if f.RestartCount != 2 || !strings.Contains(f.LastError, "budget exhausted") {
		t.Fatalf("failed record: %+v", f)
	}
	if _, err := h.mon().WaitReady(context.Background(), w.ID); !errors.Is(err, ErrSpawnFailed) {
		t.Fatalf("wait ready of a failed worker: %v", err)
	}
}

func TestHangIsUnhealthyThenRestarted(t *testing.T) {
	h := newHarness(t, harnessOpts{
		env: []string{"RBEE_REF_HANG_AFTER=100ms", "RBEE_REF_IGNORE_SIGTERM=1"},
		cfg: func(c *Config) {
			c.HealthInterval = 20 * time.Millisecond
			c.HealthTimeout = 50 * time.Millisecond
			c.FailureThreshold = 2
			c.TermTimeout = 100 * time.Millisecond
			c.Grace = 100 * time.Millisecond
		},
	})
	w := h.spawn("")
	h.waitReady(w.ID)
	again := h.waitFor(w.ID, "restart after unhealthy", func(x registry.Worker) bool {
		return x.RestartCount >= 1 && x.PID != w.PID && x.PID != 0
	})
	if again.LastExit == nil || again.LastExit.Reason != string(restart.ExitUnhealthy) || again.LastExit.Signal != "SIGKILL" {
		t.Fatalf("last exit: %+v", again.LastExit)
	}
	h.obs.mu.Lock()
	failures := h.obs.probeFailures
	h.obs.mu.Unlock()
	if failures < 2 {
		t.Fatalf("observer saw %d probe failures", failures)
	}
}

// childPID reads the pid the reference worker printed for its child.
func childPID(t *testing.T, h *harness, id string) int {
	t.Helper()
	re := regexp.MustCompile(`rbee-ref child (\d+)`)
	var pid int
	waitUntil(t, "child pid in the log", func() bool {
		b, _ := h.mon().Logs(id, 0)
		if m := re.FindSubmatch(b); m != nil {
			pid, _ = strconv.Atoi(string(m[1]))
			return true
		}
		return false
	})
	return pid
}

func TestStopOutcomesKillTheWorkersChildToo(t *testing.T) {
	cases := []struct {
		name  string
		env   []string
		grace time.Duration
		want  Outcome
	}{
		{"graceful", nil, 10 * time.Second, OutcomeGraceful},
		{"sigterm", []string{"RBEE_REF_SHUTDOWN_DELAY=1h"}, 100 * time.Millisecond, OutcomeTerminated},
		// No /v1/shutdown (llama-server): SIGTERM at once, not after the
		// grace period; waiting it out would run into the 10 s stop
		// deadline below and end in SIGKILL.
		{"no shutdown endpoint", []string{"RBEE_REF_NO_SHUTDOWN=1"}, time.Hour, OutcomeTerminated},
		{"sigkill", []string{"RBEE_REF_SHUTDOWN_DELAY=1h", "RBEE_REF_IGNORE_SIGTERM=1"}, 100 * time.Millisecond, OutcomeKilled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{
				env: append([]string{"RBEE_REF_SPAWN_CHILD=1"}, c.env...),
				cfg: func(cfg *Config) { cfg.Grace = c.grace; cfg.TermTimeout = 200 * time.Millisecond },
			})
			w := h.spawn("always") // a stop is never followed by a restart, whatever the policy
			h.waitReady(w.ID)
			child := childPID(t, h, w.ID)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := h.mon().Stop(ctx, w.ID, 0)
			if err != nil || out != c.want {
				t.Fatalf("stop = %q, %v; want %q", out, err, c.want)
			}
			waitUntil(t, "the worker's child to die", func() bool { return pidGone(child) })
			waitUntil(t, "the process group to be gone", func() bool { return groupGone(w.PID) })
			if h.reg.Len() != 0 || h.reservedBytes() != 0 || h.portsHeld() != 0 {
				t.Fatal("stop left a record, memory or a port")
			}
			time.Sleep(50 * time.Millisecond) // no restart may follow
			if h.reg.Len() != 0 || len(childrenOf(os.Getpid())) != 0 {
				t.Fatal("a stopped worker came back")
			}
		})
	}
}

func TestStopCancelsBackoff(t *testing.T) {
	h := newHarness(t, harnessOpts{
		env: []string{"RBEE_REF_CRASH_AT_START=1"},
		cfg: func(c *Config) {
			c.Restart.Backoff = restart.Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 2}
		},
	})
	w := h.spawn("always")
	h.waitFor(w.ID, "restarting", func(w registry.Worker) bool { return w.State == registry.StateRestarting })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.mon().Stop(ctx, w.ID, 0); err != nil {
		t.Fatalf("stop during backoff: %v", err)
	}
	if h.reg.Len() != 0 {
		t.Fatal("record kept")
	}
}

func TestSpawnValidationLeavesNothing(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	neg := -1
	cases := []struct {
		req   SpawnRequest
		field string
	}{
		{SpawnRequest{ModelRef: h.modelRef, Backend: "rocm"}, "backend"},
		{SpawnRequest{ModelRef: h.modelRef, Backend: "cpu", Device: &neg}, "device"},
		{SpawnRequest{ModelRef: h.modelRef, Backend: "cpu", RestartPolicy: "sometimes"}, "restart_policy"},
		{SpawnRequest{ModelRef: "file:/elsewhere/model.gguf", Backend: "cpu"}, "model_ref"},
		{SpawnRequest{ModelRef: "hf:a/../b", Backend: "cpu"}, "model_ref"},
	}
	for _, c := range cases {
		_, err := h.mon().Spawn(context.Background(), c.req)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%+v: err = %v, want field %s", c.req, err, c.field)
		}
	}
	_, err := h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: "hf:a/../b", Backend: "cpu"})
	if !errors.Is(err, provisioner.ErrInvalidRef) {
		t.Errorf("model_ref error does not wrap the RefError: %v", err)
	}
	if _, err := h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: h.modelRef, Backend: "cuda"}); !errors.Is(err, ErrBackendUnavailable) {
		t.Errorf("cuda without NVML: %v", err)
	}
	if h.reg.Len() != 0 || h.reservedBytes() != 0 || h.portsHeld() != 0 || len(childrenOf(os.Getpid())) != 0 {
		t.Fatal("a refused spawn left something behind")
	}
}

func TestExecFailureLeavesNothing(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.Command = []string{"/nonexistent/worker", "{port}"} }})
	_, err := h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: h.modelRef, Backend: "cpu"})
	if !errors.Is(err, ErrSpawnFailed) {
		t.Fatalf("spawn: %v", err)
	}
	if h.reg.Len() != 0 || h.reservedBytes() != 0 || h.portsHeld() != 0 {
		t.Fatal("a failed exec left something behind")
	}
}

func TestNoFreePort(t *testing.T) {
	// One port, free when the test starts: a random one may be held by
	// another test's connection (the range overlaps the ephemeral ports).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.PortMin, c.PortMax = port, port }})
	w := h.spawn("")
	h.waitReady(w.ID) // the worker holds the only port
	_, err = h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: h.modelRef, Backend: "cpu"})
	if !errors.Is(err, ErrSpawnFailed) || !strings.Contains(err.Error(), "no free port") {
		t.Fatalf("spawn with no free port: %v", err)
	}
	if h.reg.Len() != 1 || h.portsHeld() != 1 {
		t.Fatal("the refused spawn left something behind")
	}
}

func TestConcurrentSpawnsNeverShareAPortOrOversubscribe(t *testing.T) {
	// dgxh100: 8 GPUs of 80 GiB. Each worker needs 50 GiB, so one per GPU.
	h := newHarness(t, harnessOpts{nvml: "dgxh100", vram: 50 << 30})
	const n = 12
	var wg sync.WaitGroup
	results := make([]registry.Worker, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: h.modelRef, Backend: "cuda"})
		}()
	}
	wg.Wait()
	ports, devices := map[int]bool{}, map[int]bool{}
	ok := 0
	for i := range n {
		if errs[i] != nil {
			var ime *resources.InsufficientMemoryError
			if !errors.As(errs[i], &ime) {
				t.Fatalf("spawn %d: %v", i, errs[i])
			}
			continue
		}
		ok++
		w := results[i]
		if ports[w.Port] || devices[w.Device] {
			t.Fatalf("port %d or device %d given twice", w.Port, w.Device)
		}
		ports[w.Port], devices[w.Device] = true, true
	}
	if ok != 8 {
		t.Fatalf("%d spawns succeeded, want 8", ok)
	}
	for _, w := range results {
		if w.ID != "" {
			h.waitReady(w.ID)
			if logs := h.logs(w.ID); !strings.Contains(logs, " CUDA_VISIBLE_DEVICES="+strconv.Itoa(w.Device)+" CUDA_DEVICE_ORDER=PCI_BUS_ID ") {
				t.Fatalf("worker on device %d: CUDA_VISIBLE_DEVICES not set:\n%s", w.Device, logs)
			}
		}
	}
}

func TestHeartbeat(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	w := h.spawn("")
	h.waitReady(w.ID)
	vram := int64(99)
	got, err := h.mon().Heartbeat(Heartbeat{WorkerID: w.ID, State: registry.StateBusy, VRAMBytes: &vram})
	if err != nil || got.State != registry.StateBusy || got.VRAMBytes != 99 || got.LastHeartbeat == nil {
		t.Fatalf("heartbeat: %+v %v", got, err)
	}
	if _, err := h.mon().Heartbeat(Heartbeat{WorkerID: "worker-x"}); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("unknown worker: %v", err)
	}
	if _, err := h.mon().Heartbeat(Heartbeat{WorkerID: w.ID, State: registry.StateFailed}); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("bad state: %v", err)
	}
	// Ready of a worker that is not loading is a state error.
	if _, err := h.mon().Ready(ReadyReport{WorkerID: w.ID}); !errors.Is(err, registry.ErrInvalidTransition) {
		t.Fatalf("second ready: %v", err)
	}
	if _, err := h.mon().Ready(ReadyReport{WorkerID: "worker-x"}); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("ready of unknown worker: %v", err)
	}
}

func TestReadoptAfterMonitorDropped(t *testing.T) {
	state := t.TempDir()
	h := newHarness(t, harnessOpts{stateDir: state, cfg: func(c *Config) { c.HealthInterval = 50 * time.Millisecond }})
	keep := h.spawn("")
	lost := h.spawn("on-failure")
	gone := h.spawn("never")
	for _, w := range []registry.Worker{keep, lost, gone} {
		h.waitReady(w.ID)
	}
	// The hive goes away without stopping its workers.
	old := h.mon()
	old.Detach()
	old.Close()
	h.reg.Close()
	// Meanwhile two workers die.
	for _, w := range []registry.Worker{lost, gone} {
		killGroup(w.PID)
		waitUntil(t, "worker dead", func() bool { return pidGone(w.PID) })
	}
	reapOurChild(lost.PID)
	reapOurChild(gone.PID)

	h.openRegistry()
	h.newMonitor()
	adopted := h.waitFor(keep.ID, "adopted", func(w registry.Worker) bool { return w.State == registry.StateIdle })
	if adopted.PID != keep.PID {
		t.Fatalf("adopted pid %d, want %d", adopted.PID, keep.PID)
	}
	restarted := h.waitFor(lost.ID, "restarted", func(w registry.Worker) bool {
		return w.State == registry.StateIdle && w.PID != lost.PID && w.PID != 0
	})
	if restarted.RestartCount != 1 {
		t.Fatalf("restarted record: %+v", restarted)
	}
	failed := h.waitFor(gone.ID, "failed", func(w registry.Worker) bool { return w.State == registry.StateFailed })
	if !strings.Contains(failed.LastError, "policy never") {
		t.Fatalf("failed record: %+v", failed)
	}
	// The adopted worker's exit is seen through its pidfd and restarted.
	killGroup(keep.PID)
	h.waitFor(keep.ID, "adopted worker restarted", func(w registry.Worker) bool {
		return w.State == registry.StateIdle && w.PID != keep.PID && w.PID != 0
	})
	// The hive's reservations cover the two live workers again.
	if h.reservedBytes() == 0 {
		t.Fatal("re-adopted workers hold no memory")
	}
}

// TestReadoptAfterHiveDiedInBackoff: the hive dies (nothing flushed, as
// with kill -9) while a crashed worker waits out its backoff. The move to
// restarting is written lazily, so the file may still name the ended
// process; either way the next hive relaunches the worker.
func TestReadoptAfterHiveDiedInBackoff(t *testing.T) {
	state := t.TempDir()
	h := newHarness(t, harnessOpts{stateDir: state, cfg: func(c *Config) {
		c.Restart.Backoff = restart.Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 1}
	}})
	w := h.spawn("on-failure")
	h.waitReady(w.ID)
	killGroup(w.PID)
	h.waitFor(w.ID, "restarting", func(w registry.Worker) bool { return w.State == registry.StateRestarting })
	// What the disk holds at this moment is what a new hive would read.
	snap, err := os.ReadFile(filepath.Join(state, "workers.json"))
	if err != nil {
		t.Fatal(err)
	}
	old := h.mon()
	old.Close() // nothing runs: the worker is waiting out its backoff
	h.reg.Close()

	h.stateDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(h.stateDir, "workers.json"), snap, 0o600); err != nil {
		t.Fatal(err)
	}
	h.cfg.Restart.Backoff = restart.Backoff{Initial: time.Millisecond, Max: time.Millisecond, Multiplier: 1}
	h.openRegistry()
	h.newMonitor()
	again := h.waitFor(w.ID, "relaunched", func(x registry.Worker) bool {
		return x.State == registry.StateIdle && x.PID != 0 && x.PID != w.PID
	})
	if again.RestartCount < 1 || again.LastExit == nil {
		t.Fatalf("relaunched record: %+v", again)
	}
}

// TestReadoptLeavesAReusedPIDAlone: a record whose pid now belongs to
// another process (its start time differs) is neither adopted nor killed;
// the worker is relaunched. A lazily written restarting leaves such records.
func TestReadoptLeavesAReusedPIDAlone(t *testing.T) {
	state := t.TempDir()
	h := newHarness(t, harnessOpts{stateDir: state})
	w := h.spawn("on-failure")
	h.waitReady(w.ID)
	h.mon().Detach()
	h.mon().Close()
	h.reg.Close()
	killGroup(w.PID)
	waitUntil(t, "worker dead", func() bool { return pidGone(w.PID) })
	reapOurChild(w.PID)

	// A stranger holds the recorded pid (as far as re-adoption can tell):
	// point the record at it, with the worker's start time, which differs.
	stranger := exec.Command("sleep", "60")
	stranger.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stranger.Process.Kill(); _ = stranger.Wait() }()
	reg, err := registry.Open(registry.Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Update(w.ID, func(x *registry.Worker) error {
		x.PID, x.Process.PGID = stranger.Process.Pid, stranger.Process.Pid
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}

	h.openRegistry()
	h.newMonitor()
	again := h.waitFor(w.ID, "relaunched", func(x registry.Worker) bool {
		return x.State == registry.StateIdle && x.PID != 0 && x.PID != stranger.Process.Pid
	})
	if pidGone(stranger.Process.Pid) {
		t.Fatal("re-adoption killed a process that is not the worker's")
	}
	if again.RestartCount != 1 {
		t.Fatalf("relaunched record: %+v", again)
	}
}

func killGroup(pgid int) {
	if pgid <= 1 {
		panic("killGroup: bad process group " + strconv.Itoa(pgid))
	}
	_ = syscallKill(-pgid)
}

// reapOurChild reaps pid if it is a child of the test process (workers the
// dropped monitor started are): a real hive restart has no such parent.
func reapOurChild(pid int) { _ = waitPid(pid) }

func TestDetachLeavesWorkersRunning(t *testing.T) {
	h := newHarness(t, harnessOpts{stateDir: t.TempDir()})
	w := h.spawn("")
	h.waitReady(w.ID)
	h.mon().Detach()
	if pidGone(w.PID) {
		t.Fatal("detach stopped the worker")
	}
	if _, err := h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: h.modelRef, Backend: "cpu"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("spawn after detach: %v", err)
	}
	if _, err := h.mon().Stop(context.Background(), w.ID, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("stop after detach: %v", err)
	}
	h.mon().Close()
	killGroup(w.PID)
	waitUntil(t, "worker dead", func() bool { return pidGone(w.PID) })
	reapOurChild(w.PID)
}

func TestSpawnProvisionsALocalModelFirst(t *testing.T) {
	h := newHarness(t, harnessOpts{uncached: true})
	w := h.spawn("")
	if w.State != registry.StateLoading {
		t.Fatalf("spawned record: %+v", w)
	}
	ready := h.waitReady(w.ID)
	if ready.PID <= 0 || ready.ModelPath == "" {
		t.Fatalf("ready record: %+v", ready)
	}
}

// TestSpawnRecordsTheModelsLastUse: a spawn moves the model's last use
// forward (written off the spawn's path; Close writes what is pending).
func TestSpawnRecordsTheModelsLastUse(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	before, ok := h.prov.Cached(h.modelRef)
	if !ok {
		t.Fatal("model not cached")
	}
	time.Sleep(2 * time.Millisecond) // a clock step to tell the times apart, not a timing assertion
	w := h.spawn("")
	h.waitReady(w.ID)
	if _, err := h.mon().Stop(context.Background(), w.ID, 0); err != nil {
		t.Fatal(err)
	}
	h.mon().Close()
	after, _ := h.prov.Cached(h.modelRef)
	if !after.LastUsedAt.After(before.LastUsedAt) {
		t.Fatalf("last_used_at %v after the spawn, was %v", after.LastUsedAt, before.LastUsedAt)
	}
}

func TestSpawnDownloadsFromTheHubThenStarts(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	if _, err := h.hub.AddRepo("acme/tiny", &hubtest.File{Path: "tiny.gguf", Content: hubtest.Synthetic(1, 1<<20), LFS: true}); err != nil {
		t.Fatal(err)
	}
	w, err := h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: "hf:acme/tiny/tiny.gguf", Backend: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	ready := h.waitReady(w.ID)
	if ready.PID <= 0 || !strings.HasPrefix(ready.ModelPath, h.prov.CacheDir()) {
		t.Fatalf("ready record: %+v", ready)
	}
}

func TestSpawnProvisionErrorsLeaveNothing(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	// The huge model's metadata is there, its content never arrives.
	if _, err := h.hub.AddRepo("acme/huge", &hubtest.File{Path: "huge.gguf", Content: hubtest.Synthetic(2, 8<<20), LFS: true,
		Faults: hubtest.Faults{CutAfter: 1, Stall: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	_, err := h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: "hf:acme/missing/x.gguf", Backend: "cpu"})
	if !errors.Is(err, provisioner.ErrModelNotFound) {
		t.Errorf("missing model: %v", err)
	}
	// Too big for any device: refused as soon as its size is known.
	_, err = h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: "huge", Backend: "cpu"})
	var ime *resources.InsufficientMemoryError
	if !errors.As(err, &ime) || ime.RequiredBytes != 1<<50 {
		t.Errorf("huge model: %v", err)
	}
	if h.reg.Len() != 0 || h.reservedBytes() != 0 || h.portsHeld() != 0 || len(childrenOf(os.Getpid())) != 0 {
		t.Fatal("a refused spawn left something behind")
	}
}

func TestDownloadFailingAfterSpawnFailsTheWorker(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	if _, err := h.hub.AddRepo("acme/broken", &hubtest.File{Path: "m.gguf", Content: hubtest.Synthetic(3, 1<<20), LFS: true,
		Faults: hubtest.Faults{FailFirst: 1000, FailStatus: 503}}); err != nil {
		t.Fatal(err)
	}
	w, err := h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: "hf:acme/broken/m.gguf", Backend: "cpu"})
	if err != nil {
		// The provisioner may already know the download failed.
		if !errors.Is(err, provisioner.ErrUpstream) {
			t.Fatalf("spawn: %v", err)
		}
		return
	}
	f := h.waitFor(w.ID, "failed", func(w registry.Worker) bool { return w.State == registry.StateFailed })
	if !strings.Contains(f.LastError, "provision") || h.reservedBytes() != 0 || h.portsHeld() != 0 {
		t.Fatalf("failed record: %+v (reserved %d, ports %d)", f, h.reservedBytes(), h.portsHeld())
	}
}

func TestStopWhileProvisioning(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	if _, err := h.hub.AddRepo("acme/slow", &hubtest.File{Path: "m.gguf", Content: hubtest.Synthetic(4, 1<<20), LFS: true,
		Faults: hubtest.Faults{CutAfter: 1, Stall: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	w, err := h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: "hf:acme/slow/m.gguf", Backend: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	if w.PID != 0 || w.State != registry.StateLoading || h.reservedBytes() == 0 {
		t.Fatalf("spawn of a downloading model: %+v (reserved %d)", w, h.reservedBytes())
	}
	out, err := h.mon().Stop(context.Background(), w.ID, 0)
	if err != nil || out != OutcomeGraceful {
		t.Fatalf("stop = %q, %v", out, err)
	}
	if h.reg.Len() != 0 || h.reservedBytes() != 0 || h.portsHeld() != 0 {
		t.Fatal("stop of a provisioning worker left something behind")
	}
}

func TestRestartMovesToAFreePortWhenItsPortWasTaken(t *testing.T) {
	h := newHarness(t, harnessOpts{
		env: []string{"RBEE_REF_CRASH_AFTER=100ms"},
		cfg: func(c *Config) {
			c.Restart.Backoff = restart.Backoff{Initial: 300 * time.Millisecond, Max: 300 * time.Millisecond, Multiplier: 1}
		},
	})
	w := h.spawn("")
	h.waitReady(w.ID)
	h.waitFor(w.ID, "restarting", func(w registry.Worker) bool { return w.State == registry.StateRestarting })
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(w.Port))
	if err != nil {
		t.Fatalf("take port %d during the backoff: %v", w.Port, err)
	}
	defer ln.Close()
	r := h.waitFor(w.ID, "restarted on another port", func(x registry.Worker) bool {
		return x.State == registry.StateIdle && x.RestartCount >= 1
	})
	if r.Port == w.Port || r.URL != "http://127.0.0.1:"+strconv.Itoa(r.Port) || h.portsHeld() != 1 {
		t.Fatalf("restart with port %d taken: %+v (ports held %d)", w.Port, r, h.portsHeld())
	}
}

func TestReadoptKillsAWorkerFailingItsProbe(t *testing.T) {
	h := newHarness(t, harnessOpts{
		stateDir: t.TempDir(),
		env:      []string{"RBEE_REF_HANG_AFTER=200ms"},
		cfg: func(c *Config) {
			c.HealthInterval = time.Hour
			c.HealthTimeout = 200 * time.Millisecond
			c.Grace = 100 * time.Millisecond
		},
	})
	w := h.spawn("")
	h.waitReady(w.ID)
	old := h.mon()
	old.Detach()
	old.Close()
	h.reg.Close()
	time.Sleep(300 * time.Millisecond) // it hangs now, alive but not answering

	h.openRegistry()
	h.newMonitor()
	r := h.waitFor(w.ID, "restarted", func(x registry.Worker) bool { return x.PID != 0 && x.PID != w.PID })
	if r.RestartCount != 1 || !strings.Contains(r.LastError, "health probe failed") {
		t.Fatalf("record: %+v", r)
	}
	waitUntil(t, "the hung worker to be killed", func() bool { return pidGone(w.PID) })
}

// TestProbeBodyVRAM: a probe body's vram_bytes reaches the record; a
// negative one is ignored (the heartbeat route refuses it with 400).
func TestProbeBodyVRAM(t *testing.T) {
	for _, c := range []struct {
		reported string
		want     int64
	}{{"7", 7}, {"-5", 0}} {
		t.Run(c.reported, func(t *testing.T) {
			h := newHarness(t, harnessOpts{
				env: []string{"RBEE_REF_VRAM_BYTES=" + c.reported, "RBEE_REF_READINESS=none"},
				cfg: func(cfg *Config) { cfg.Readiness = ReadinessPoll; cfg.HealthInterval = 10 * time.Millisecond },
			})
			w := h.spawn("never")
			h.waitReady(w.ID)
			probes := 0
			var last time.Time
			waitUntil(t, "three health probes", func() bool {
				hs, err := h.mon().Health(w.ID)
				if err == nil && len(hs) == 1 && hs[0].LastProbeAt != nil && hs[0].LastProbeAt.After(last) {
					last = *hs[0].LastProbeAt
					probes++
				}
				return probes >= 3
			})
			got, err := h.reg.Get(w.ID)
			if err != nil || got.VRAMBytes != c.want {
				t.Fatalf("worker reported vram_bytes %s: record has %d (%v), want %d", c.reported, got.VRAMBytes, err, c.want)
			}
			if _, err := h.mon().Stop(context.Background(), w.ID, 0); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Two catalog names for one model_ref (a longer context needs more memory,
// say): a spawn by name reserves that name's vram_bytes, whichever entry the
// model's own record carries. Seen on a real H100, where "small" reserved
// the 30 GiB of the entry listed after it.
func TestSpawnByCatalogNameReservesThatNamesMemory(t *testing.T) {
	const small, large = 1 << 20, 3 << 20
	for _, uncached := range []bool{false, true} {
		h := newHarness(t, harnessOpts{vram: small, uncached: uncached,
			catalog: []provisioner.CatalogEntry{{Name: "tiny-long-context", ModelRef: "{model}", VRAMBytes: large}}})
		for _, c := range []struct {
			ref  string
			want uint64
		}{{"tiny", small}, {"tiny-long-context", large}} {
			w, err := h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: c.ref, Backend: "cpu"})
			if err != nil {
				t.Fatal(err)
			}
			if got := h.reservedBytes(); got != c.want {
				t.Errorf("uncached %v: spawn %q reserved %d bytes, want %d", uncached, c.ref, got, c.want)
			}
			h.waitReady(w.ID)
			if _, err := h.mon().Stop(context.Background(), w.ID, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
}
