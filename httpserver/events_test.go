package httpserver

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/httpserver/events"
	"github.com/rbee-hive/rbee-hive/registry"
)

// The events hub mounted at GET /v1/events streams through the whole
// middleware stack (auth, logging recorders, echo) and the client's Watch.
func TestEventsThroughServer(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	runDone := make(chan error, 1)
	var hub *events.Hub
	h := newHarness(t, func(c *Config) {
		hub = events.New(events.Config{Registry: c.Registry})
		c.Events = hub
	})
	go func() { runDone <- hub.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-runDone
	})

	var se *events.StatusError
	if _, err := client.New(h.srv.URL, "wrong").Watch(ctx, events.WatchOptions{}); !errors.As(err, &se) || se.Status != 401 {
		t.Fatalf("Watch with a wrong token: %v", err)
	}

	stream, err := client.New(h.srv.URL, testToken).Watch(ctx, events.WatchOptions{Types: []string{events.TypeWorkerRegistered}})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	// The hub's registry watch starts asynchronously (Run), so register
	// workers until one comes through.
	registered := map[string]bool{}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(10 * time.Second)
	for i := 0; ; {
		select {
		case <-tick.C:
			id := fmt.Sprintf("worker-00000000-0000-4000-8000-%012d", i)
			i++
			if _, err := h.reg.Register(registry.Worker{ID: id, ModelRef: "hf:a/b", Backend: "cpu"}); err != nil {
				t.Fatal(err)
			}
			registered[id] = true
		case ev, ok := <-stream.Events():
			if !ok {
				t.Fatalf("stream closed: %v", stream.Err())
			}
			if ev.Type != events.TypeWorkerRegistered || !registered[ev.WorkerID()] {
				t.Fatalf("unexpected event %+v", ev)
			}
			return
		case <-timeout:
			t.Fatal("no worker_registered event through GET /v1/events")
		}
	}
}
