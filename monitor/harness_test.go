package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/rbee-hive/rbee-hive/monitor/workertest"
	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
	"github.com/rbee-hive/rbee-hive/restart"
)

// The test binary is also the reference worker: the monitor re-executes it
// with RBEE_REFWORKER_MAIN=1, so no build step is needed.
func TestMain(m *testing.M) {
	if os.Getenv("RBEE_REFWORKER_MAIN") == "1" {
		workertest.Main()
		return
	}
	if os.Getenv("RBEE_TEST_HIVE_MAIN") == "1" {
		runTestHive()
		return
	}
	goleak.VerifyTestMain(m)
}

// recorder is an Observer that counts.
type recorder struct {
	mu                     sync.Mutex
	restarts               []string
	probeFailures, readies int
}

func (r *recorder) WorkerRestarted(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.restarts = append(r.restarts, reason)
}
func (r *recorder) HealthCheckFailed() { r.mu.Lock(); r.probeFailures++; r.mu.Unlock() }
func (r *recorder) WorkerReady(time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.readies++
}

type harness struct {
	t        testing.TB
	m        *Monitor
	reg      *registry.Registry
	res      *resources.Manager
	prov     *provisioner.Provisioner
	hub      *hubtest.Server
	hive     *httptest.Server
	obs      *recorder
	cfg      Config
	modelRef string
	stateDir string
	monMu    sync.Mutex // guards m for the hive handler
	provCfg  provisioner.Config
	resOpts  resources.Options
}

type harnessOpts struct {
	env      []string // knobs for the reference worker
	cfg      func(*Config)
	nvml     string // go-nvml mock name; "" disables CUDA
	stateDir string
	vram     int64 // catalog vram_bytes of the model (0: size × 1.2)
	uncached bool  // do not provision the model before the test
	// catalog adds entries after tiny and huge; "{model}" as a ModelRef
	// stands for the test model's reference.
	catalog []provisioner.CatalogEntry
}

