package e2e

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/httpserver/events"
	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// TestProvisionProgressEvents provisions a 16 MiB LFS file from a hub that
// stalls and then cuts the first download: the caller sees one provision id
// for the same ref in flight, progress events on the provision's SSE stream
// ending in done, the hive's event stream announcing it, and the model
// cached (resumed with Range, hash verified).
func TestProvisionProgressEvents(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	hub := e.StartHub()
	const size = 16 << 20
	repo, err := hub.AddRepo("e2e/big", &hubtest.File{Path: "model.gguf", Content: hubtest.Synthetic(7, size), LFS: true,
		Faults: hubtest.Faults{Stall: 300 * time.Millisecond, CutAfter: 4 << 20, CutTimes: 1}})
	if err != nil {
		t.Fatal(err)
	}
	d := e.StartDaemon(harness.DaemonOptions{Config: map[string]any{"provisioner": map[string]any{"hf_endpoint": hub.URL()}}})
	c := d.Client()
	ctx := ctxFor(t, 2*time.Minute)

	stream, err := c.Watch(ctx, events.WatchOptions{Snapshot: true,
		Types: []string{events.TypeReset, events.TypeProvisionStarted, events.TypeProvisionDone, events.TypeProvisionFailed}})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if ev := nextEvent(t, stream); ev.Type != events.TypeReset {
		t.Fatalf("first event %s, want the reset snapshot", ev.Type)
	}

	ref := "hf:e2e/big/model.gguf"
	first, err := c.Provision(ctx, ref, false)
	if err != nil || first.Accepted == nil || first.Accepted.ProvisionID == "" {
		t.Fatalf("provision: %+v, %v; want 202 with an id", first, err)
	}
	id := first.Accepted.ProvisionID
	again, err := c.Provision(ctx, ref, false)
	if err != nil || again.Accepted == nil || again.Accepted.ProvisionID != id {
		t.Fatalf("same ref in flight: %+v, %v; want provision id %s", again, err, id)
	}

	es, err := c.ProvisionEvents(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer es.Close()
	var progress []client.ProvisionStatus
	var done *client.Model
	for {
		ev, err := es.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("provision events: %v", err)
		}
		switch ev.Type {
		case "progress":
			progress = append(progress, *ev.Status)
		case "done":
			done = ev.Model
		case "error":
			t.Fatalf("provision failed: %v", ev.Err)
		}
	}
	if len(progress) == 0 || done == nil {
		t.Fatalf("%d progress events and done %v; want progress then done", len(progress), done)
	}
	for i, p := range progress {
		if p.ProvisionID != id || p.ModelRef != ref {
			t.Errorf("progress %d: %+v", i, p)
		}
		if i > 0 && p.BytesDone < progress[i-1].BytesDone {
			t.Errorf("progress went back: %d then %d", progress[i-1].BytesDone, p.BytesDone)
		}
	}
	if done.ModelRef != ref || done.SizeBytes != size || done.SHA256 != repo.File("model.gguf").SHA256() {
		t.Errorf("done %+v, want %d bytes with sha256 %s", done, size, repo.File("model.gguf").SHA256())
	}
	st, err := c.ProvisionStatus(ctx, id)
	if err != nil || st.State != "ready" || st.BytesDone != size || st.BytesTotal != size {
		t.Errorf("status after done: %+v, %v", st, err)
	}
	if len(hub.Stats().Ranges) == 0 {
		t.Errorf("the cut download was not resumed with Range")
	}
	cached, err := c.Provision(ctx, ref, false)
	if err != nil || cached.Model == nil || cached.Model.SizeBytes != size {
		t.Errorf("provision of a cached model: %+v, %v; want 200 with the model", cached, err)
	}
	if _, err := c.ProvisionEvents(ctx, "prov-unknown"); !client.IsCode(err, "PROVISION_NOT_FOUND") {
		t.Errorf("events of an unknown provision: %v", err)
	}

	var seen []string
	for len(seen) < 2 {
		ev := nextEvent(t, stream)
		if ev.Provision != nil && ev.Provision.ModelRef == ref {
			seen = append(seen, ev.Type)
		}
	}
	if seen[0] != events.TypeProvisionStarted || seen[1] != events.TypeProvisionDone {
		t.Errorf("event stream for %s: %v, want started then done", ref, seen)
	}
}

// TestWorkerEvents: GET /v1/events announces a worker's registration, its
// state changes and its removal, in order.
func TestWorkerEvents(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{})
	c := d.Client()
	ctx := ctxFor(t, time.Minute)
	stream, err := c.Watch(ctx, events.WatchOptions{Snapshot: true})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if ev := nextEvent(t, stream); ev.Type != events.TypeReset {
		t.Fatalf("first event %s, want reset", ev.Type)
	}
	w := spawnReady(t, c, client.SpawnRequest{ModelRef: writeModel(t, e, "m.gguf", 4096)})
	if _, err := c.ShutdownWorker(ctx, client.ShutdownRequest{WorkerID: w.ID}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		ev := nextEvent(t, stream)
		if ev.WorkerID() != w.ID {
			continue
		}
		s := ev.Type
		if ev.Type == events.TypeWorkerStateChanged {
			s += ":" + string(ev.From) + "->" + string(ev.To)
		}
		got = append(got, s)
		if ev.Type == events.TypeWorkerRemoved {
			break
		}
	}
	want := []string{events.TypeWorkerRegistered, "worker_state_changed:loading->idle",
		"worker_state_changed:idle->stopping", events.TypeWorkerRemoved}
	if len(got) != len(want) {
		t.Fatalf("events for %s: %v, want %v", w.ID, got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events for %s: %v, want %v", w.ID, got, want)
		}
	}
}

func nextEvent(t *testing.T, s *events.Stream) events.Event {
	t.Helper()
	select {
	case ev, ok := <-s.Events():
		if !ok {
			t.Fatalf("event stream ended: %v", s.Err())
		}
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no event for 30s")
	}
	panic("unreachable")
}
