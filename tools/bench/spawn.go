package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/events"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// localModel writes a small model file into the harness's local_dirs and
// returns its file: reference.
func localModel(c *Ctx) string {
	dir := c.Env.Path("models")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.Fatalf("%v", err)
	}
	path := filepath.Join(dir, "tiny.gguf")
	if err := os.WriteFile(path, make([]byte, 4096), 0o644); err != nil {
		c.Fatalf("%v", err)
	}
	return "file:" + path
}

type workerRecord struct {
	ID string `json:"worker_id"`
}

func spawnBody(ref, policy string, wait bool) []byte {
	b, _ := json.Marshal(map[string]any{"model_ref": ref, "backend": "cpu", "restart_policy": policy, "wait": wait})
	return b
}

// stopWorker stops a worker through the API (not measured).
func stopWorker(c *Ctx, hc *http.Client, d *harness.Daemon, id string) {
	mustCall(c, hc, http.MethodPost, d.URL+"/v1/workers/shutdown", d.Token, fmt.Appendf(nil, `{"worker_id":%q}`, id), http.StatusOK)
}

// directWorker starts the reference worker the way the hive does (same
// flags, a log file for stdout and stderr, its own process group) but by
// itself, with a ready callback to a local listener.
type directWorker struct {
	c      *Ctx
	bin    string
	model  string
	logDir string
	hive   *httptest.Server
	ready  chan time.Time
	n      int
}

