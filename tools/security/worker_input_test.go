package security

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// TestNegativeVRAMFromWorkers: a worker cannot put a negative vram_bytes
// in its record, neither through its ready callback nor its heartbeat
// (400 INVALID_REQUEST naming the field).
func TestNegativeVRAMFromWorkers(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{})
	model := e.Path("models", "m.gguf")
	os.MkdirAll(filepath.Dir(model), 0o755)
	if err := os.WriteFile(model, make([]byte, 1024), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := d.Client().Spawn(ctx, client.SpawnRequest{ModelRef: "file:" + model, Backend: "cpu", Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		body map[string]any
	}{
		{"/v1/workers/ready", map[string]any{"worker_id": w.ID, "url": w.URL, "model_ref": w.ModelRef, "backend": "cpu", "device": 0, "vram_bytes": -5}},
		{"/v1/heartbeat", map[string]any{"worker_id": w.ID, "vram_bytes": -5}},
	} {
		r := d.Request("POST", c.path, c.body)
		var env envelope
		r.JSON(t, &env)
		if r.Status != 400 || env.Error.Code != "INVALID_REQUEST" || env.Error.Details["field"] != "vram_bytes" {
			t.Errorf("POST %s with vram_bytes -5: %d %s, want 400 naming vram_bytes", c.path, r.Status, r.Body)
		}
	}
	ws, err := d.Client().ListWorkers(ctx, client.ListWorkersOptions{})
	if err != nil || len(ws) != 1 || ws[0].VRAMBytes < 0 {
		t.Fatalf("record after the reports: %+v %v", ws, err)
	}
}
