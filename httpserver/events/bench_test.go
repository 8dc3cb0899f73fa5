package events

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/registry"
)

// latencyHist counts latencies in 10 µs buckets up to 1 s.
type latencyHist struct {
	mu      sync.Mutex
	buckets [100000]int64
	n       int64
}

func (h *latencyHist) add(local *[100000]int64, n int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, c := range local {
		h.buckets[i] += c
	}
	h.n += n
}

func (h *latencyHist) quantile(q float64) time.Duration {
	want := int64(float64(h.n) * q)
	var sum int64
	for i, c := range h.buckets {
		if sum += c; sum > want {
			return time.Duration(i) * 10 * time.Microsecond
		}
	}
	return time.Second
}

// benchConsumer reads one raw stream, counting events and their latency
// from the change (the event's time) to arrival.
type benchConsumer struct {
	delivered atomic.Int64
	hist      *latencyHist
}

func (c *benchConsumer) run(ctx context.Context, url string, hc *http.Client, ready *sync.WaitGroup) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	ready.Done()
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var local [100000]int64
	var n int64
	defer func() { c.hist.add(&local, n) }()
	br := bufio.NewReaderSize(resp.Body, 256<<10)
	key := []byte(`"time":"`)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil
		}
		if !bytes.HasPrefix(line, []byte("data: ")) {
			continue
		}
		now := time.Now()
		if i := bytes.Index(line, key); i >= 0 {
			rest := line[i+len(key):]
			if j := bytes.IndexByte(rest, '"'); j > 0 {
				if at, err := time.Parse(time.RFC3339Nano, string(rest[:j])); err == nil {
					b := now.Sub(at) / (10 * time.Microsecond)
					if b >= 100000 {
						b = 99999
					}
					if b < 0 {
						b = 0
					}
					local[b]++
					n++
				}
			}
		}
		c.delivered.Add(1)
	}
}

