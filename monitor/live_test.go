package monitor

import (
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/registry"
)

// supervisorGoroutines counts the goroutines with a supervisor's code on
// their stack, other than a probe in flight.
func supervisorGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "monitor.(*supervisor)") && !strings.Contains(g, "monitor.(*liveWatch).tick") {
			count++
		}
	}
	return count
}

// A live worker holds no goroutine: its probes run on a timer, its exit
// and a stop arrive as callbacks, and an exit is still restarted.
func TestLiveWorkersHoldNoGoroutine(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: func(c *Config) { c.HealthInterval = 20 * time.Millisecond }})
	var ws []registry.Worker
	for range 5 {
		ws = append(ws, h.spawn("always"))
	}
	for _, w := range ws {
		h.waitReady(w.ID)
	}
	waitUntil(t, "no supervisor goroutine while every worker is live", func() bool { return supervisorGoroutines() == 0 })
	// Probes go on: the observer sees no failure and the probe time moves.
	lastProbe := func() *time.Time {
		hs, err := h.mon().Health(ws[0].ID)
		if err != nil || len(hs) != 1 {
			t.Fatalf("health: %v, %d", err, len(hs))
		}
		return hs[0].LastProbeAt
	}
	first := lastProbe()
	waitUntil(t, "a later probe", func() bool {
		now := lastProbe()
		return now != nil && (first == nil || now.After(*first))
	})
	h.obs.mu.Lock()
	failures := h.obs.probeFailures
	h.obs.mu.Unlock()
	if failures != 0 {
		t.Errorf("%d probe failures of healthy workers", failures)
	}
	// (Checked before the kill: a probe in flight then may fail.)
	if err := syscall.Kill(ws[1].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	again := h.waitFor(ws[1].ID, "restart after kill -9", func(x registry.Worker) bool {
		return x.RestartCount == 1 && x.PID != ws[1].PID && x.State == registry.StateIdle
	})
	if again.LastExit == nil || again.LastExit.Signal != "SIGKILL" {
		t.Fatalf("last exit after kill -9: %+v", again.LastExit)
	}
	waitUntil(t, "no supervisor goroutine once the restarted worker is live", func() bool { return supervisorGoroutines() == 0 })
}
