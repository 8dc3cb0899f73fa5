// Package load drives the real rbee-hive binary over loopback at the
// highest rate this machine takes (closed loop, a fixed number of
// concurrent clients) on GET /v1/workers/list, /v1/status and /v1/metrics,
// with many registered reference workers of which one is SIGKILLed every
// 200ms (policy always: they crash and restart throughout). It requires
// zero errors and reports the rate, the latency percentiles and the hive's
// heap and resident memory before and after.
//
// RBEE_LOAD_WORKERS (default 50) and RBEE_LOAD_DURATION (default 5s) size
// it; the README's figures use 500 workers and 60s.
package load

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"slices"
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

func envInt(t *testing.T, name string, def int) int {
	if s := os.Getenv(name); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive integer", name, s)
		}
		return n
	}
	return def
}

func TestLoad(t *testing.T) {
	workers := envInt(t, "RBEE_LOAD_WORKERS", 50)
	dur := 5 * time.Second
	if s := os.Getenv("RBEE_LOAD_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("RBEE_LOAD_DURATION: %v", err)
		}
		dur = min(d, 10*time.Minute)
	}
	clients := envInt(t, "RBEE_LOAD_CLIENTS", 8)

	e := harness.New(t)
	// A port range as large as the workers need, below the ephemeral
	// range, starting at a block of the harness's spread.
	lo := harness.WorkerPortRange()[0]
	if lo+workers+200 > 32000 {
		lo = 32000 - workers - 200
	}
	d := e.StartDaemon(harness.DaemonOptions{Config: map[string]any{
		"worker":  map[string]any{"port_range": []any{lo, lo + workers + 199}, "ready_timeout": "2m"},
		"health":  map[string]any{"interval": "2s", "timeout": "1s", "failure_threshold": 3},
		"restart": map[string]any{"policy": "always", "max_restarts": 100000, "window": "10m", "backoff": map[string]any{"initial": "50ms", "max": "500ms"}},
	}})
	c := d.Client()
	ctx, cancel := context.WithTimeout(context.Background(), dur+10*time.Minute)
	defer cancel()
	model := e.Path("models", "load.gguf")
	os.MkdirAll(e.Path("models"), 0o755)
	if err := os.WriteFile(model, make([]byte, 1024), 0o644); err != nil {
		t.Fatal(err)
	}

	// Register the workers: spawn (at most 16 in flight), then wait until
	// every one is ready.
	t0 := time.Now()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var spawnErr error
	var mu sync.Mutex
	for i := 0; i < workers; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := c.Spawn(ctx, client.SpawnRequest{ModelRef: "file:" + model, Backend: "cpu"}); err != nil {
				mu.Lock()
				spawnErr = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if spawnErr != nil {
		t.Fatalf("spawn: %v", spawnErr)
	}
	if !harness.Poll(5*time.Minute, 200*time.Millisecond, func() bool {
		ws, err := c.ListWorkers(ctx, client.ListWorkersOptions{State: "idle"})
		return err == nil && len(ws) == workers
	}) {
		t.Fatalf("%d workers not all ready after 5 minutes", workers)
	}
	t.Logf("%d workers registered and ready in %s", workers, time.Since(t0).Round(time.Millisecond))

	// Warm up (the first requests grow buffers and pools that stay), then
	// take the baseline.
	warm, stopWarm := context.WithTimeout(ctx, 2*time.Second)
	hammer(warm, d, clients)
	stopWarm()
	before := hiveMemory(t, d, c)

	// Crashes meanwhile: a random live worker is SIGKILLed every 200ms.
	loadCtx, stopLoad := context.WithTimeout(ctx, dur)
	defer stopLoad()
	var kills int
	killsOf := map[string]int{} // by worker id, for the diagnosis of a mismatch
	var killWG sync.WaitGroup
	killWG.Add(1)
	go func() {
		defer killWG.Done()
		rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
		killed := map[int]bool{} // a killed worker may still be listed idle until the hive reaps it
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			ws, err := c.ListWorkers(ctx, client.ListWorkersOptions{State: "idle"})
			if err != nil {
				continue
			}
			ws = slices.DeleteFunc(ws, func(w client.Worker) bool { return killed[w.PID] || w.PID <= 0 })
			if len(ws) == 0 {
				continue
			}
			w := ws[rng.IntN(len(ws))]
			if syscall.Kill(w.PID, syscall.SIGKILL) == nil {
				killed[w.PID] = true
				killsOf[w.ID]++
				kills++
			}
		}
	}()

	// The load: closed loop, each client cycles through the routes.
	start := time.Now()
	results := hammer(loadCtx, d, clients)
	elapsed := time.Since(start)
	killWG.Wait()

	var errs []string
	all := map[string][]time.Duration{}
	var total int
	var bytes int64
	for _, r := range results {
		errs = append(errs, r.errs...)
		for p, l := range r.lat {
			all[p] = append(all[p], l...)
			total += len(l)
		}
		bytes += r.nBytes
	}
	if len(errs) > 0 {
		t.Errorf("%d errors under load, first: %s", len(errs), errs[0])
	}
	t.Logf("%d requests in %s (%.0f/s, %d clients, %.1f MiB read), %d workers SIGKILLed meanwhile",
		total, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), clients, float64(bytes)/(1<<20), kills)
	for _, p := range paths {
		l := all[p]
		if len(l) == 0 {
			t.Errorf("no successful %s", p)
			continue
		}
		slices.Sort(l)
		t.Logf("LOAD-RESULT %s n=%d p50=%s p99=%s max=%s", p, len(l), pct(l, 50), pct(l, 99), l[len(l)-1])
	}

	// Every worker is still accounted for: the kills were restarts. (A
	// worker killed a moment ago may still be listed idle until the hive
	// has reaped it: wait for the restarts to add up too.)
	if !harness.Poll(2*time.Minute, 200*time.Millisecond, func() bool {
		ws, err := c.ListWorkers(ctx, client.ListWorkersOptions{State: "idle"})
		n := 0
		for _, w := range ws {
			n += w.RestartCount
		}
		return err == nil && len(ws) == workers && n == kills
	}) {
		ws, _ := c.ListWorkers(ctx, client.ListWorkersOptions{})
		states := map[string]int{}
		for _, w := range ws {
			states[string(w.State)]++
		}
		t.Errorf("after the load: workers by state %v, want %d idle", states, workers)
	}
	var restarts int
	ws, _ := c.ListWorkers(ctx, client.ListWorkersOptions{})
	for _, w := range ws {
		restarts += w.RestartCount
	}
	if restarts != kills {
		t.Errorf("%d restarts recorded for %d kills", restarts, kills)
		for _, w := range ws {
			if w.RestartCount != killsOf[w.ID] {
				t.Logf("worker %s: %d restarts, %d kills, state %s, last_exit %+v, last_error %q", w.ID, w.RestartCount, killsOf[w.ID], w.State, w.LastExit, w.LastError)
				for _, line := range strings.Split(d.Log(), "\n") {
					if strings.Contains(line, w.ID) {
						t.Logf("  %s", line)
					}
				}
			}
		}
	}
	after := hiveMemory(t, d, c)
	t.Logf("LOAD-RESULT workers=%d duration=%s requests=%d errors=%d kills=%d restarts=%d heap_before=%.1fMiB heap_after=%.1fMiB live_heap_before=%.1fMiB live_heap_after=%.1fMiB rss_before=%.1fMiB rss_after=%.1fMiB goroutines_before=%d goroutines_after=%d",
		workers, dur, total, len(errs), kills, restarts, mib(before.heap), mib(after.heap), mib(before.live), mib(after.live), mib(before.rss), mib(after.rss), before.goroutines, after.goroutines)
	// Flat: the heap in use after the load, once idle, within twice the
	// heap before plus 16 MiB of slack for the GC's pacing.
	if after.heap > 2*before.heap+16<<20 {
		t.Errorf("heap grew from %.1f MiB to %.1f MiB", mib(before.heap), mib(after.heap))
	}
}