func newDirectWorker(c *Ctx, model string) *directWorker {
	dw := &directWorker{c: c, bin: c.Env.Bins.RefWorker, model: model, logDir: c.Env.Path("direct-logs"), ready: make(chan time.Time, 1024)}
	if err := os.MkdirAll(dw.logDir, 0o755); err != nil {
		c.Fatalf("%v", err)
	}
	dw.hive = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{}`))
		dw.ready <- at
	}))
	c.Env.TB.Cleanup(dw.hive.Close)
	return dw
}

// start starts one worker with the extra environment; its stdout and
// stderr go to log.
func (dw *directWorker) start(log string, env ...string) (*exec.Cmd, chan error) {
	dw.n++
	cmd := exec.Command(dw.bin, "--worker-id", "worker-direct-"+strconv.Itoa(dw.n), "--model", strings.TrimPrefix(dw.model, "file:"),
		"--model-ref", dw.model, "--backend", "cpu", "--device", "0", "--port", "0", "--callback-url", dw.hive.URL+"/v1/workers/ready")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "RBEE_WORKER_TOKEN=t", "RBEE_WORKER_ID=worker-direct", dw.c.Env.Marker()}, env...)
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		dw.c.Fatalf("%v", err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		dw.c.Fatalf("start %s: %v", dw.bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return cmd, exited
}

// benchSpawn (item 3) times spawn → ready through POST /v1/workers/spawn
// with wait (the hive provisions nothing: a local file), against starting
// the same reference worker directly and waiting for the same ready
// callback. Runs alternate.
func benchSpawn(c *Ctx) []Row {
	n := 100
	if c.Quick {
		n = 5
	}
	model := localModel(c)
	d := startDaemon(c, 0, 0, nil)
	hc := newHTTP()
	dw := newDirectWorker(c, model)
	viaHive := func() time.Duration {
		dur, b := mustCall(c, hc, http.MethodPost, d.URL+"/v1/workers/spawn", d.Token, spawnBody(model, "never", true), http.StatusOK)
		var w workerRecord
		if err := json.Unmarshal(b, &w); err != nil || w.ID == "" {
			c.Fatalf("spawn answer %s: %v", b, err)
		}
		stopWorker(c, hc, d, w.ID)
		return dur
	}
	direct := func() time.Duration {
		start := time.Now()
		cmd, exited := dw.start(filepath.Join(dw.logDir, "spawn.log"))
		var at time.Time
		select {
		case at = <-dw.ready:
		case err := <-exited:
			c.Fatalf("direct worker exited before ready: %v", err)
		case <-time.After(30 * time.Second):
			c.Fatalf("direct worker not ready in 30s")
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		return at.Sub(start)
	}
	viaHive() // warm-up: page cache of the binary, first connections
	direct()
	var hive, dir []time.Duration
	for i := range n {
		if i%2 == 0 {
			hive, dir = append(hive, viaHive()), append(dir, direct())
		} else {
			dir, hive = append(dir, direct()), append(hive, viaHive())
		}
	}
	return []Row{
		latencyRow(3, fmt.Sprintf("spawn → ready p50 (%d spawns, wait=true)", n), 50, hive, dir, "exec + ready callback",
			&Target{On: "added", Op: "<", Limit: 5}),
		latencyRow(3, "spawn → ready p99", 99, hive, dir, "exec + ready callback", nil),
	}
}

// benchCrash (item 4) lets a worker crash shortly after each ready and the
// hive relaunch it (policy always, backoff fixed at 1ms, no jitter). The
// worker stamps "rbee-ref exit" just before it exits and "rbee-ref start" as
// its first action; the hive's ready time comes from its event stream
// (ready_at of each transition to idle). Baseline: a plain loop that starts
// the worker again as soon as it was reaped, timed the same way.
func benchCrash(c *Ctx) []Row {
	n := 100
	if c.Quick {
		n = 8
	}
	const backoff = time.Millisecond
	const crashAfter = "30ms"
	model := localModel(c)
	d := startDaemon(c, 0, 0, map[string]any{
		"restart": map[string]any{"policy": "always", "max_restarts": 1000000, "window": "1h", "stable_after": "1h",
			"backoff": map[string]any{"initial": backoff.String(), "max": backoff.String(), "multiplier": 1, "jitter": 0}},
	}, "RBEE_REF_CRASH_AFTER="+crashAfter)
	hc := newHTTP()

	var mu sync.Mutex
	var readies []time.Time
	stream, err := d.Client().Watch(c.Context, events.WatchOptions{Buffer: 4096})
	if err != nil {
		c.Fatalf("watch events: %v", err)
	}
	defer stream.Close()
	go func() {
		for ev := range stream.Events() {
			if ev.Worker != nil && ev.To == "idle" && ev.Worker.ReadyAt != nil {
				mu.Lock()
				readies = append(readies, *ev.Worker.ReadyAt)
				mu.Unlock()
			}
		}
	}()
	_, b := mustCall(c, hc, http.MethodPost, d.URL+"/v1/workers/spawn", d.Token, spawnBody(model, "always", false), http.StatusAccepted)
	var w workerRecord
	if err := json.Unmarshal(b, &w); err != nil || w.ID == "" {
		c.Fatalf("spawn answer %s: %v", b, err)
	}
	waitFor(c, "relaunches", 5*time.Minute, 20*time.Millisecond, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(readies) > n+1
	})
	logPath := filepath.Join(d.WorkerLogDir(), w.ID+".log")
	hiveLog, err := os.ReadFile(logPath)
	if err != nil {
		c.Fatalf("worker log: %v", err)
	}
	stopWorker(c, hc, d, w.ID)
	mu.Lock()
	hiveReady := append([]time.Time(nil), readies...)
	mu.Unlock()
	hiveStart, hiveExit := lifeStamps(string(hiveLog))

	// The direct loop.
	dw := newDirectWorker(c, model)
	dlog := filepath.Join(dw.logDir, "crash.log")
	var dirReady []time.Time
	for range n + 2 {
		_, exited := dw.start(dlog, "RBEE_REF_CRASH_AFTER="+crashAfter)
		select {
		case at := <-dw.ready:
			dirReady = append(dirReady, at)
		case <-time.After(30 * time.Second):
			c.Fatalf("direct worker not ready in 30s")
		}
		<-exited
	}
	dlb, _ := os.ReadFile(dlog)
	dirStart, dirExit := lifeStamps(string(dlb))

	hRelaunch, hReady := gaps(hiveExit, hiveStart, hiveReady, backoff)
	dRelaunch, dReady := gaps(dirExit, dirStart, dirReady, 0)
	if len(hRelaunch) < n/2 || len(dRelaunch) < n/2 {
		c.Fatalf("too few relaunches matched: hive %d, direct %d (of %d)", len(hRelaunch), len(dRelaunch), n)
	}
	note := fmt.Sprintf("%d relaunches; worker crashes %s after ready; backoff %s subtracted", len(hRelaunch), crashAfter, backoff)
	relaunch := latencyRow(4, "crash → relaunched process p99", 99, hRelaunch, dRelaunch, "wait + exec loop",
		&Target{On: "measured", Op: "<", Limit: 20})
	relaunch.Note = note
	return []Row{
		relaunch,
		latencyRow(4, "crash → relaunched process p50", 50, hRelaunch, dRelaunch, "wait + exec loop", nil),
		latencyRow(4, "crash → ready again p99", 99, hReady, dReady, "wait + exec loop", nil),
	}
}

// lifeStamps reads the reference worker's "rbee-ref start|exit <unix ns>"
// lines.
func lifeStamps(log string) (starts, exits []time.Time) {
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "rbee-ref" {
			continue
		}
		ns, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			continue
		}
		switch f[1] {
		case "start":
			starts = append(starts, time.Unix(0, ns))
		case "exit":
			exits = append(exits, time.Unix(0, ns))
		}
	}
	return starts, exits
}

// gaps pairs each exit with the first start and the first ready after it,
// minus the backoff.
func gaps(exits, starts, readies []time.Time, backoff time.Duration) (relaunch, ready []time.Duration) {
	next := func(ts []time.Time, after time.Time) (time.Time, bool) {
		for _, t := range ts {
			if t.After(after) {
				return t, true
			}
		}
		return time.Time{}, false
	}
	for _, e := range exits {
		s, ok1 := next(starts, e)
		r, ok2 := next(readies, e)
		if !ok1 || !ok2 {
			continue
		}
		relaunch = append(relaunch, s.Sub(e)-backoff)
		ready = append(ready, r.Sub(e)-backoff)
	}
	return relaunch, ready
}
