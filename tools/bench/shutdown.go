package bench

import (
	"fmt"
	"syscall"
	"time"
)

// benchShutdown (item 6, and item 7's probe CPU) runs reference workers
// that take 1 s to exit after POST /v1/shutdown, probed every second.
//   - CPU: the daemon's user+system time (/proc/<pid>/stat) over a window
//     with the workers, against the same window with none.
//   - Shutdown: SIGTERM to the daemon until it was reaped, against stopping
//     one such worker through POST /v1/workers/shutdown on the same daemon
//     (the 1 s floor plus one stop sequence).
func benchShutdown(c *Ctx) []Row {
	n, window := 100, 10*time.Second
	if c.Quick {
		n, window = 20, 3*time.Second
	}
	model := localModel(c)
	d := startDaemon(c, 21500, 21500+n+100, map[string]any{
		"health":   map[string]any{"interval": "1s", "timeout": "1s", "failure_threshold": 3},
		"worker":   map[string]any{"grace": "5s"},
		"shutdown": map[string]any{"timeout": "20s"},
	}, "RBEE_REF_SHUTDOWN_DELAY=1s")
	hc := newHTTP()
	pid := d.PID()
	cpuOver := func() float64 {
		before, err := cpuTime(pid)
		if err != nil {
			c.Fatalf("cpu: %v", err)
		}
		t0 := time.Now()
		time.Sleep(window)
		after, _ := cpuTime(pid)
		return float64(after-before) / float64(time.Since(t0)) * 100
	}
	time.Sleep(time.Second)
	idleCPU := cpuOver()

	ids := spawnMany(c, hc, d, model, 1, 1, true)
	t0 := time.Now()
	stopWorker(c, hc, d, ids[0])
	one := time.Since(t0)

	c.Logf("spawning %d reference workers", n)
	spawnMany(c, hc, d, model, n, 8, true)
	time.Sleep(2 * time.Second) // the first probes are spread over one interval
	probeCPU := cpuOver()
	h := d.Client()
	hs, err := h.WorkersHealth(c.Context, "")
	if err != nil {
		c.Fatalf("workers health: %v", err)
	}
	healthy := 0
	for _, w := range hs {
		if w.Healthy && w.LastProbeAt != nil {
			healthy++
		}
	}
	if healthy < n {
		c.Fatalf("%d of %d workers probed healthy", healthy, n)
	}

	t0 = time.Now()
	if err := d.Signal(syscall.SIGTERM); err != nil {
		c.Fatalf("SIGTERM: %v", err)
	}
	st, err := d.Wait(60 * time.Second)
	total := time.Since(t0)
	if err != nil {
		c.Fatalf("%v", err)
	}
	if !st.Success() {
		c.Fatalf("rbee-hive exited with %s", st)
	}
	if left := c.Env.WorkerProcs(); len(left) > 0 {
		c.Fatalf("%d worker processes left after shutdown", len(left))
	}
	return []Row{{
		Item: 6, Name: fmt.Sprintf("SIGTERM → exit, %d workers each 1 s to exit", n), Unit: "ms",
		Measured: ms(total), Baseline: ms(one), BaselineName: "one such worker stopped via API", Compare: CompareRatio,
		Target: &Target{On: "measured", Op: "<", Limit: 1500},
	}, {
		Item: 7, Name: fmt.Sprintf("daemon CPU probing %d workers every 1 s (%% of one core)", n), Unit: "%",
		Measured: probeCPU, Baseline: idleCPU, BaselineName: "no workers", Compare: CompareAdded,
		Target: &Target{On: "measured", Op: "<", Limit: 2},
		Note:   fmt.Sprintf("user+system time of the daemon over %s windows (10 ms ticks)", window),
	}}
}
