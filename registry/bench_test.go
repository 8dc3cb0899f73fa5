package registry

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// benchRegistry holds 1,000 idle workers, the size of a busy fleet node and
// then some.
func benchRegistry(b *testing.B, dir string) (*Registry, []string) {
	b.Helper()
	r, err := Open(Options{StateDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	ids := make([]string, 1000)
	var wg sync.WaitGroup
	for i := range ids {
		ids[i] = fmt.Sprintf("worker-%04d", i)
		wg.Go(func() { // concurrently, so the setup shares writes
			w := fullWorker(ids[i])
			w.CreatedAt = w.CreatedAt.Add(time.Duration(i))
			if _, err := r.Register(w); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	return r, ids
}

// toggle flips a worker between idle and busy: a change that must be durable.
func toggle(w *Worker) error {
	if w.State == StateIdle {
		w.State = StateBusy
	} else {
		w.State = StateIdle
	}
	return nil
}

func heartbeat(w *Worker) error {
	now := time.Now()
	w.LastHeartbeat = &now
	return nil
}

func BenchmarkUpdateMemory(b *testing.B) {
	r, ids := benchRegistry(b, "")
	i := 0
	for b.Loop() {
		if _, err := r.Update(ids[i%len(ids)], toggle); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkUpdatePersistent: one writer, every update a durable state change
// (a full snapshot of 1,000 workers, fsync, rename, fsync of the directory).
func BenchmarkUpdatePersistent(b *testing.B) {
	r, ids := benchRegistry(b, b.TempDir())
	i := 0
	for b.Loop() {
		if _, err := r.Update(ids[i%len(ids)], toggle); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkUpdatePersistentParallel: many writers at once share writes
// (group commit).
func BenchmarkUpdatePersistentParallel(b *testing.B) {
	r, ids := benchRegistry(b, b.TempDir())
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := r.Update(ids[i%len(ids)], heartbeatAndToggle); err != nil {
				b.Error(err)
				return
			}
			i += 7
		}
	})
}

func heartbeatAndToggle(w *Worker) error {
	_ = heartbeat(w)
	return toggle(w)
}

// BenchmarkHeartbeatPersistent: heartbeat-only updates, persisted lazily.
func BenchmarkHeartbeatPersistent(b *testing.B) {
	r, ids := benchRegistry(b, b.TempDir())
	i := 0
	for b.Loop() {
		if _, err := r.Update(ids[i%len(ids)], heartbeat); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkLazyUpdateWhileFlushing: heartbeats (lazy) every 200µs while the
// lazy flush of 1,000 workers runs about every millisecond, as a busy hive
// does each second. Reported: how long each Update took. A change must not
// wait for a background write's fsync.
func BenchmarkLazyUpdateWhileFlushing(b *testing.B) {
	r, ids := benchRegistry(b, b.TempDir())
	r.commitMu.Lock()
	r.st.lazyEvery = time.Millisecond
	r.commitMu.Unlock()
	took := make([]time.Duration, 0, b.N)
	i := 0
	for b.Loop() {
		start := time.Now()
		if _, err := r.Update(ids[i%len(ids)], heartbeat); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
		i++
		time.Sleep(200 * time.Microsecond)
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(took[len(took)-1].Microseconds()), "max-µs")
}
