package events

import (
	"context"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
)

// With the real provisioner (downloading from a loopback hub): its events
// reach the stream through Notify, and reset snapshots list its models.
func TestRealProvisioner(t *testing.T) {
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HF_HOME", t.TempDir())
	t.Setenv("HF_HUB_CACHE", "")
	hf, err := hubtest.New(hubtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hf.Close() })
	if _, err := hf.AddRepo("org/m", &hubtest.File{Path: "model.gguf", Content: hubtest.Synthetic(1, 4<<20), LFS: true}); err != nil {
		t.Fatal(err)
	}

	e := newEnv(t, Config{ProgressInterval: time.Millisecond})
	prov, err := provisioner.New(provisioner.Config{
		CacheDir: t.TempDir(),
		Endpoint: hf.URL(),
		DiskFree: func(string) (uint64, error) { return 1 << 40, nil },
		Notify:   e.hub.PublishProvisioner,
		Logger:   quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Close() })
	e.hub.SetProvisioner(prov)
	s := e.watch(t, WatchOptions{})

	const ref = "hf:org/m/model.gguf"
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := prov.Ensure(ctx, ref); err != nil {
		t.Fatal(err)
	}
	ev := next(t, s)
	if ev.Type != TypeProvisionStarted || ev.Provision == nil || ev.Provision.ModelRef != ref {
		t.Fatalf("first event %+v", ev)
	}
	id := ev.Provision.ID
	for ev.Type != TypeProvisionDone {
		ev = next(t, s)
		if ev.Type != TypeProvisionProgress && ev.Type != TypeProvisionDone || ev.Provision.ID != id {
			t.Fatalf("event %s for %+v", ev.Type, ev.Provision)
		}
	}
	if ev.Model == nil || ev.Model.SizeBytes != 4<<20 || ev.Provision.State != provisioner.StateReady {
		t.Fatalf("done: %+v %+v", ev.Provision, ev.Model)
	}

	snap := e.watch(t, WatchOptions{Snapshot: true})
	if r := next(t, snap); r.Type != TypeReset || len(r.Snapshot.Models) != 1 || r.Snapshot.Models[0].Ref != ref {
		t.Fatalf("reset %+v", r.Snapshot)
	}

	if _, err := prov.Evict(ref, nil); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, s); ev.Type != TypeModelEvicted || ev.Model == nil || ev.Model.Ref != ref {
		t.Fatalf("evict: %+v", ev)
	}
}