func testConfig(t testing.TB) Config {
	base := 20000 + rand.IntN(40000)
	return Config{
		Command: []string{os.Args[0], "--worker-id", "{worker_id}", "--model", "{model_path}",
			"--model-ref", "{model_ref}", "--backend", "{backend}", "--device", "{device}",
			"--port", "{port}", "--callback-url", "{callback_url}"},
		Readiness:        ReadinessCallback,
		PortMin:          base,
		PortMax:          base + 199,
		ReadyTimeout:     20 * time.Second,
		Grace:            2 * time.Second,
		TermTimeout:      2 * time.Second,
		LogMaxBytes:      1 << 20,
		LogDir:           t.TempDir(),
		HealthInterval:   time.Second,
		HealthTimeout:    time.Second,
		FailureThreshold: 3,
		DefaultPolicy:    restart.OnFailure,
		Restart: restart.Config{
			Backoff:     restart.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, Multiplier: 2},
			MaxRestarts: 100, Window: time.Minute, StableAfter: time.Minute,
		},
		Logger: testLogger(t),
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if _, bench := t.(*testing.B); bench {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	checkNoLeftovers(t)
	h := &harness{t: t, obs: &recorder{}, stateDir: o.stateDir}
	modelDir := t.TempDir()
	modelPath := filepath.Join(modelDir, "tiny.gguf")
	if err := os.WriteFile(modelPath, bytes.Repeat([]byte("m"), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	h.modelRef = "file:" + modelPath
	catalog := []provisioner.CatalogEntry{
		{Name: "tiny", ModelRef: h.modelRef, VRAMBytes: o.vram},
		{Name: "huge", ModelRef: "hf:acme/huge/huge.gguf", VRAMBytes: 1 << 50},
	}
	for _, e := range o.catalog {
		if e.ModelRef == "{model}" {
			e.ModelRef = h.modelRef
		}
		catalog = append(catalog, e)
	}
	hub, err := hubtest.New(hubtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h.hub = hub
	t.Cleanup(func() { hub.Close() })
	h.provCfg = provisioner.Config{
		CacheDir:     t.TempDir(),
		Endpoint:     hub.URL(),
		Token:        "-",
		LocalDirs:    []string{modelDir},
		Catalog:      catalog,
		RetryInitial: time.Millisecond,
		Logger:       testLogger(t),
		MaxAttempts:  2,
	}
	h.openProvisioner()
	if !o.uncached {
		if _, err := h.prov.Ensure(context.Background(), h.modelRef); err != nil {
			t.Fatal(err)
		}
	}

	h.resOpts = resources.Options{NVMLMock: o.nvml, DisableCUDA: o.nvml == "", Logger: testLogger(t)}
	h.openResources()
	h.openRegistry()

	h.hive = httptest.NewServer(http.HandlerFunc(h.serveHive))
	t.Cleanup(h.hive.Close)
	h.cfg = testConfig(t)
	h.cfg.HiveURL = h.hive.URL
	h.cfg.Observer = h.obs
	// GORACE: a race-enabled worker would otherwise sleep 1s at every exit.
	h.cfg.Env = append([]string{"RBEE_REFWORKER_MAIN=1", "GORACE=atexit_sleep_ms=0"}, o.env...)
	h.cfg.Persistent = o.stateDir != ""
	if o.cfg != nil {
		o.cfg(&h.cfg)
	}
	h.newMonitor()
	return h
}

// openProvisioner opens a provisioner on the harness's cache (again, for a
// hive that restarts: it resumes what the last one left partial).
func (h *harness) openProvisioner() {
	prov, err := provisioner.New(h.provCfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.prov = prov
	h.t.Cleanup(func() { prov.Close() })
}

// openResources opens a fresh device ledger, as a restarted hive has.
func (h *harness) openResources() {
	res, err := resources.New(h.resOpts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.res = res
	h.t.Cleanup(func() { res.Close() })
}

func (h *harness) openRegistry() {
	reg, err := registry.Open(registry.Options{StateDir: h.stateDir})
	if err != nil {
		h.t.Fatal(err)
	}
	h.reg = reg
	h.t.Cleanup(func() { reg.Close() })
}

func (h *harness) newMonitor() {
	m, err := New(h.cfg, h.reg, h.res, h.prov)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.monMu.Lock()
	h.m = m
	h.monMu.Unlock()
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if !m.isDetachedOrClosed() {
			m.StopAll(ctx)
		}
		m.Close()
	})
}

func (m *Monitor) isDetachedOrClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed || m.detached
}

func (h *harness) mon() *Monitor {
	h.monMu.Lock()
	defer h.monMu.Unlock()
	return h.m
}

// serveHive is the part of the daemon's HTTP API the workers call: the
// ready callback, authenticated with the worker's token.
func (h *harness) serveHive(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/workers/ready" {
		http.NotFound(w, r)
		return
	}
	var body struct {
		WorkerID  string `json:"worker_id"`
		URL       string `json:"url"`
		ModelRef  string `json:"model_ref"`
		Backend   string `json:"backend"`
		Device    int    `json:"device"`
		VRAMBytes *int64 `json:"vram_bytes"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	m := h.mon()
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !m.AuthenticateWorker(body.WorkerID, token) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	rec, err := m.Ready(ReadyReport{WorkerID: body.WorkerID, URL: body.URL, ModelRef: body.ModelRef,
		Backend: body.Backend, Device: body.Device, VRAMBytes: body.VRAMBytes})
	switch {
	case errors.Is(err, registry.ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
	case err != nil:
		http.Error(w, err.Error(), http.StatusConflict)
	default:
		_ = json.NewEncoder(w).Encode(rec)
	}
}

func (h *harness) spawn(policy string) registry.Worker {
	h.t.Helper()
	w, err := h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: h.modelRef, Backend: "cpu", RestartPolicy: policy})
	if err != nil {
		h.t.Fatalf("spawn: %v", err)
	}
	return w
}

func (h *harness) waitReady(id string) registry.Worker {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := h.mon().WaitReady(ctx, id)
	if err != nil {
		h.t.Fatalf("wait ready %s: %v\n%s", id, err, h.logs(id))
	}
	return w
}

func (h *harness) logs(id string) string {
	b, _ := h.mon().Logs(id, 50)
	return string(b)
}

// waitFor polls the record until cond holds (30s at most).
func (h *harness) waitFor(id string, what string, cond func(registry.Worker) bool) registry.Worker {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		w, err := h.reg.Get(id)
		if err == nil && cond(w) {
			return w
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("worker %s: timed out waiting for %s; last %+v err %v\n%s", id, what, w, err, h.logs(id))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) reservedBytes() uint64 {
	var n uint64
	for _, d := range h.res.Devices() {
		n += d.ReservedBytes
	}
	return n
}

func (h *harness) portsHeld() int {
	m := h.mon()
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.ports)
}

// checkNoLeftovers registers a cleanup (run after every other cleanup of
// the test) that fails the test on a zombie child or a live child process.
func checkNoLeftovers(t testing.TB) {
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			left := childrenOf(os.Getpid())
			if len(left) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("processes left behind: %v", left)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// childrenOf lists "pid:state" of the processes whose parent is ppid.
func childrenOf(ppid int) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if pp, _ := strconv.Atoi(f[1]); pp == ppid {
			out = append(out, fmt.Sprintf("%d:%s", pid, f[0]))
		}
	}
	return out
}

// groupGone reports whether no live process is left in process group pgid.
// Zombies do not count: a worker's orphaned child is reaped by init, on its
// own schedule (or never, where init does not reap).
func groupGone(pgid int) bool {
	if errors.Is(unix.Kill(-pgid, 0), unix.ESRCH) {
		return true
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" && f[0] != "X" {
			return false
		}
	}
	return true
}

// pidGone reports whether pid no longer runs (gone or a zombie someone
// else must reap).
func pidGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func syscallKill(pid int) error { return unix.Kill(pid, unix.SIGKILL) }

func waitPid(pid int) error {
	var ws unix.WaitStatus
	_, err := unix.Wait4(pid, &ws, 0, nil)
	return err
}
