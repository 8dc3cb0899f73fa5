package e2e

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// TestKill9DuringSpawnsAndRelaunches: the hive is killed with SIGKILL at a
// random instant while spawns are in flight and some workers crash and are
// relaunched, five times over, each next hive on the same state_dir. The kill
// may fall between a process's exec and the record of its pid; whatever the
// instant, every worker process must end up named by the next hive's records
// (or be gone), and stopping the last hive must leave no process behind.
// Stable workers make the check strict (an unnamed one would live on);
// crash-looping ones put relaunches in the window.
func TestKill9DuringSpawnsAndRelaunches(t *testing.T) {
	t.Parallel()
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	e := harness.New(t)
	stable := writeModel(t, e, "stable.gguf", 4096)
	crashing := writeModel(t, e, "crashing.gguf", 4096)
	writeKnobs(t, crashing, "knobs", "RBEE_REF_CRASH_AFTER=400ms")
	opts := harness.DaemonOptions{WorkerCommand: knobCommand(e), Config: map[string]any{
		"restart": map[string]any{"max_restarts": 1000,
			"backoff": map[string]any{"initial": "5ms", "max": "20ms", "jitter": 0}},
	}}
	d := e.StartDaemon(opts)
	for round := range 5 {
		c := d.Client()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var wg sync.WaitGroup
		for i := range 3 {
			ref := stable
			if i == 0 {
				ref = crashing
			}
			wg.Go(func() {
				// Answered or cut by the kill: either is fine here.
				_, _ = c.Spawn(ctx, client.SpawnRequest{ModelRef: ref, Backend: "cpu", RestartPolicy: "always"})
			})
		}
		time.Sleep(time.Duration(rng.IntN(120)) * time.Millisecond)
		d.Kill9()
		wg.Wait()
		cancel()

		opts.StateDir = d.StateDir
		d = e.StartDaemon(opts)
		checkNoUnnamedWorker(t, e, d.Client(), round)
	}
	if st := d.Stop(30 * time.Second); !st.Success() {
		t.Fatalf("SIGTERM exit %s", st)
	}
	waitNoWorkers(t, e, 10*time.Second)
}

// checkNoUnnamedWorker waits until every worker process alive now is named
// by a record of the hive behind c, or gone.
func checkNoUnnamedWorker(t *testing.T, e *harness.Env, c *client.Client, round int) {
	t.Helper()
	pending := map[int]harness.Proc{}
	for _, p := range e.WorkerProcs() {
		pending[p.PID] = p
	}
	ok := harness.Poll(20*time.Second, 20*time.Millisecond, func() bool {
		ws, err := c.ListWorkers(context.Background(), client.ListWorkersOptions{})
		if err != nil {
			return false
		}
		named := map[int]bool{}
		for _, w := range ws {
			named[w.PID] = true
		}
		for pid := range pending {
			if named[pid] || !harness.Alive(pid) {
				delete(pending, pid)
			}
		}
		return len(pending) == 0
	})
	if !ok {
		t.Fatalf("round %d: worker processes no record names: %+v", round, pending)
	}
}
