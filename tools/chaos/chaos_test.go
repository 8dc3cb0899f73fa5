// Package chaos runs the real rbee-hive binary with twenty reference
// workers of mixed restart policies and injects faults for a bounded time:
// SIGKILL, SIGSTOP (a hung worker) and a crash at the next start, while
// other workers are spawned and stopped concurrently through the API. Then
// it checks, from the API and /proc, that the hive's view matches the
// machine: the registry lists exactly the processes that exist, every
// death was seen and restarted by policy, no zombie, no orphaned process
// group, no leaked port or memory reservation, and the hive's goroutines
// and open files are back to their baseline.
//
// RBEE_CHAOS_DURATION sets the fault phase (default 8s; the README's
// figures use 60s), RBEE_CHAOS_SEED the random seed (default: the time).
package chaos

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// Fault kinds.
const (
	faultKill       = "sigkill"
	faultHang       = "sigstop"
	faultCrashStart = "crash_at_start"
)

// target is one of the twenty workers faults are injected into.
type target struct {
	id, policy string
	deaths     int          // process deaths caused (each one a restart for always/on-failure)
	faulted    map[int]bool // pids already hit
	faults     int
}

func (tg *target) restartable() bool { return tg.policy != "never" }

// expectedRestarts is what restart_count must say at the end.
func (tg *target) expectedRestarts() int {
	if !tg.restartable() {
		return 0
	}
	return tg.deaths
}

func duration(t *testing.T) time.Duration {
	if s := os.Getenv("RBEE_CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("RBEE_CHAOS_DURATION: %v", err)
		}
		return min(d, 10*time.Minute)
	}
	return 8 * time.Second
}

