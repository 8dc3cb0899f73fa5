package e2e

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// knobCommand wraps the reference worker in a shell that reads its knobs
// (workertest's RBEE_REF_* variables) per model: "<model>.knobs" applies to
// every process of a worker, "<model>.once" only to the first process of
// each worker id (so a restart behaves). exec keeps the pid the hive sees.
func knobCommand(e *harness.Env) []string {
	script := `set -a; k="{model_path}.knobs"; if [ -f "$k" ]; then . "$k"; fi; ` +
		`o="{model_path}.once"; m="` + e.Path("once-{worker_id}") + `"; ` +
		`if [ -f "$o" ] && [ ! -e "$m" ]; then : > "$m"; . "$o"; fi; set +a; exec "$@"`
	return append([]string{"/bin/sh", "-c", script, "sh"}, harness.DefaultWorkerCommand(e.Bins.RefWorker)...)
}

// writeKnobs writes the knobs of a file: model (suffix "knobs" or "once").
func writeKnobs(t *testing.T, ref, suffix string, env ...string) {
	t.Helper()
	path := strings.TrimPrefix(ref, "file:") + "." + suffix
	if err := os.WriteFile(path, []byte(strings.Join(env, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCrashRestart: a worker that crashes is restarted by policy with a new
// process; with policy never it is marked failed and kept until shut down.
func TestCrashRestart(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d := e.StartDaemon(harness.DaemonOptions{WorkerCommand: knobCommand(e)})
	c := d.Client()
	ctx := ctxFor(t, 2*time.Minute)
	ref := writeModel(t, e, "crash.gguf", 4096)
	writeKnobs(t, ref, "once", "RBEE_REF_CRASH_AFTER=300ms", "RBEE_REF_EXIT_CODE=3")

	w := spawnReady(t, c, client.SpawnRequest{ModelRef: ref})
	if w.RestartPolicy != "on-failure" {
		t.Errorf("default restart policy %q, want on-failure", w.RestartPolicy)
	}
	r := waitWorker(t, c, w.ID, 30*time.Second, "restarted and ready", func(x client.Worker) bool {
		return x.RestartCount >= 1 && x.State == "idle"
	})
	if r.RestartCount != 1 || r.PID == w.PID || r.PID <= 0 {
		t.Fatalf("after one crash: restart_count %d pid %d (was %d), last_exit %+v, last_error %q; want 1 and a new pid", r.RestartCount, r.PID, w.PID, r.LastExit, r.LastError)
	}
	if r.LastExit == nil || r.LastExit.Code == nil || *r.LastExit.Code != 3 || r.LastExit.Reason != "error" {
		t.Errorf("last_exit %+v, want code 3 reason error", r.LastExit)
	}
	waitReaped(t, 5*time.Second, w.PID)
	if !harness.Alive(r.PID) {
		t.Fatalf("restarted worker pid %d not alive", r.PID)
	}
	hs, err := c.WorkersHealth(ctx, w.ID)
	if err != nil || len(hs) != 1 || hs[0].RestartCount != 1 || hs[0].LastExit == nil {
		t.Errorf("workers/health: %+v, %v", hs, err)
	}

	// Policy never: the crash is final.
	n := spawnReady(t, c, client.SpawnRequest{ModelRef: ref, RestartPolicy: "never"})
	f := waitWorker(t, c, n.ID, 30*time.Second, "failed", func(x client.Worker) bool { return x.State == "failed" })
	if f.RestartCount != 0 || f.LastError == "" {
		t.Errorf("failed worker %+v, want restart_count 0 and last_error", f)
	}
	waitReaped(t, 5*time.Second, n.PID)
	if _, err := c.ShutdownWorker(ctx, client.ShutdownRequest{WorkerID: n.ID}); err != nil {
		t.Errorf("shutdown of the failed worker: %v", err)
	}
	if res, err := c.ShutdownWorker(ctx, client.ShutdownRequest{WorkerID: w.ID}); err != nil || res.Outcome != "graceful" {
		t.Errorf("shutdown of the restarted worker: %+v, %v", res, err)
	}
	waitNoWorkers(t, e, 10*time.Second)
	m, err := c.Metrics(ctx)
	if err != nil || !strings.Contains(string(m), `rbee_hive_worker_restarts_total{reason="error"} 1`) {
		t.Errorf("metrics lack one restart for reason error (%v):\n%s", err, grepLines(string(m), "restarts"))
	}
}

// TestShutdownStopsEveryWorker: POST /v1/admin/shutdown and SIGTERM both
// stop every worker (and what the workers started, in their process
// groups) and exit 0.
func TestShutdownStopsEveryWorker(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"admin", "SIGTERM"} {
		t.Run(how, func(t *testing.T) {
			e := harness.New(t)
			d := e.StartDaemon(harness.DaemonOptions{Env: []string{"RBEE_REF_SPAWN_CHILD=1"}})
			c := d.Client()
			ctx := ctxFor(t, time.Minute)
			ref := writeModel(t, e, "m.gguf", 4096)
			var pids []int
			for range 3 {
				pids = append(pids, spawnReady(t, c, client.SpawnRequest{ModelRef: ref}).PID)
			}
			if procs := e.WorkerProcs(); len(procs) != 6 {
				t.Fatalf("want 3 workers and their 3 children alive, have %+v", procs)
			}
			switch how {
			case "admin":
				st, err := c.AdminShutdown(ctx)
				if err != nil || st.Status != "shutting_down" {
					t.Fatalf("admin shutdown: %+v, %v", st, err)
				}
			case "SIGTERM":
				if err := d.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
			st, err := d.Wait(30 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if !st.Success() {
				t.Fatalf("exit %s, want 0", st)
			}
			waitGone(t, 5*time.Second, pids...)
			waitNoWorkers(t, e, 5*time.Second)
			if !strings.Contains(d.Log(), "rbee-hive stopped") {
				t.Errorf("log lacks the final line")
			}
		})
	}
}

// TestKill9Readopt: the hive is killed with SIGKILL while workers run; they
// live on, and a new hive on the same state_dir re-adopts them (same pid,
// ready state), supervises them (a crash is noticed) and stops them.
func TestKill9Readopt(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d1 := e.StartDaemon(harness.DaemonOptions{})
	c1 := d1.Client()
	ref := writeModel(t, e, "m.gguf", 4096)
	w1 := spawnReady(t, c1, client.SpawnRequest{ModelRef: ref})
	w2 := spawnReady(t, c1, client.SpawnRequest{ModelRef: ref, RestartPolicy: "never"})

	d1.Kill9()
	for _, w := range []client.Worker{w1, w2} {
		if !harness.Alive(w.PID) {
			t.Fatalf("worker %d died with the hive", w.PID)
		}
	}

	d2 := e.StartDaemon(harness.DaemonOptions{StateDir: d1.StateDir, Port: d1.Port})
	c2 := d2.Client()
	ctx := ctxFor(t, time.Minute)
	for _, w := range []client.Worker{w1, w2} {
		r := waitWorker(t, c2, w.ID, 20*time.Second, "re-adopted", func(x client.Worker) bool { return x.State == "idle" })
		if r.PID != w.PID || r.URL != w.URL || r.ModelRef != ref {
			t.Errorf("re-adopted %s: %+v, want pid %d url %s", w.ID, r, w.PID, w.URL)
		}
	}
	// The new hive watches the adopted process: kill one, it is noticed.
	if err := syscall.Kill(w2.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	f := waitWorker(t, c2, w2.ID, 20*time.Second, "failed after SIGKILL", func(x client.Worker) bool { return x.State == "failed" })
	if f.LastExit == nil {
		t.Errorf("adopted worker killed: last_exit missing: %+v", f)
	}
	res, err := c2.ShutdownWorker(ctx, client.ShutdownRequest{WorkerID: w1.ID})
	if err != nil || res.Outcome != "graceful" {
		t.Fatalf("shutdown of the adopted worker: %+v, %v", res, err)
	}
	waitGone(t, 10*time.Second, w1.PID)
	if st := d2.Stop(30 * time.Second); !st.Success() {
		t.Fatalf("SIGTERM exit %s", st)
	}
	waitNoWorkers(t, e, 5*time.Second)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestReadoptDeadWorkers: workers that died while no hive was running are
// not adopted: the next hive hands them to their restart policy (on-failure
// restarts with a new process, never marks failed) and adopts the live one.
func TestReadoptDeadWorkers(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	d1 := e.StartDaemon(harness.DaemonOptions{})
	c1 := d1.Client()
	ref := writeModel(t, e, "m.gguf", 4096)
	live := spawnReady(t, c1, client.SpawnRequest{ModelRef: ref})
	again := spawnReady(t, c1, client.SpawnRequest{ModelRef: ref})
	never := spawnReady(t, c1, client.SpawnRequest{ModelRef: ref, RestartPolicy: "never"})
	d1.Kill9()
	for _, w := range []client.Worker{again, never} {
		if err := syscall.Kill(-w.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	waitGone(t, 5*time.Second, again.PID, never.PID)

	d2 := e.StartDaemon(harness.DaemonOptions{StateDir: d1.StateDir})
	c2 := d2.Client()
	if r := waitWorker(t, c2, live.ID, 20*time.Second, "re-adopted", func(x client.Worker) bool { return x.State == "idle" }); r.PID != live.PID {
		t.Errorf("live worker: pid %d, want %d re-adopted", r.PID, live.PID)
	}
	r := waitWorker(t, c2, again.ID, 20*time.Second, "restarted", func(x client.Worker) bool { return x.State == "idle" && x.RestartCount == 1 })
	if r.PID == again.PID || !harness.Alive(r.PID) {
		t.Errorf("on-failure worker dead while the hive was down: pid %d (was %d), want a new live process", r.PID, again.PID)
	}
	if f := waitWorker(t, c2, never.ID, 20*time.Second, "failed", func(x client.Worker) bool { return x.State == "failed" }); f.LastExit == nil {
		t.Errorf("never worker: %+v, want last_exit set", f)
	}
	if st := d2.Stop(30 * time.Second); !st.Success() {
		t.Fatalf("exit %s", st)
	}
	waitNoWorkers(t, e, 5*time.Second)
}
