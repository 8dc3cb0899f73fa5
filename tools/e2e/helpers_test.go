package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// ctxFor bounds one test step.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// writeModel puts a model file of size bytes into the Env's local model
// directory (provisioner.local_dirs) and returns its file: reference.
func writeModel(t *testing.T, e *harness.Env, name string, size int) string {
	t.Helper()
	path := e.Path("models", name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i * 31)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return "file:" + path
}

// spawnReady spawns a cpu worker with wait and checks it came back ready.
func spawnReady(t *testing.T, c *client.Client, req client.SpawnRequest) client.Worker {
	t.Helper()
	req.Backend, req.Wait = "cpu", true
	w, err := c.Spawn(ctxFor(t, 60*time.Second), req)
	if err != nil {
		t.Fatalf("spawn %s: %v", req.ModelRef, err)
	}
	if w.State != "idle" || w.PID <= 0 {
		t.Fatalf("spawn %s with wait: state %s pid %d, want idle with a pid", req.ModelRef, w.State, w.PID)
	}
	return w
}

// waitWorker polls the worker list until cond holds for the worker with id
// and returns that record.
func waitWorker(t *testing.T, c *client.Client, id string, timeout time.Duration, what string, cond func(client.Worker) bool) client.Worker {
	t.Helper()
	var last client.Worker
	var lastErr error
	ok := harness.Poll(timeout, 10*time.Millisecond, func() bool {
		ws, err := c.ListWorkers(context.Background(), client.ListWorkersOptions{})
		if err != nil {
			lastErr = err
			return false
		}
		for _, w := range ws {
			if w.ID == id {
				last = w
				return cond(w)
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("worker %s: not %s after %s (last record %+v, last error %v)", id, what, timeout, last, lastErr)
	}
	return last
}

// waitGone fails the test unless every pid is gone (or a zombie, which its
// parent reaps) within timeout.
func waitGone(t *testing.T, timeout time.Duration, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if !harness.Poll(timeout, 10*time.Millisecond, func() bool { return !harness.Alive(pid) }) {
			p, _ := harness.ReadProc(pid)
			t.Fatalf("process %d (%s) still alive after %s", pid, p.Cmdline, timeout)
		}
	}
}

// waitReaped fails the test unless every pid is gone from /proc, zombie
// included, within timeout: for processes whose parent is a live hive,
// which must reap them.
func waitReaped(t *testing.T, timeout time.Duration, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if !harness.Poll(timeout, 10*time.Millisecond, func() bool { _, ok := harness.ReadProc(pid); return !ok }) {
			p, _ := harness.ReadProc(pid)
			t.Fatalf("process %d (state %c, parent %d) not reaped after %s", pid, p.State, p.PPID, timeout)
		}
	}
}

// waitNoWorkers fails unless no process of the Env but its daemons and hub
// servers is alive within timeout: no worker, no child of a worker.
func waitNoWorkers(t *testing.T, e *harness.Env, timeout time.Duration) {
	t.Helper()
	var left []harness.Proc
	if !harness.Poll(timeout, 10*time.Millisecond, func() bool {
		left = e.WorkerProcs()
		return len(left) == 0
	}) {
		t.Fatalf("processes still alive after %s: %+v", timeout, left)
	}
}
