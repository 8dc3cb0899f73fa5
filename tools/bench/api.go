package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// sleeperScript is the worker command for the API benchmark: it announces
// itself ready with the callback (its per-worker token) and becomes a
// `sleep` process. 1,000 reference workers (Go HTTP servers) would take
// gigabytes and minutes of two shared cores to start; 1,000 sleeps are a
// megabyte each and still real processes the hive supervises (exit seen at
// once, stop sequence). They serve no /health, so the daemon of this item
// probes hourly.
const sleeperScript = `#!/bin/sh
# args: worker_id port model_ref callback_url
curl -sS -o /dev/null --fail --max-time 60 -X POST \
  -H "Authorization: Bearer $RBEE_WORKER_TOKEN" -H 'Content-Type: application/json' \
  --data "{\"worker_id\":\"$1\",\"url\":\"http://127.0.0.1:$2\",\"model_ref\":\"$3\",\"backend\":\"cpu\",\"device\":0}" \
  "$4" || exit 1
exec sleep 86400
`

// spawnMany spawns n workers, conc at a time, wait=false, then waits until
// the list shows them all idle.
func spawnMany(c *Ctx, hc *http.Client, d *harness.Daemon, model string, n, conc int, wait bool) []string {
	var next atomic.Int64
	ids := make([]string, n)
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr string
	want := http.StatusAccepted
	if wait {
		want = http.StatusOK
	}
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				st, _, b, err := call(c.Context, hc, http.MethodPost, d.URL+"/v1/workers/spawn", d.Token, spawnBody(model, "never", wait))
				var w workerRecord
				if err == nil && st == want {
					err = json.Unmarshal(b, &w)
				}
				if err != nil || st != want || w.ID == "" {
					once.Do(func() { firstErr = fmt.Sprintf("spawn %d: status %d err %v: %s", i, st, err, b) })
					return
				}
				ids[i] = w.ID
			}
		})
	}
	wg.Wait()
	if firstErr != "" {
		c.Fatalf("%s", firstErr)
	}
	waitFor(c, fmt.Sprintf("%d workers idle", n), 10*time.Minute, 250*time.Millisecond, func() bool {
		_, b := mustCall(c, hc, http.MethodGet, d.URL+"/v1/workers/list?state=idle", d.Token, nil, http.StatusOK)
		var l struct {
			Workers []json.RawMessage `json:"workers"`
		}
		if err := json.Unmarshal(b, &l); err != nil {
			c.Fatalf("list: %v", err)
		}
		c.Log.Debug("waiting for idle workers", "idle", len(l.Workers), "want", n)
		return len(l.Workers) >= n
	})
	return ids
}

// load is a closed-loop load of one endpoint.
type load struct {
	lat    []time.Duration
	n      int
	took   time.Duration
	errors int
	full   int // 200 answers to a conditional request
}

func (l load) rps() float64 { return float64(l.n) / l.took.Seconds() }

// hammer sends r with conc concurrent clients for dur, after a short
// warm-up, and records every latency.
func hammer(ctx context.Context, hc *http.Client, r request, conc int, dur time.Duration) load {
	run := func(d time.Duration, record bool) load {
		var mu sync.Mutex
		var out load
		deadline := time.Now().Add(d)
		start := time.Now()
		var wg sync.WaitGroup
		for range conc {
			wg.Go(func() {
				var lat []time.Duration
				errs, full := 0, 0
				buf := make([]byte, 256<<10)
				for time.Now().Before(deadline) && ctx.Err() == nil {
					st, dd, err := callDiscard(ctx, hc, r, buf)
					if err != nil || !r.ok(st) {
						errs++
						continue
					}
					if r.etag != "" && st == http.StatusOK {
						full++
					}
					lat = append(lat, dd)
				}
				mu.Lock()
				out.lat = append(out.lat, lat...)
				out.errors += errs
				out.full += full
				mu.Unlock()
			})
		}
		wg.Wait()
		out.took = time.Since(start)
		out.n = len(out.lat)
		return out
	}
	run(dur/10, false)
	return run(dur, true)
}