var paths = []string{"/v1/workers/list", "/v1/status", "/v1/metrics"}

type result struct {
	lat    map[string][]time.Duration
	errs   []string
	nBytes int64
}

// hammer runs clients closed loops over paths until ctx ends.
func hammer(ctx context.Context, d *harness.Daemon, clients int) []result {
	results := make([]result, clients)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func(r *result, off int) {
			defer wg.Done()
			r.lat = map[string][]time.Duration{}
			for n := off; ctx.Err() == nil; n++ {
				p := paths[n%len(paths)]
				req, _ := http.NewRequest("GET", d.URL+p, nil)
				req.Header.Set("Authorization", "Bearer "+d.Token)
				t0 := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					r.errs = append(r.errs, p+": "+err.Error())
					continue
				}
				nb, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				el := time.Since(t0)
				if err != nil || resp.StatusCode != 200 {
					r.errs = append(r.errs, fmt.Sprintf("%s: %d %v", p, resp.StatusCode, err))
					continue
				}
				r.nBytes += nb
				r.lat[p] = append(r.lat[p], el)
			}
		}(&results[i], i)
	}
	wg.Wait()
	return results
}

func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)].Round(10 * time.Microsecond)
}

func mib(n float64) float64 { return n / (1 << 20) }

type memory struct {
	heap, live, rss float64
	goroutines      int
}

// hiveMemory reads the hive's live heap, resident memory and goroutines
// from its metrics, after the idle moment a GC needs to settle: the
// smallest heap of a few scrapes.
func hiveMemory(t *testing.T, d *harness.Daemon, c *client.Client) memory {
	t.Helper()
	var m memory
	m.heap = -1
	for i := 0; i < 5; i++ {
		b, err := c.Metrics(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		heap := metric(t, b, "go_memstats_heap_inuse_bytes")
		if m.heap < 0 || heap < m.heap {
			m.heap = heap
		}
		// The GC's next target is twice the heap that was live after the
		// last collection (GOGC=100, the daemon's default): the best view
		// of the live heap the metrics give without forcing a GC.
		m.live = metric(t, b, "go_memstats_next_gc_bytes") / 2
		m.rss = metric(t, b, "process_resident_memory_bytes")
		m.goroutines = int(metric(t, b, "go_goroutines"))
		time.Sleep(200 * time.Millisecond)
	}
	return m
}

func metric(t *testing.T, b []byte, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in the metrics:\n%s", name, strings.Join(strings.Split(string(b), "\n")[:20], "\n"))
	}
	f, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
