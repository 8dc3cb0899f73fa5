package monitor

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rbee-hive/rbee-hive/registry"
)

// TestReadoptKillsTheProcessOfAnUnrecordedSpawn: the hive dies after a
// spawn's exec and before its record is written. No record names the
// worker; its spawn marker does, and the next hive finds the process (and
// its child, which carries the same environment) and kills them.
func TestReadoptKillsTheProcessOfAnUnrecordedSpawn(t *testing.T) {
	state := t.TempDir()
	h := newHarness(t, harnessOpts{stateDir: state, env: []string{"RBEE_REF_SPAWN_CHILD=1"}})
	var orphan atomic.Int64
	h.mon().testHookAfterExec = func(_ string, pid int) bool {
		orphan.Store(int64(pid))
		return true
	}
	_, err := h.mon().Spawn(context.Background(), SpawnRequest{ModelRef: h.modelRef, Backend: "cpu"})
	if !errors.Is(err, errSimulatedCrash) {
		t.Fatalf("spawn = %v, want the simulated crash", err)
	}
	pid := int(orphan.Load())
	if pid <= 0 || pidGone(pid) {
		t.Fatalf("the worker's process (%d) should be running", pid)
	}
	markers, _ := filepath.Glob(filepath.Join(h.cfg.LogDir, ".*.spawning"))
	if len(markers) != 1 {
		t.Fatalf("spawn markers %v, want one", markers)
	}
	// Its child, in its group, with its environment.
	var child int
	waitUntil(t, "the worker's child", func() bool {
		b, _ := os.ReadFile(filepath.Join(h.cfg.LogDir, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(markers[0]), "."), ".spawning")+".log"))
		for line := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(line, "rbee-ref child "); ok {
				child, _ = strconv.Atoi(strings.TrimSpace(rest))
			}
		}
		return child > 0
	})

	h.mon().Close()
	h.reg.Close()
	if h.reg.Len() != 0 {
		t.Fatal("a record exists: not the window under test")
	}
	h.openRegistry()
	h.newMonitor()
	if h.mon().procScans.Load() != 1 {
		t.Fatalf("%d scans of /proc, want 1", h.mon().procScans.Load())
	}
	waitUntil(t, "the unrecorded worker killed", func() bool { return pidGone(pid) && groupGone(pid) && pidGone(child) })
	if markers, _ := filepath.Glob(filepath.Join(h.cfg.LogDir, ".*.spawning")); len(markers) != 0 {
		t.Fatalf("spawn markers left: %v", markers)
	}
	if h.reg.Len() != 0 {
		t.Fatalf("records: %+v", h.reg.List(registry.Filter{}))
	}
}