// fanout runs the consumers while 100 workers churn b.N state changes in
// all. pace > 0 spaces each worker's changes; pace == 0 churns as fast as
// the consumers keep up (at most window changes ahead of the slowest).
func fanout(b *testing.B, consumers int, pace time.Duration) {
	const workers, window = 100, 256
	e := newEnv(b, Config{Buffer: 4096, SubscriberBuffer: 1024, Heartbeat: time.Hour})
	first := e.hub.latest()
	for i := range workers {
		register(b, e.reg, wid(i))
		setState(b, e.reg, wid(i), registry.StateIdle)
	}
	// The consumers must not see the setup.
	waitUntil(b, "the setup went through the hub", func() bool { return e.hub.latest() == first+2*workers })
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: consumers}}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	hist := &latencyHist{}
	cs := make([]*benchConsumer, consumers)
	var ready, done sync.WaitGroup
	ready.Add(consumers)
	for i := range cs {
		cs[i] = &benchConsumer{hist: hist}
		done.Go(func() { _ = cs[i].run(ctx, e.srv.URL+"/v1/events", hc, &ready) })
	}
	ready.Wait()
	waitUntil(b, "all consumers subscribed", func() bool { return e.hub.subscribers() == consumers })

	slowest := func() int64 {
		m := cs[0].delivered.Load()
		for _, c := range cs[1:] {
			m = min(m, c.delivered.Load())
		}
		return m
	}
	var produced atomic.Int64
	per := max(b.N/workers, 1)
	total := int64(per * workers)
	b.ResetTimer()
	start := time.Now()
	var churn sync.WaitGroup
	for w := range workers {
		churn.Go(func() {
			st := registry.StateBusy
			var tick *time.Ticker
			if pace > 0 {
				// Spread the workers over the period: a steady load, not
				// bursts of 100 changes at once.
				time.Sleep(pace * time.Duration(w) / workers)
				tick = time.NewTicker(pace)
				defer tick.Stop()
			}
			for range per {
				if tick != nil {
					<-tick.C
				} else {
					for produced.Load()-slowest() > window {
						time.Sleep(20 * time.Microsecond)
					}
				}
				if _, err := e.reg.Update(wid(w), func(wk *registry.Worker) error { wk.State = st; return nil }); err != nil {
					b.Error(err)
					return
				}
				produced.Add(1)
				if st == registry.StateBusy {
					st = registry.StateIdle
				} else {
					st = registry.StateBusy
				}
			}
		})
	}
	churn.Wait()
	for slowest() < total && e.drops.Load() == 0 {
		time.Sleep(100 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	done.Wait()

	var delivered int64
	for _, c := range cs {
		delivered += c.delivered.Load()
	}
	b.ReportMetric(float64(delivered)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(total)/elapsed.Seconds(), "changes/s")
	b.ReportMetric(float64(hist.quantile(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(hist.quantile(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(e.drops.Load()), "drops")
}

// BenchmarkFanout100: events per second fanned out to 100 consumers while
// 100 workers churn as fast as the slowest consumer keeps up (at most 256
// changes ahead); its latency is mostly that queue.
func BenchmarkFanout100(b *testing.B) { fanout(b, 100, 0) }

// BenchmarkFanout100Paced: latency at a steady heavy load: each of 100
// workers changes state every 50 ms (2,000 changes and 200,000 deliveries
// per second).
func BenchmarkFanout100Paced(b *testing.B) { fanout(b, 100, 50*time.Millisecond) }

// BenchmarkFanout100Slow: latency at a steady light load: every 500 ms per
// worker (200 changes and 20,000 deliveries per second).
func BenchmarkFanout100Slow(b *testing.B) { fanout(b, 100, 500*time.Millisecond) }

// BenchmarkFanout1Slow: the same load with one consumer, the baseline of
// one delivery without the fan-out.
func BenchmarkFanout1Slow(b *testing.B) { fanout(b, 1, 500*time.Millisecond) }

// BenchmarkHubFootprint reports the heap a hub at the default size holds
// once its ring is full of worker events (registered, then idle, for 2,048
// workers with complete records), all consumed: what events.buffer costs a
// busy hive whatever its number of workers. The registry's share (the same
// records without a hub) is measured in the same iteration and taken off.
func BenchmarkHubFootprint(b *testing.B) {
	for b.Loop() {
		base := liveHeap()
		reg, err := registry.Open(registry.Options{Logger: quiet()})
		if err != nil {
			b.Fatal(err)
		}
		fillRegistry(b, reg)
		regOnly := liveHeap() - base
		reg.Close()

		base = liveHeap()
		e := newEnv(b, Config{Heartbeat: time.Hour})
		fillRegistry(b, e.reg)
		deadline := time.Now().Add(waitFor)
		for !ringFull(e.hub) {
			if time.Now().After(deadline) {
				b.Fatal("ring never filled")
			}
			time.Sleep(time.Millisecond)
		}
		b.ReportMetric(float64(liveHeap()-base-regOnly), "hub-heap-B")
		runtime.KeepAlive(e)
		runtime.KeepAlive(reg)
	}
}

// fillRegistry registers DefaultBuffer/2 workers with complete records and
// makes each idle: DefaultBuffer worker events.
func fillRegistry(b *testing.B, reg *registry.Registry) {
	for i := range DefaultBuffer / 2 {
		id := fmt.Sprintf("worker-%04d", i)
		at := time.Now()
		if _, err := reg.Register(registry.Worker{
			ID: id, PID: 100000 + i, ModelRef: "hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
			ModelPath: "/var/lib/rbee-hive/models/TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
			Backend:   "cuda", Device: i % 8, State: registry.StateLoading, URL: fmt.Sprintf("http://127.0.0.1:%d", 20000+i),
			Port: 20000 + i, VRAMBytes: 1500000000, RestartPolicy: "on-failure", CreatedAt: at,
		}); err != nil {
			b.Fatal(err)
		}
		if _, err := reg.Update(id, func(w *registry.Worker) error {
			w.State, w.ReadyAt = registry.StateIdle, &at
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}

func ringFull(h *Hub) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ring.n == len(h.ring.buf)
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
