package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
)

// allNames are the metric families DESIGN.md asks for, plus events dropped
// and a sample of the Go and process collectors.
var allNames = []string{
	"rbee_hive_workers_total", "rbee_hive_workers_by_state", "rbee_hive_vram_used_bytes",
	"rbee_hive_vram_total_bytes", "rbee_hive_requests_total", "rbee_hive_request_duration_seconds",
	"rbee_hive_worker_restarts_total", "rbee_hive_health_check_failures_total",
	"rbee_hive_worker_ready_seconds", "rbee_hive_provision_bytes_total", "rbee_hive_provisions_active",
	"rbee_hive_cache_bytes", "rbee_hive_events_dropped_total",
	"go_goroutines", "process_cpu_seconds_total",
}

func writeMeminfo(t *testing.T, path string, totalKB, availKB uint64) {
	t.Helper()
	s := fmt.Sprintf("MemTotal:       %d kB\nMemFree:         1000 kB\nMemAvailable:   %d kB\n", totalKB, availKB)
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

type fixture struct {
	reg     *registry.Registry
	res     *resources.Manager
	prov    *provisioner.Provisioner
	meminfo string
	m       *Metrics
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{meminfo: filepath.Join(t.TempDir(), "meminfo")}
	writeMeminfo(t, f.meminfo, 16<<20, 4<<20)
	var err error
	if f.reg, err = registry.Open(registry.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.reg.Close() })
	if f.res, err = resources.New(resources.Options{NVMLMock: "dgxh100", MeminfoPath: f.meminfo}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.res.Close() })
	if f.prov, err = provisioner.New(provisioner.Config{CacheDir: t.TempDir(), Endpoint: "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.prov.Close() })
	f.m = New(f.reg, f.res, f.prov)
	return f
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
	return string(body)
}

func TestEveryMetricIsExposed(t *testing.T) {
	f := newFixture(t)
	f.m.ObserveRequest(http.MethodGet, "/v1/workers/list", 200, time.Millisecond)
	f.m.WorkerRestarted("error")
	f.m.HealthCheckFailed()
	f.m.WorkerReady(40 * time.Millisecond)
	f.m.EventSubscriberDropped()

	body := scrape(t, f.m.Handler())
	for _, name := range allNames {
		if !strings.Contains(body, "\n# TYPE "+name+" ") {
			t.Errorf("scrape lacks %s", name)
		}
	}
	// Every state is listed, at 0 with an empty registry.
	for _, s := range registry.States() {
		line := fmt.Sprintf("rbee_hive_workers_by_state{state=%q} 0\n", s)
		if !strings.Contains(body, line) {
			t.Errorf("scrape lacks %q", line)
		}
	}
	if !strings.Contains(body, "\nrbee_hive_workers_total 0\n") {
		t.Error("workers_total is not 0")
	}
}

func TestWorkersFollowTheRegistry(t *testing.T) {
	f := newFixture(t)
	to := func(id string, s registry.State) {
		t.Helper()
		if _, err := f.reg.Update(id, func(w *registry.Worker) error { w.State = s; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		if _, err := f.reg.Register(registry.Worker{ID: "worker-" + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	to("worker-1", registry.StateIdle)
	to("worker-2", registry.StateIdle)
	to("worker-2", registry.StateBusy)
	to("worker-3", registry.StateFailed)

	want := `
# HELP rbee_hive_workers_total Workers in the registry.
# TYPE rbee_hive_workers_total gauge
rbee_hive_workers_total 4
# HELP rbee_hive_workers_by_state Workers in each state (every state listed).
# TYPE rbee_hive_workers_by_state gauge
rbee_hive_workers_by_state{state="busy"} 1
rbee_hive_workers_by_state{state="failed"} 1
rbee_hive_workers_by_state{state="idle"} 1
rbee_hive_workers_by_state{state="loading"} 1
rbee_hive_workers_by_state{state="restarting"} 0
rbee_hive_workers_by_state{state="stopping"} 0
rbee_hive_workers_by_state{state="unhealthy"} 0
`
	if err := testutil.GatherAndCompare(f.m.Registry(), strings.NewReader(want),
		"rbee_hive_workers_total", "rbee_hive_workers_by_state"); err != nil {
		t.Error(err)
	}

	// Read at scrape time: a change shows at the next scrape.
	if _, err := f.reg.Remove("worker-0"); err != nil {
		t.Fatal(err)
	}
	to("worker-3", registry.StateStopping)
	want = strings.NewReplacer(
		"rbee_hive_workers_total 4", "rbee_hive_workers_total 3",
		`{state="loading"} 1`, `{state="loading"} 0`,
		`{state="failed"} 1`, `{state="failed"} 0`,
		`{state="stopping"} 0`, `{state="stopping"} 1`,
	).Replace(want)
	if err := testutil.GatherAndCompare(f.m.Registry(), strings.NewReader(want),
		"rbee_hive_workers_total", "rbee_hive_workers_by_state"); err != nil {
		t.Error(err)
	}
}

func TestDevices(t *testing.T) {
	f := newFixture(t)
	devices := f.res.Devices()
	var cuda int
	var b strings.Builder
	b.WriteString("# HELP rbee_hive_vram_total_bytes Device memory, by device \"<backend>:<index>\".\n# TYPE rbee_hive_vram_total_bytes gauge\n")
	for _, d := range devices {
		if d.Backend == resources.CUDA {
			cuda++
			if d.TotalBytes == 0 {
				t.Fatalf("mock device %d reports no memory", d.Index)
			}
		}
		fmt.Fprintf(&b, "rbee_hive_vram_total_bytes{device=\"%s:%d\"} %d\n", d.Backend, d.Index, d.TotalBytes)
	}
	if cuda != 8 {
		t.Fatalf("dgxh100 mock: %d cuda devices, want 8", cuda)
	}
	if err := testutil.GatherAndCompare(f.m.Registry(), strings.NewReader(b.String()), "rbee_hive_vram_total_bytes"); err != nil {
		t.Error(err)
	}
	for _, d := range devices {
		label := fmt.Sprintf("%s:%d", d.Backend, d.Index)
		if got := gaugeValue(t, f.m, "rbee_hive_vram_used_bytes", label); got != float64(d.TotalBytes-d.FreeBytes) {
			t.Errorf("vram_used_bytes{device=%q} = %v, want %d", label, got, d.TotalBytes-d.FreeBytes)
		}
	}

	// The cpu device follows the kernel's figures at scrape time.
	if got := gaugeValue(t, f.m, "rbee_hive_vram_used_bytes", "cpu:0"); got != float64(12<<30) {
		t.Errorf("cpu used %v, want %d", got, 12<<30)
	}
	writeMeminfo(t, f.meminfo, 16<<20, 15<<20)
	if got := gaugeValue(t, f.m, "rbee_hive_vram_used_bytes", "cpu:0"); got != float64(1<<30) {
		t.Errorf("cpu used after the kernel freed memory: %v, want %d", got, 1<<30)
	}
	if got := gaugeValue(t, f.m, "rbee_hive_vram_total_bytes", "cpu:0"); got != float64(16<<30) {
		t.Errorf("cpu total %v", got)
	}
}

// gaugeValue reads one labelled sample of a scrape-time family.
func gaugeValue(t *testing.T, m *Metrics, name, device string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "device" && l.GetValue() == device {
					return s.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("%s{device=%q} not found", name, device)
	return 0
}

func TestProvisionerFigures(t *testing.T) {
	f := newFixture(t)
	used, _ := f.prov.Usage()
	want := provisionerExposition(used, f.prov.Stats().BytesDownloaded, len(f.prov.Active()))
	if err := testutil.GatherAndCompare(f.m.Registry(), strings.NewReader(want),
		"rbee_hive_cache_bytes", "rbee_hive_provision_bytes_total", "rbee_hive_provisions_active"); err != nil {
		t.Error(err)
	}
}

func TestEventMetrics(t *testing.T) {
	m := New(nil, nil, nil)
	m.ObserveRequest(http.MethodGet, "/v1/models/provision/:id", 200, 3*time.Millisecond)
	m.ObserveRequest(http.MethodGet, "/v1/models/provision/:id", 200, 5*time.Millisecond)
	m.ObserveRequest(http.MethodPost, "/v1/workers/spawn", 503, time.Second)
	m.ObserveRequest("BREW", "", 404, time.Millisecond) // method and path from an arbitrary client
	m.WorkerRestarted("error")
	m.WorkerRestarted("error")
	m.WorkerRestarted("unhealthy")
	m.HealthCheckFailed()
	m.HealthCheckFailed()
	m.HealthCheckFailed()
	m.WorkerReady(4 * time.Millisecond)
	m.WorkerReady(2 * time.Second)
	m.EventSubscriberDropped()

	want := `
# HELP rbee_hive_requests_total HTTP requests served, by method, route template and status code.
# TYPE rbee_hive_requests_total counter
rbee_hive_requests_total{code="200",method="GET",route="/v1/models/provision/:id"} 2
rbee_hive_requests_total{code="404",method="OTHER",route="unmatched"} 1
rbee_hive_requests_total{code="503",method="POST",route="/v1/workers/spawn"} 1
# HELP rbee_hive_worker_restarts_total Worker restarts, by the kind of exit that caused them.
# TYPE rbee_hive_worker_restarts_total counter
rbee_hive_worker_restarts_total{reason="error"} 2
rbee_hive_worker_restarts_total{reason="unhealthy"} 1
# HELP rbee_hive_health_check_failures_total Failed worker health probes.
# TYPE rbee_hive_health_check_failures_total counter
rbee_hive_health_check_failures_total 3
# HELP rbee_hive_events_dropped_total Event stream subscribers dropped for falling behind.
# TYPE rbee_hive_events_dropped_total counter
rbee_hive_events_dropped_total 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"rbee_hive_requests_total", "rbee_hive_worker_restarts_total",
		"rbee_hive_health_check_failures_total", "rbee_hive_events_dropped_total"); err != nil {
		t.Error(err)
	}
	body := scrape(t, m.Handler())
	for _, line := range []string{
		`rbee_hive_request_duration_seconds_count{method="GET",route="/v1/models/provision/:id"} 2`,
		`rbee_hive_request_duration_seconds_bucket{method="GET",route="/v1/models/provision/:id",le="0.0025"} 0`,
		`rbee_hive_request_duration_seconds_bucket{method="GET",route="/v1/models/provision/:id",le="0.005"} 2`,
		`rbee_hive_worker_ready_seconds_count 2`,
		`rbee_hive_worker_ready_seconds_sum 2.004`,
		`rbee_hive_worker_ready_seconds_bucket{le="0.005"} 1`,
		`rbee_hive_worker_ready_seconds_bucket{le="2.5"} 2`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("scrape lacks %q", line)
		}
	}
	// Without sources, the scrape-time families are simply absent.
	if strings.Contains(body, "rbee_hive_workers_total") || strings.Contains(body, "rbee_hive_vram_total_bytes") {
		t.Error("scrape-time metrics without a source")
	}
}

func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.ObserveRequest("GET", "/v1/health", 200, time.Millisecond)
	m.WorkerRestarted("error")
	m.HealthCheckFailed()
	m.WorkerReady(time.Second)
	m.EventSubscriberDropped()
	if m.Registry() != nil {
		t.Error("nil Metrics has a registry")
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("nil Metrics handler: %d", rec.Code)
	}
}

func BenchmarkScrape(b *testing.B) {
	reg, _ := registry.Open(registry.Options{})
	defer reg.Close()
	res, err := resources.New(resources.Options{NVMLMock: "dgxh100"})
	if err != nil {
		b.Fatal(err)
	}
	defer res.Close()
	for i := range 50 {
		if _, err := reg.Register(registry.Worker{ID: "worker-" + strconv.Itoa(i)}); err != nil {
			b.Fatal(err)
		}
	}
	m := New(reg, res, nil)
	h := m.Handler()
	b.ResetTimer()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	}
}

func TestProvisionerFiguresAfterADownload(t *testing.T) {
	hub, err := hubtest.New(hubtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close() })
	const size = 3 << 20
	if _, err := hub.AddRepo("org/tiny", &hubtest.File{Path: "model.gguf", Content: hubtest.Synthetic(7, size), LFS: true}); err != nil {
		t.Fatal(err)
	}
	prov, err := provisioner.New(provisioner.Config{CacheDir: t.TempDir(), Endpoint: hub.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Close() })
	m := New(nil, nil, prov)
	if _, err := prov.Ensure(t.Context(), "hf:org/tiny/model.gguf"); err != nil {
		t.Fatal(err)
	}
	used, _ := prov.Usage()
	if used < size {
		t.Fatalf("cache holds %d bytes after a %d-byte model", used, size)
	}
	want := provisionerExposition(used, size, 0)
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"rbee_hive_cache_bytes", "rbee_hive_provision_bytes_total", "rbee_hive_provisions_active"); err != nil {
		t.Error(err)
	}
}

func TestProvisionsActive(t *testing.T) {
	hub, err := hubtest.New(hubtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close() })
	if _, err := hub.AddRepo("org/slow", &hubtest.File{Path: "model.gguf", Content: hubtest.Synthetic(1, 1<<20), LFS: true,
		Faults: hubtest.Faults{Stall: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	prov, err := provisioner.New(provisioner.Config{CacheDir: t.TempDir(), Endpoint: hub.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Close() })
	m := New(nil, nil, prov)
	if _, err := prov.Start("hf:org/slow/model.gguf"); err != nil {
		t.Fatal(err)
	}
	active := func() float64 {
		mfs, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "rbee_hive_provisions_active" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no rbee_hive_provisions_active")
		return 0
	}
	if got := active(); got != 1 {
		t.Errorf("provisions_active = %v with one stalled download, want 1", got)
	}
	if err := prov.Close(); err != nil {
		t.Fatal(err)
	}
	if got := active(); got != 0 {
		t.Errorf("provisions_active = %v after Close, want 0", got)
	}
}

// provisionerExposition is the expected text of the provisioner figures.
func provisionerExposition(cacheBytes, downloaded int64, active int) string {
	return fmt.Sprintf(`
# HELP rbee_hive_cache_bytes Bytes held by the model cache.
# TYPE rbee_hive_cache_bytes gauge
rbee_hive_cache_bytes %d
# HELP rbee_hive_provision_bytes_total Bytes downloaded from the model hub.
# TYPE rbee_hive_provision_bytes_total counter
rbee_hive_provision_bytes_total %d
# HELP rbee_hive_provisions_active Provisions in flight.
# TYPE rbee_hive_provisions_active gauge
rbee_hive_provisions_active %d
`, cacheBytes, downloaded, active)
}