func TestChaos(t *testing.T) {
	dur := duration(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("RBEE_CHAOS_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	t.Logf("chaos: %s of faults, seed %d (RBEE_CHAOS_SEED=%d reproduces the choices)", dur, seed, seed)

	e := harness.New(t)
	crashDir := e.Path("crash")
	if err := os.MkdirAll(crashDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A worker whose crash file exists exits at once, before it is ready
	// (once: the file is removed).
	script := `m="` + crashDir + `/{worker_id}"; if [ -e "$m" ]; then rm -f "$m"; echo "chaos: crash at start" >&2; exit 3; fi; exec "$@"`
	command := append([]string{"/bin/sh", "-c", script, "sh"}, harness.DefaultWorkerCommand(e.Bins.RefWorker)...)
	d := e.StartDaemon(harness.DaemonOptions{WorkerCommand: command, Config: map[string]any{
		"health":  map[string]any{"interval": "200ms", "timeout": "1s", "failure_threshold": 3}, // no spurious unhealthy restart on a loaded CI machine
		"worker":  map[string]any{"grace": "200ms", "ready_timeout": "20s"},
		"restart": map[string]any{"max_restarts": 100000, "window": "10m", "backoff": map[string]any{"initial": "20ms", "max": "200ms", "jitter": 0.2}},
	}})
	c := d.Client()
	ctx, cancel := context.WithTimeout(context.Background(), dur+5*time.Minute)
	defer cancel()
	model := e.Path("models", "chaos.gguf")
	if err := os.MkdirAll(filepath.Dir(model), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(model, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := "file:" + model

	baseG, baseFD := hiveLoad(t, d, c)
	t.Logf("baseline: %d goroutines, %d open files", baseG, baseFD)

	// Twenty workers, policies mixed, started concurrently.
	policies := []string{"always", "on-failure", "never"}
	targets := make([]*target, 20)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range targets {
		targets[i] = &target{policy: policies[i%3], faulted: map[int]bool{}}
		wg.Add(1)
		go func(tg *target) {
			defer wg.Done()
			w, err := c.Spawn(ctx, client.SpawnRequest{ModelRef: ref, Backend: "cpu", RestartPolicy: tg.policy, Wait: true})
			if err != nil {
				errs <- err
				return
			}
			tg.id = w.ID
		}(targets[i])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("spawn: %v", err)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	perWorker := st.Devices[0].ReservedBytes / 20
	if perWorker == 0 || st.Devices[0].ReservedBytes%20 != 0 {
		t.Fatalf("cpu reservation %d for 20 workers of one model", st.Devices[0].ReservedBytes)
	}
	byID := map[string]*target{}
	for _, tg := range targets {
		byID[tg.id] = tg
	}

	// Churn: extra workers spawned and stopped through the API meanwhile.
	churnCtx, stopChurn := context.WithCancel(ctx)
	var churn struct {
		sync.Mutex
		spawned, stopped int
		errs             []string
	}
	var churnWG sync.WaitGroup
	churnWG.Add(1)
	go func() {
		defer churnWG.Done()
		crng := rand.New(rand.NewPCG(seed+1, seed+2))
		var live []string
		for churnCtx.Err() == nil {
			if len(live) < 5 && crng.IntN(2) == 0 {
				w, err := c.Spawn(churnCtx, client.SpawnRequest{ModelRef: ref, Backend: "cpu", RestartPolicy: policies[crng.IntN(3)]})
				churn.Lock()
				if err == nil {
					churn.spawned++
					live = append(live, w.ID)
				} else if churnCtx.Err() == nil {
					churn.errs = append(churn.errs, "spawn: "+err.Error())
				}
				churn.Unlock()
			} else if len(live) > 0 {
				i := crng.IntN(len(live))
				id := live[i]
				live = append(live[:i], live[i+1:]...)
				res, err := c.ShutdownWorker(ctx, client.ShutdownRequest{WorkerID: id, TimeoutS: 0.2})
				churn.Lock()
				if err == nil && res.Outcome != "" {
					churn.stopped++
				} else {
					churn.errs = append(churn.errs, fmt.Sprintf("stop %s: %+v %v", id, res, err))
				}
				churn.Unlock()
			}
			time.Sleep(time.Duration(50+crng.IntN(200)) * time.Millisecond)
		}
	}()

	// Faults.
	injected := map[string]int{}
	var stopped []int
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		ws, err := c.ListWorkers(ctx, client.ListWorkersOptions{})
		if err != nil {
			t.Fatalf("list during chaos: %v", err)
		}
		var cand []client.Worker
		for _, w := range ws {
			tg := byID[w.ID]
			if tg == nil || w.State != "idle" || w.PID <= 0 || tg.faulted[w.PID] || (!tg.restartable() && tg.faults > 0) {
				continue
			}
			cand = append(cand, w)
		}
		if len(cand) > 0 {
			w := cand[rng.IntN(len(cand))]
			tg := byID[w.ID]
			tg.faulted[w.PID] = true
			tg.faults++
			kind := []string{faultKill, faultHang, faultCrashStart}[rng.IntN(3)]
			switch kind {
			case faultKill:
				err = syscall.Kill(w.PID, syscall.SIGKILL)
				tg.deaths++
			case faultHang:
				err = syscall.Kill(w.PID, syscall.SIGSTOP)
				stopped = append(stopped, w.PID)
				tg.deaths++
			case faultCrashStart:
				if tg.restartable() {
					if err := os.WriteFile(filepath.Join(crashDir, w.ID), nil, 0o644); err != nil {
						t.Fatal(err)
					}
					tg.deaths++ // the crash at start is one more death
				}
				err = syscall.Kill(w.PID, syscall.SIGKILL)
				tg.deaths++
			}
			if err != nil {
				t.Fatalf("%s %d: %v", kind, w.PID, err)
			}
			injected[kind]++
		}
		time.Sleep(time.Duration(20+rng.IntN(120)) * time.Millisecond)
	}
	stopChurn()
	churnWG.Wait()
	t.Cleanup(func() { // a hung worker never outlives the test
		for _, pid := range stopped {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	})

	// Quiescence: every target is where its policy says, nothing moving.
	var last []client.Worker
	var lost []string
	settled := harness.Poll(2*time.Minute, 50*time.Millisecond, func() bool {
		ws, err := c.ListWorkers(ctx, client.ListWorkersOptions{})
		if err != nil {
			return false
		}
		last = ws
		lost = lost[:0]
		for _, w := range ws {
			switch w.State {
			case "idle", "busy", "failed":
			default:
				lost = append(lost, fmt.Sprintf("%s %s", w.ID, w.State))
				continue
			}
			tg := byID[w.ID]
			if tg == nil {
				continue
			}
			wantState := "idle"
			if !tg.restartable() && tg.faults > 0 {
				wantState = "failed"
			}
			if string(w.State) != wantState || w.RestartCount != tg.expectedRestarts() {
				lost = append(lost, fmt.Sprintf("%s (%s, %d faults): %s after %d restarts, want %s after %d (last_exit %+v, last_error %q)",
					w.ID, tg.policy, tg.faults, w.State, w.RestartCount, wantState, tg.expectedRestarts(), w.LastExit, w.LastError))
			}
		}
		return len(lost) == 0
	})
	total := 0
	for _, n := range injected {
		total += n
	}
	churn.Lock()
	t.Logf("faults injected: %d (%v) into 20 workers; churn: %d spawned, %d stopped, errors %v", total, injected, churn.spawned, churn.stopped, churn.errs)
	if len(churn.errs) > 0 {
		t.Errorf("churn errors: %v", churn.errs)
	}
	churn.Unlock()
	if !settled {
		t.Fatalf("after 2 minutes, %d workers are not as their policy says:\n%s", len(lost), strings.Join(lost, "\n"))
	}
	for _, tg := range targets {
		if tg.faults > 0 && tg.id != "" {
			for _, w := range last {
				if w.ID == tg.id && w.LastExit == nil {
					t.Errorf("%s: faulted %d times but last_exit is null", tg.id, tg.faults)
				}
			}
		}
	}

	// The registry against /proc.
	checkMatchesMachine(t, e, d, c, last, perWorker)
	var wantRestarts int
	for _, tg := range targets {
		wantRestarts += tg.expectedRestarts()
	}
	if got := restartsMetric(t, c); got != wantRestarts {
		t.Errorf("rbee_hive_worker_restarts_total sums to %d, want %d", got, wantRestarts)
	}

	// Stop everything through the API, concurrently.
	var stopWG sync.WaitGroup
	for _, w := range last {
		stopWG.Add(1)
		go func(id string) {
			defer stopWG.Done()
			if _, err := c.ShutdownWorker(ctx, client.ShutdownRequest{WorkerID: id, TimeoutS: 0.5}); err != nil {
				t.Errorf("stop %s: %v", id, err)
			}
		}(w.ID)
	}
	stopWG.Wait()
	ws, err := c.ListWorkers(ctx, client.ListWorkersOptions{})
	if err != nil || len(ws) != 0 {
		t.Fatalf("after stopping all: %d workers listed (%v)", len(ws), err)
	}
	checkMatchesMachine(t, e, d, c, nil, perWorker)

	// Goroutines and open files back to the baseline (a little slack for
	// the scrape's own connection).
	var g, fds int
	if !harness.Poll(20*time.Second, 100*time.Millisecond, func() bool {
		c.HTTPClient().CloseIdleConnections()
		g, fds = hiveLoad(t, d, c)
		return g <= baseG+4 && fds <= baseFD+2
	}) {
		t.Errorf("hive holds %d goroutines and %d open files after the chaos; baseline %d and %d", g, fds, baseG, baseFD)
	}
	t.Logf("after: %d goroutines, %d open files (baseline %d, %d)", g, fds, baseG, baseFD)
	survived := total
	if !settled || t.Failed() {
		survived = total - len(lost)
	}
	t.Logf("CHAOS-RESULT duration=%s workers=20 faults_injected=%d sigkill=%d sigstop=%d crash_at_start=%d survived=%d lost=%d restarts=%d churn_spawned=%d churn_stopped=%d",
		dur, total, injected[faultKill], injected[faultHang], injected[faultCrashStart], survived, total-survived, wantRestarts, churn.spawned, churn.stopped)
}

// hiveLoad reads the hive's goroutines (its metrics) and open files (/proc).
func hiveLoad(t *testing.T, d *harness.Daemon, c *client.Client) (goroutines, fds int) {
	t.Helper()
	m, err := c.Metrics(context.Background())
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	mm := regexp.MustCompile(`(?m)^go_goroutines (\d+)`).FindSubmatch(m)
	if mm == nil {
		t.Fatalf("no go_goroutines in the metrics")
	}
	goroutines, _ = strconv.Atoi(string(mm[1]))
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.PID()))
	if err != nil {
		t.Fatal(err)
	}
	return goroutines, len(ents)
}

// restartsMetric sums rbee_hive_worker_restarts_total over its reasons.
func restartsMetric(t *testing.T, c *client.Client) int {
	t.Helper()
	m, err := c.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sum := 0
	for _, mm := range regexp.MustCompile(`(?m)^rbee_hive_worker_restarts_total\{[^}]*\} (\d+)`).FindAllSubmatch(m, -1) {
		n, _ := strconv.Atoi(string(mm[1]))
		sum += n
	}
	return sum
}

// checkMatchesMachine compares the registry (ws) with /proc: every live
// record is a live process leading its own group; every process of the
// test is a recorded worker; the hive has no zombie child; exactly the
// live workers' ports listen in the worker range; the cpu reservation is
// the live workers'.
func checkMatchesMachine(t *testing.T, e *harness.Env, d *harness.Daemon, c *client.Client, ws []client.Worker, perWorker uint64) {
	t.Helper()
	live := map[int]client.Worker{}
	ports := map[int]bool{}
	for _, w := range ws {
		if w.State == "failed" {
			if w.PID > 0 && harness.Alive(w.PID) {
				if p, _ := harness.ReadProc(w.PID); strings.Contains(p.Cmdline, e.Bins.RefWorker) {
					t.Errorf("failed worker %s: its process %d still runs", w.ID, w.PID)
				}
			}
			continue
		}
		p, ok := harness.ReadProc(w.PID)
		if !ok || p.Zombie() || p.PGID != w.PID || !strings.Contains(p.Cmdline, e.Bins.RefWorker) || p.State == 'T' {
			t.Errorf("worker %s (%s): pid %d is %+v, want a running reference worker leading its group", w.ID, w.State, w.PID, p)
		}
		live[w.PID] = w
		ports[w.Port] = true
	}
	for _, p := range e.WorkerProcs() {
		if _, ok := live[p.PGID]; !ok {
			t.Errorf("process %d (group %d, %s) belongs to no recorded worker: orphaned", p.PID, p.PGID, p.Cmdline)
		}
	}
	if !harness.Poll(5*time.Second, 20*time.Millisecond, func() bool { return len(zombiesOf(d.PID())) == 0 }) {
		t.Errorf("the hive has zombie children: %v", zombiesOf(d.PID()))
	}
	cfgRange := workerRange(t, d)
	var listening []int
	harness.Poll(5*time.Second, 50*time.Millisecond, func() bool {
		listening = listeningPorts(cfgRange)
		return len(listening) == len(ports)
	})
	for _, p := range listening {
		if !ports[p] {
			t.Errorf("port %d listens but no live worker has it (leaked)", p)
		}
	}
	if len(listening) != len(ports) {
		t.Errorf("%d ports listen in %v, %d live workers", len(listening), cfgRange, len(ports))
	}
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := perWorker * uint64(len(live)); st.Devices[0].ReservedBytes != want {
		t.Errorf("cpu reserved %d bytes, want %d for %d live workers", st.Devices[0].ReservedBytes, want, len(live))
	}
}

// zombiesOf lists the zombie children of pid.
func zombiesOf(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := harness.ReadProc(n); ok && p.PPID == pid && p.Zombie() {
			out = append(out, n)
		}
	}
	return out
}

// workerRange reads worker.port_range from the daemon's config file.
func workerRange(t *testing.T, d *harness.Daemon) [2]int {
	t.Helper()
	b, err := os.ReadFile(d.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`port_range:\s*\[?\s*-?\s*(\d+)[\s,\-]+(\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no worker.port_range in %s:\n%s", d.ConfigPath, b)
	}
	lo, _ := strconv.Atoi(string(m[1]))
	hi, _ := strconv.Atoi(string(m[2]))
	return [2]int{lo, hi}
}

// listeningPorts lists TCP ports in LISTEN state within r (IPv4 and IPv6).
func listeningPorts(r [2]int) []int {
	seen := map[int]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "0A" {
				continue
			}
			i := strings.LastIndexByte(fields[1], ':')
			port, err := strconv.ParseUint(fields[1][i+1:], 16, 32)
			if err == nil && int(port) >= r[0] && int(port) <= r[1] {
				seen[int(port)] = true
			}
		}
		fh.Close()
	}
	out := make([]int, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}
