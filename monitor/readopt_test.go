package monitor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
	"github.com/rbee-hive/rbee-hive/registry"
)

// TestReadoptProvisionsAgainAModelStillDownloading: the hive dies while a
// spawned worker's model downloads. The next hive provisions the model
// again (resuming what is on disk), reserves the worker's memory again and
// starts it as the spawn would have: no restart counted, no failure.
func TestReadoptProvisionsAgainAModelStillDownloading(t *testing.T) {
	h := newHarness(t, harnessOpts{stateDir: t.TempDir()})
	// The first download is cut half way and then stalls: the hive dies
	// meanwhile. The next request is served in full.
	if _, err := h.hub.AddRepo("acme/slow", &hubtest.File{Path: "m.gguf", Content: hubtest.Synthetic(5, 1<<20), LFS: true,
		Faults: hubtest.Faults{CutAfter: 512 << 10, CutTimes: 1, Stall: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	w, err := h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: "hf:acme/slow/m.gguf", Backend: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	reserved := h.reservedBytes()
	if w.PID != 0 || w.ModelPath != "" || reserved == 0 {
		t.Fatalf("spawn of a downloading model: %+v (reserved %d)", w, reserved)
	}
	// Spawn returns once the size is known, maybe before the content
	// request: let the cut response reach this hive, not the next one.
	waitUntil(t, "the first download to be cut", func() bool {
		for _, st := range h.prov.Active() {
			if st.ModelRef == w.ModelRef && st.BytesDone >= 512<<10 {
				return true
			}
		}
		return false
	})
	h.mon().Detach()
	h.mon().Close()
	h.reg.Close()
	h.prov.Close() // the download dies with the hive

	h.openProvisioner()
	h.openResources()
	h.openRegistry()
	h.newMonitor()
	if got := h.reservedBytes(); got != reserved {
		t.Fatalf("the next hive reserved %d, want %d", got, reserved)
	}
	r := h.waitReady(w.ID)
	if r.PID <= 0 || !strings.HasPrefix(r.ModelPath, h.prov.CacheDir()) || r.RestartCount != 0 || r.LastError != "" {
		t.Fatalf("ready record: %+v", r)
	}
}

// TestReadoptReservesWhatTheSpawnReserved: spawns by two catalog names of
// one model reserve each name's vram_bytes, while the model's own record
// knows one of them; the next hive, with a fresh ledger, reserves exactly
// what each reserved, for an adopted worker and for one it relaunches.
func TestReadoptReservesWhatTheSpawnReserved(t *testing.T) {
	const small, large = 1 << 20, 3 << 20
	h := newHarness(t, harnessOpts{stateDir: t.TempDir(), vram: small,
		catalog: []provisioner.CatalogEntry{{Name: "tiny-long-context", ModelRef: "{model}", VRAMBytes: large}}})
	var ws []registry.Worker
	for _, name := range []string{"tiny", "tiny-long-context"} {
		w, err := h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: name, Backend: "cpu"})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, h.waitReady(w.ID))
	}
	if got := h.reservedBytes(); got != small+large {
		t.Fatalf("reserved %d, want %d", got, small+large)
	}
	h.mon().Detach()
	h.mon().Close()
	h.reg.Close()
	// One dies while no hive runs: the next relaunches it.
	killGroup(ws[1].PID)
	waitUntil(t, "worker dead", func() bool { return pidGone(ws[1].PID) })
	reapOurChild(ws[1].PID)

	h.openResources()
	h.openRegistry()
	h.newMonitor()
	h.waitFor(ws[0].ID, "adopted", func(x registry.Worker) bool { return x.State == registry.StateIdle && x.PID == ws[0].PID })
	h.waitFor(ws[1].ID, "relaunched", func(x registry.Worker) bool {
		return x.State == registry.StateIdle && x.PID != 0 && x.PID != ws[1].PID
	})
	if got := h.reservedBytes(); got != small+large {
		t.Fatalf("the next hive reserved %d, want %d", got, small+large)
	}
	if r, _ := h.reg.Get(ws[1].ID); r.Process.ReservedBytes != large {
		t.Fatalf("relaunched record carries %d reserved bytes, want %d", r.Process.ReservedBytes, large)
	}
}
