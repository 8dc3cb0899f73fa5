package provisioner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
)

// BenchmarkProvision1GiB provisions a 1 GiB LFS file from the local hub and,
// in the same iteration, does the plain thing with the same URL: GET (with
// the redirect), sha256 and write into a file, fsync. The ratio
// baseline-time / provision-time shows whether verification overlaps the
// download (≥ 0.9) or follows it.
func BenchmarkProvision1GiB(b *testing.B) {
	if testing.Short() {
		b.Skip("1 GiB benchmark skipped under -short")
	}
	const size = 1 << 30
	b.Setenv("HF_TOKEN", "")
	b.Setenv("HF_HOME", b.TempDir())
	hub, err := hubtest.New(hubtest.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer hub.Close()
	repo, err := hub.AddRepo("bench/big", &hubtest.File{Path: "model.bin", Content: hubtest.Synthetic(42, size), LFS: true})
	if err != nil {
		b.Fatal(err)
	}
	want := repo.File("model.bin").SHA256()
	// RBEE_BENCH_DIR (e.g. /dev/shm) takes the disk out of the comparison.
	dir := b.TempDir()
	if d := os.Getenv("RBEE_BENCH_DIR"); d != "" {
		if dir, err = os.MkdirTemp(d, "provbench-"); err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
	}
	p, err := New(Config{
		CacheDir: filepath.Join(dir, "cache"), Endpoint: hub.URL(),
		DiskFree: func(string) (uint64, error) { return 1 << 50, nil },
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	url := hub.URL() + "/bench/big/resolve/" + repo.Commit + "/model.bin"
	ref := "hf:bench/big/model.bin"
	var baseline, provision time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate the order so that neither side always runs on a cache
		// (page cache, disk) the other just warmed or dirtied.
		runBaseline := func() {
			start := time.Now()
			if got := plainDownload(b, url, filepath.Join(dir, "plain.bin")); got != want {
				b.Fatalf("baseline sha256 %s", got)
			}
			baseline += time.Since(start)
		}
		runProvision := func() {
			start := time.Now()
			m, err := p.Ensure(context.Background(), ref)
			if err != nil {
				b.Fatal(err)
			}
			provision += time.Since(start)
			if m.SHA256 != want {
				b.Fatalf("sha256 %s", m.SHA256)
			}
		}
		if i%2 == 0 {
			runBaseline()
			runProvision()
		} else {
			runProvision()
			runBaseline()
		}
		b.StopTimer()
		os.Remove(filepath.Join(dir, "plain.bin"))
		if _, err := p.Evict(ref, nil); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(size)/(baseline.Seconds()/n)/1e6, "baseline-MB/s")
	b.ReportMetric(float64(size)/(provision.Seconds()/n)/1e6, "provision-MB/s")
	b.ReportMetric(baseline.Seconds()/provision.Seconds(), "ratio")
}

func plainDownload(b *testing.B, url, path string) string {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(io.MultiWriter(f, h), resp.Body, make([]byte, 1<<20)); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// BenchmarkCacheHit is Ensure of a model already in the cache (target: well
// under 5 ms).
func BenchmarkCacheHit(b *testing.B) {
	b.Setenv("HF_TOKEN", "")
	b.Setenv("HF_HOME", b.TempDir())
	hub, err := hubtest.New(hubtest.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer hub.Close()
	if _, err := hub.AddRepo("bench/small", &hubtest.File{Path: "model.bin", Content: hubtest.Synthetic(1, 1<<20), LFS: true}); err != nil {
		b.Fatal(err)
	}
	p, err := New(Config{
		CacheDir: b.TempDir(), Endpoint: hub.URL(),
		DiskFree: func(string) (uint64, error) { return 1 << 50, nil },
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	for _, ref := range []string{"hf:bench/small/model.bin", "hf:bench/small"} {
		if _, err := p.Ensure(ctx, ref); err != nil {
			b.Fatal(err)
		}
	}
	hub.Close() // a hit must not need the network
	for _, ref := range []string{"hf:bench/small/model.bin", "hf:bench/small"} {
		b.Run(ref[len("hf:bench/"):], func(b *testing.B) {
			for b.Loop() {
				if _, err := p.Ensure(ctx, ref); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
