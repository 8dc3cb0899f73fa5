package e2e

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// TestCatalogCUDAStatus runs the hive on go-nvml's dgxh100 mock machine
// (resources.nvml_mock): a catalog name is spawned on cuda, the worker gets
// CUDA_VISIBLE_DEVICES, the catalog's vram_bytes is reserved on the chosen
// device (status and metrics show it) and released at shutdown.
func TestCatalogCUDAStatus(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	ref := writeModel(t, e, "cat.gguf", 4096)
	const vram = 2_000_000_000
	d := e.StartDaemon(harness.DaemonOptions{Config: map[string]any{
		"resources": map[string]any{"nvml_mock": "dgxh100"},
		"catalog":   []any{map[string]any{"name": "tiny", "model_ref": ref, "vram_bytes": vram, "description": "e2e model"}},
	}})
	c := d.Client()
	ctx := ctxFor(t, time.Minute)

	cat, err := c.Catalog(ctx)
	if err != nil || len(cat) != 1 || cat[0].Name != "tiny" || cat[0].ModelRef != ref || cat[0].VRAMBytes != vram || cat[0].Description != "e2e model" {
		t.Fatalf("catalog: %+v, %v", cat, err)
	}
	w, err := c.Spawn(ctx, client.SpawnRequest{ModelRef: "tiny", Backend: "cuda", Wait: true})
	if client.IsCode(err, "BACKEND_UNAVAILABLE") {
		t.Skipf("cuda unavailable in this build of the hive: %v", err)
	}
	if err != nil || w.State != "idle" || w.Backend != "cuda" {
		t.Fatalf("spawn tiny on cuda: %+v, %v", w, err)
	}
	env, err := os.ReadFile("/proc/" + strconv.Itoa(w.PID) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	if want := "CUDA_VISIBLE_DEVICES=" + strconv.Itoa(w.Device); !strings.Contains("\x00"+string(env)+"\x00", "\x00"+want+"\x00") {
		t.Errorf("worker environment lacks %s", want)
	}
	for _, k := range []string{"RBEE_WORKER_ID=" + w.ID, "RBEE_WORKER_TOKEN=", "RBEE_HIVE_URL=" + d.URL} {
		if !strings.Contains(string(env), k) {
			t.Errorf("worker environment lacks %s", k)
		}
	}

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cuda, reserved := 0, uint64(0)
	for _, dev := range st.Devices {
		if dev.Backend == "cuda" {
			cuda++
			if dev.Index == w.Device {
				reserved = dev.ReservedBytes
			}
		}
	}
	if cuda != 8 || reserved != vram || st.Workers["idle"] != 1 {
		t.Errorf("status: %d cuda devices, %d reserved on %d, workers %v; want 8, %d, idle 1", cuda, reserved, w.Device, st.Workers, vram)
	}
	m, err := c.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{`rbee_hive_workers_by_state{state="idle"} 1`, `rbee_hive_workers_total 1`, `rbee_hive_vram_total_bytes{device="cuda:`} {
		if !strings.Contains(string(m), line) {
			t.Errorf("metrics lack %s:\n%s", line, grepLines(string(m), "rbee_hive_"))
		}
	}

	if _, err := c.ShutdownWorker(ctx, client.ShutdownRequest{WorkerID: w.ID}); err != nil {
		t.Fatal(err)
	}
	st, err = c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, dev := range st.Devices {
		if dev.ReservedBytes != 0 {
			t.Errorf("device %s:%d still has %d bytes reserved after shutdown", dev.Backend, dev.Index, dev.ReservedBytes)
		}
	}
}