// benchAPI (item 5, and item 7's RSS) registers many workers, then loads
// list, status and metrics, each against GET /v1/health on the same server
// (measured before and after, pooled).
func benchAPI(c *Ctx) []Row {
	n, dur, conc := 1000, 3*time.Second, 4
	if c.Quick {
		n, dur = 100, time.Second
	}
	script := c.Env.Path("sleeper.sh")
	if err := os.WriteFile(script, []byte(sleeperScript), 0o755); err != nil {
		c.Fatalf("%v", err)
	}
	model := localModel(c)
	d := c.Env.StartDaemon(harness.DaemonOptions{
		WorkerCommand: []string{script, "{worker_id}", "{port}", "{model_ref}", "{callback_url}"},
		Config: map[string]any{
			"log":    map[string]any{"level": "info"},
			"worker": map[string]any{"port_range": []any{20000, 20000 + n + 200}},
			"health": map[string]any{"interval": "1h"},
		},
	})
	hc := newHTTP()
	for range 50 {
		mustCall(c, hc, http.MethodGet, d.URL+"/v1/status", d.Token, nil, http.StatusOK)
		mustCall(c, hc, http.MethodGet, d.URL+"/v1/metrics", d.Token, nil, http.StatusOK)
	}
	time.Sleep(500 * time.Millisecond)
	rssIdle, err := rssMiB(d.PID())
	if err != nil {
		c.Fatalf("rss: %v", err)
	}
	c.Logf("spawning %d workers", n)
	start := time.Now()
	spawnMany(c, hc, d, model, n, 8, false)
	c.Logf("%d workers idle after %s", n, time.Since(start).Round(time.Millisecond))
	rssRegistered, _ := rssMiB(d.PID())

	// Throughput: conc clients in a closed loop. Latency: one client, so
	// the percentiles are the server's answer time, not queueing behind
	// the other clients on two cores.
	type endpoint struct {
		name     string
		req      request
		thr, lat load
	}
	list := request{url: d.URL + "/v1/workers/list", token: d.Token}
	req, err := list.build(c.Context)
	if err != nil {
		c.Fatalf("list: %v", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		c.Fatalf("list: %v", err)
	}
	listBytes, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	if etag == "" {
		c.Fatalf("list answer without an ETag")
	}
	eps := []*endpoint{
		{name: "health", req: request{url: d.URL + "/v1/health"}},
		{name: "list", req: list},
		{name: "list with If-None-Match (no change)", req: request{url: list.url, token: d.Token, etag: etag}},
		{name: "status", req: request{url: d.URL + "/v1/status", token: d.Token}},
		{name: "metrics", req: request{url: d.URL + "/v1/metrics", token: d.Token}},
	}
	for _, e := range eps {
		e.thr = hammer(c.Context, hc, e.req, conc, dur)
		e.lat = hammer(c.Context, hc, e.req, 1, dur)
		if e.thr.errors+e.lat.errors > 0 {
			c.Fatalf("GET %s: %d failed requests", e.name, e.thr.errors+e.lat.errors)
		}
		c.Logf("GET %s: %.0f req/s with %d clients; p50 %.2f ms, p99 %.2f ms with one", e.name, e.thr.rps(), conc,
			ms(percentile(e.lat.lat, 50)), ms(percentile(e.lat.lat, 99)))
	}
	// Health again, pooled with the first run, so drift over the item
	// weighs on both sides.
	health := eps[0]
	h2thr := hammer(c.Context, hc, health.req, conc, dur)
	h2lat := hammer(c.Context, hc, health.req, 1, dur)
	health.thr = load{n: health.thr.n + h2thr.n, took: health.thr.took + h2thr.took}
	health.lat.lat = append(health.lat.lat, h2lat.lat...)
	rssLoaded, _ := rssMiB(d.PID())
	// What serving that many bytes costs at the least, for the list row.
	floorBig, floorSmall, err := floorLoad(c.Context, int(listBytes), conc, dur)
	if err != nil {
		c.Fatalf("floor: %v", err)
	}
	var rows []Row
	for _, e := range eps[1:] {
		thr := Row{
			Item: 5, Name: fmt.Sprintf("GET %s throughput, %d workers, %d clients", e.name, n, conc), Unit: "req/s",
			Measured: e.thr.rps(), Baseline: health.thr.rps(), BaselineName: "/v1/health", Compare: CompareRatio,
		}
		switch {
		case e.name == "list":
			thr.Target = &Target{On: "ratio", Op: ">=", Limit: 0.5}
			thr.Note = fmt.Sprintf("%d KiB an answer; the floor row below bounds this ratio", listBytes>>10)
		case e.req.etag != "":
			thr.Note = fmt.Sprintf("304 with no body; %d of %d answers were full (a record changed)", e.thr.full+e.lat.full, e.thr.n+e.lat.n)
		}
		rows = append(rows, thr,
			latencyRow(5, fmt.Sprintf("GET %s p50, one client", e.name), 50, e.lat.lat, health.lat.lat, "/v1/health", nil),
			latencyRow(5, fmt.Sprintf("GET %s p99, one client", e.name), 99, e.lat.lat, health.lat.lat, "/v1/health",
				&Target{On: "measured", Op: "<", Limit: 10}))
	}
	rows = append(rows, Row{
		Item: 5, Name: fmt.Sprintf("floor: bare net/http, static %d KiB answer, %d clients", listBytes>>10, conc), Unit: "req/s",
		Measured: floorBig.rps(), Baseline: floorSmall.rps(), BaselineName: "bare net/http, health-sized answer", Compare: CompareRatio,
		Note: "a server in the bench process that does nothing but write the bytes: over loopback a large answer costs the kernel's copying",
	}, Row{
		Item: 7, Name: "daemon RSS idle", Unit: "MiB", Measured: rssIdle,
		Target: &Target{On: "measured", Op: "<", Limit: 40},
	}, Row{
		Item: 7, Name: fmt.Sprintf("daemon RSS, %d registered workers, after the API load", n), Unit: "MiB",
		Measured: max(rssLoaded, rssRegistered), Baseline: rssIdle, BaselineName: "idle", Compare: CompareAdded,
		Target: &Target{On: "measured", Op: "<", Limit: 40},
		Note:   fmt.Sprintf("%.1f MiB right after registration; workers are `sleep` processes that announced themselves with the ready callback", rssRegistered),
	})
	return rows
}