// TestReadoptAdoptsTheProcessOfAnUnrecordedRelaunch: the hive dies after a
// relaunch's exec and before the new pid is written. The record names the
// ended process; the next hive finds the new one by its worker id, adopts
// it (pid, start time and token recorded again) and supervises it.
func TestReadoptAdoptsTheProcessOfAnUnrecordedRelaunch(t *testing.T) {
	state := t.TempDir()
	h := newHarness(t, harnessOpts{stateDir: state})
	var armed atomic.Bool
	var relaunched atomic.Int64
	h.mon().testHookAfterExec = func(_ string, pid int) bool {
		if !armed.Load() {
			return false
		}
		relaunched.Store(int64(pid))
		return true
	}
	w := h.spawn("always")
	h.waitReady(w.ID)
	armed.Store(true)
	killGroup(w.PID)
	waitUntil(t, "the relaunch", func() bool { return relaunched.Load() != 0 })
	pid := int(relaunched.Load())
	// What the disk holds at this moment is what a new hive would read.
	snap, err := os.ReadFile(filepath.Join(state, "workers.json"))
	if err != nil {
		t.Fatal(err)
	}
	h.mon().Close()
	h.reg.Close()
	reapOurChild(w.PID)
	// The new process gets ready meanwhile (its callback goes nowhere).
	waitUntil(t, "the relaunched process to serve", func() bool {
		resp, err := http.Get(w.URL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	h.stateDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(h.stateDir, "workers.json"), snap, 0o600); err != nil {
		t.Fatal(err)
	}
	h.openRegistry()
	before, err := h.reg.Get(w.ID)
	if err != nil || before.PID == pid {
		t.Fatalf("the file names the new process already: %+v %v", before, err)
	}
	h.newMonitor()
	if h.mon().procScans.Load() != 1 {
		t.Fatalf("%d scans of /proc, want 1", h.mon().procScans.Load())
	}
	got := h.waitFor(w.ID, "adopted", func(x registry.Worker) bool { return x.State == registry.StateIdle })
	if got.PID != pid {
		t.Fatalf("record pid %d, want the relaunched process %d: %+v", got.PID, pid, got)
	}
	if st, _ := procStartTime(pid); got.Process.StartTime != st || got.Process.PGID != pid {
		t.Fatalf("record process %+v, want start time %d", got.Process, st)
	}
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	if !h.mon().AuthenticateWorker(w.ID, envValue(env, "RBEE_WORKER_TOKEN")) {
		t.Fatal("the adopted process's token does not authenticate")
	}
	// Supervised: its exit is seen and the worker relaunched.
	killGroup(pid)
	h.waitFor(w.ID, "relaunched by the new hive", func(x registry.Worker) bool {
		return x.State == registry.StateIdle && x.PID != 0 && x.PID != pid
	})
	reapOurChild(pid)
}

// TestReadoptWithEveryProcessAliveReadsNoProc: an ordinary restart, every
// recorded process alive, does not scan /proc.
func TestReadoptWithEveryProcessAliveReadsNoProc(t *testing.T) {
	h := newHarness(t, harnessOpts{stateDir: t.TempDir()})
	w := h.spawn("")
	h.waitReady(w.ID)
	h.mon().Detach()
	h.mon().Close()
	h.reg.Close()
	h.openRegistry()
	h.newMonitor()
	if n := h.mon().procScans.Load(); n != 0 {
		t.Fatalf("%d scans of /proc, want none", n)
	}
	if got := h.waitFor(w.ID, "adopted", func(x registry.Worker) bool { return x.State == registry.StateIdle }); got.PID != w.PID {
		t.Fatalf("adopted %+v, want pid %d", got, w.PID)
	}
}

func TestEnvValue(t *testing.T) {
	env := []byte("A=1\x00RBEE_WORKER_ID=x\x00RBEE_WORKER_IDX=y\x00RBEE_WORKER_ID=w-2\x00")
	if got := envValue(env, "RBEE_WORKER_ID"); got != "w-2" {
		t.Fatalf("envValue = %q", got)
	}
	if got := envValue(env, "B"); got != "" {
		t.Fatalf("envValue of a missing key = %q", got)
	}
}

// BenchmarkSpawnMarker is what the spawn marker adds to a persistent
// spawn: the link before the exec and the unlink after the record.
func BenchmarkSpawnMarker(b *testing.B) {
	h := newHarness(b, harnessOpts{stateDir: b.TempDir()})
	logPath := h.mon().logPathFor("w")
	f, err := openLog(logPath)
	if err != nil {
		b.Fatal(err)
	}
	f.Close()
	for b.Loop() {
		if err := h.mon().writeMarker("w", logPath); err != nil {
			b.Fatal(err)
		}
		h.mon().removeMarker("w")
	}
}

// TestReadoptKillsWhatAnEndedWorkerLeftBehind: a worker dies while no hive
// runs and leaves its child (in its group, with its environment) running.
// The next hive finds the child by the worker's id, kills it, and
// relaunches the worker.
func TestReadoptKillsWhatAnEndedWorkerLeftBehind(t *testing.T) {
	h := newHarness(t, harnessOpts{stateDir: t.TempDir(), env: []string{"RBEE_REF_SPAWN_CHILD=1"}})
	w := h.spawn("on-failure")
	h.waitReady(w.ID)
	child := childPID(t, h, w.ID)
	h.mon().Detach()
	h.mon().Close()
	h.reg.Close()
	if err := syscallKill(w.PID); err != nil { // the worker only, not its group
		t.Fatal(err)
	}
	waitUntil(t, "worker dead", func() bool { return pidGone(w.PID) })
	reapOurChild(w.PID)
	if pidGone(child) {
		t.Fatal("the worker's child should outlive it")
	}

	h.openRegistry()
	h.newMonitor()
	waitUntil(t, "the left-behind child killed", func() bool { return pidGone(child) })
	h.waitFor(w.ID, "relaunched", func(x registry.Worker) bool {
		return x.State == registry.StateIdle && x.PID != 0 && x.PID != w.PID
	})
}

func TestDescendantOf(t *testing.T) {
	self := os.Getpid()
	if !descendantOf(self, self) || !descendantOf(self, os.Getppid()) || descendantOf(os.Getppid(), self) {
		t.Fatal("descendantOf is wrong about this process and its parent")
	}
}
