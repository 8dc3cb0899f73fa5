package httpserver

import (
	"context"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/monitor"
	"github.com/rbee-hive/rbee-hive/shutdown"
)

// The daemon's real coordinator behind POST /v1/admin/shutdown: the request
// starts its drain (which stops the hive's live worker), health turns 503
// and spawns are refused.
func TestAdminShutdownDrivesCoordinator(t *testing.T) {
	var coord *shutdown.Coordinator
	st := newStack(t, stackOpts{lifecycle: func(mon *monitor.Monitor) Lifecycle {
		coord = shutdown.New(shutdown.Config{
			Timeout: 20 * time.Second,
			Signals: []os.Signal{syscall.SIGUSR2}, // leave the test's SIGINT alone
			Logger:  slog.New(slog.DiscardHandler),
		}, mon)
		return coord
	}})

	w, err := st.admin.Spawn(t.Context(), client.SpawnRequest{ModelRef: "tiny", Backend: "cpu", Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- coord.Run(context.Background()) }()

	if out, err := st.admin.AdminShutdown(t.Context()); err != nil || out.Status != "shutting_down" {
		t.Fatalf("admin shutdown: %v %+v", err, out)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the drain did not finish")
	}
	if coord.Reason() != "admin" {
		t.Fatalf("reason %q", coord.Reason())
	}
	if _, err := st.reg.Get(w.ID); err == nil {
		t.Fatal("the worker survived the drain")
	}
	h, err := st.admin.Health(t.Context())
	if err != nil || h.Status != "shutting_down" {
		t.Fatalf("health: %v %+v", err, h)
	}
	if _, err := st.admin.Spawn(t.Context(), client.SpawnRequest{ModelRef: "tiny", Backend: "cpu"}); apiCode(err) != CodeShuttingDown {
		t.Fatalf("spawn while shutting down: %v", err)
	}
}
