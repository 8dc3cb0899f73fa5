package bench

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
)

// benchProvision (item 1) provisions one large LFS file from a local hub
// (in this process, on 127.0.0.1, generated content: no disk read on the
// serving side) through POST /v1/models/provision?wait=true, and in the same
// rounds does the raw thing with the same URL. Rounds alternate their order;
// the medians are reported. Two comparisons:
//   - the hive's cache on tmpfs (/dev/shm) against a streamed GET hashed
//     with sha256: the baseline, with the disk out of both sides;
//   - the cache on disk against GET + sha256 + write + fsync into a file on
//     the same disk, which is what a blob in the cache costs anyone.
//
// It also compares parallel Range requests with one stream over loopback.
func benchProvision(c *Ctx) []Row {
	size, rounds := int64(2<<30), 3
	if c.Quick {
		size, rounds = 64<<20, 1
	}
	hub := c.Env.StartHub()
	c.Logf("hashing the %d MiB hub file", size>>20)
	repo, err := hub.AddRepo("bench/big", &hubtest.File{Path: "model.bin", Content: hubtest.Synthetic(7, size), LFS: true})
	if err != nil {
		c.Fatalf("hub: %v", err)
	}
	want := repo.File("model.bin").SHA256()
	fileURL := hub.URL() + "/bench/big/resolve/" + repo.Commit + "/model.bin"
	hc := newHTTP()
	var rows []Row

	measure := func(cacheDir string, raw func() float64) (prov, base []float64) {
		d := startDaemon(c, 0, 0, map[string]any{"provisioner": map[string]any{"hf_endpoint": hub.URL(), "cache_dir": cacheDir}})
		defer d.Stop(time.Minute)
		ref := "hf:bench/big/model.bin"
		body := fmt.Appendf(nil, `{"model_ref":%q}`, ref)
		provision := func() float64 {
			dur, b := mustCall(c, hc, http.MethodPost, d.URL+"/v1/models/provision?wait=true", d.Token, body, http.StatusOK)
			if !bytes.Contains(b, []byte(want)) {
				c.Fatalf("provision answer lacks sha256 %s: %s", want, b)
			}
			mustCall(c, hc, http.MethodDelete, d.URL+"/v1/models/evict?model_ref="+url.QueryEscape(ref), d.Token, nil, http.StatusOK)
			return mbps(size, dur)
		}
		for i := range rounds {
			if i%2 == 0 {
				base = append(base, raw())
				prov = append(prov, provision())
			} else {
				prov = append(prov, provision())
				base = append(base, raw())
			}
			c.Logf("%s round %d: provision %.0f MB/s, baseline %.0f MB/s", cacheDir, i+1, prov[i], base[i])
		}
		return prov, base
	}

	if shm, err := os.MkdirTemp("/dev/shm", "rbee-bench-"); err == nil {
		c.Env.TB.Cleanup(func() { os.RemoveAll(shm) })
		prov, base := measure(filepath.Join(shm, "cache"), func() float64 {
			start := time.Now()
			if got := getSHA256(c, hc, fileURL); got != want {
				c.Fatalf("raw GET sha256 %s, want %s", got, want)
			}
			return mbps(size, time.Since(start))
		})
		rows = append(rows, Row{
			Item: 1, Name: fmt.Sprintf("provision %d MiB LFS file, cache on tmpfs (median of %d)", size>>20, rounds), Unit: "MB/s",
			Measured: median(prov), Baseline: median(base), BaselineName: "GET+sha256",
			Compare: CompareRatio, Target: &Target{On: "ratio", Op: ">=", Limit: 0.95},
			Note: "the hive also writes the blob (to tmpfs here), fsyncs it and renames it into place",
		})
	} else {
		c.Logf("no /dev/shm (%v): tmpfs comparison left out", err)
	}

	disk := c.Env.Path("plain")
	if err := os.MkdirAll(disk, 0o755); err != nil {
		c.Fatalf("%v", err)
	}
	prov, base := measure(c.Env.Path("disk-cache"), func() float64 {
		start := time.Now()
		path := filepath.Join(disk, "plain.bin")
		if got := getToFileHashing(c, hc, fileURL, path, true); got != want {
			c.Fatalf("GET+write sha256 %s, want %s", got, want)
		}
		r := mbps(size, time.Since(start))
		os.Remove(path)
		return r
	})
	rows = append(rows, Row{
		Item: 1, Name: fmt.Sprintf("provision %d MiB LFS file, cache on disk (median of %d)", size>>20, rounds), Unit: "MB/s",
		Measured: median(prov), Baseline: median(base), BaselineName: "GET+sha256+write+fsync, same disk",
		Compare: CompareRatio, Target: &Target{On: "ratio", Op: ">=", Limit: 0.95},
	})

	// Parallel Range requests against one stream, both writing the file to
	// tmpfs when there is one (a ranged download can only be hashed once it
	// is whole).
	dir := c.Env.Path("ranges")
	if shm, err := os.MkdirTemp("/dev/shm", "rbee-bench-ranges-"); err == nil {
		c.Env.TB.Cleanup(func() { os.RemoveAll(shm) })
		dir = shm
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		c.Fatalf("%v", err)
	}
	const parts = 4
	var one, many []float64
	for range rounds {
		start := time.Now()
		if got := getToFileHashing(c, hc, fileURL, filepath.Join(dir, "one.bin"), false); got != want {
			c.Fatalf("single stream sha256 %s", got)
		}
		one = append(one, mbps(size, time.Since(start)))
		os.Remove(filepath.Join(dir, "one.bin"))
		start = time.Now()
		if got := getRanges(c, hc, fileURL, filepath.Join(dir, "many.bin"), size, parts); got != want {
			c.Fatalf("ranged sha256 %s", got)
		}
		many = append(many, mbps(size, time.Since(start)))
		os.Remove(filepath.Join(dir, "many.bin"))
	}
	r := Row{
		Item: 1, Name: fmt.Sprintf("%d parallel Range GETs, then sha256", parts), Unit: "MB/s",
		Measured: median(many), Baseline: median(one), BaselineName: "1 stream hashed while written",
		Compare: CompareRatio,
	}
	switch d := r.Delta(); {
	case d >= 1.05:
		r.Note = "parallel ranges help over loopback here"
	case d <= 0.95:
		r.Note = "parallel ranges are slower over loopback: the hash must read the file again after the download"
	default:
		r.Note = "parallel ranges make no difference over loopback: hashing is sequential and one stream already overlaps it"
	}
	return append(rows, r)
}

// benchCacheHit (item 2) provisions a small model once, then asks for it
// again and again: each answer is 200 from the cache. The baseline is
// GET /v1/health on the same server, interleaved.
func benchCacheHit(c *Ctx) []Row {
	n := 500
	if c.Quick {
		n = 50
	}
	hub := c.Env.StartHub()
	if _, err := hub.AddRepo("bench/small", &hubtest.File{Path: "model.gguf", Content: hubtest.Synthetic(3, 1<<20), LFS: true}); err != nil {
		c.Fatalf("hub: %v", err)
	}
	d := startDaemon(c, 0, 0, map[string]any{"provisioner": map[string]any{"hf_endpoint": hub.URL()}})
	hc := newHTTP()
	body := []byte(`{"model_ref":"hf:bench/small/model.gguf"}`)
	mustCall(c, hc, http.MethodPost, d.URL+"/v1/models/provision?wait=true", d.Token, body, http.StatusOK)
	var hit, health []time.Duration
	for i := range n + 20 {
		dh, _ := mustCall(c, hc, http.MethodPost, d.URL+"/v1/models/provision", d.Token, body, http.StatusOK)
		db, _ := mustCall(c, hc, http.MethodGet, d.URL+"/v1/health", "", nil, http.StatusOK)
		if i >= 20 { // warm-up: connections, first-use allocations
			hit, health = append(hit, dh), append(health, db)
		}
	}
	return []Row{
		latencyRow(2, fmt.Sprintf("cache-hit provision p50 (%d requests)", n), 50, hit, health, "GET /v1/health",
			&Target{On: "measured", Op: "<", Limit: 2}),
		latencyRow(2, "cache-hit provision p99", 99, hit, health, "GET /v1/health", nil),
	}
}

func mbps(size int64, d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }

// getSHA256 streams url (redirects followed) into sha256.
func getSHA256(c *Ctx, hc *http.Client, u string) string {
	resp, err := hc.Get(u)
	if err != nil {
		c.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Fatalf("GET %s: %s", u, resp.Status)
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, resp.Body, make([]byte, 1<<20)); err != nil {
		c.Fatalf("GET %s: %v", u, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// getToFileHashing streams url into a file and sha256 at once, and with
// sync fsyncs the file.
func getToFileHashing(c *Ctx, hc *http.Client, u, path string, sync bool) string {
	resp, err := hc.Get(u)
	if err != nil {
		c.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		c.Fatalf("%v", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(io.MultiWriter(f, h), resp.Body, make([]byte, 1<<20)); err != nil {
		c.Fatalf("GET %s: %v", u, err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			c.Fatalf("fsync: %v", err)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// getRanges downloads url in parts concurrent Range requests into a file,
// then hashes the file.
func getRanges(c *Ctx, hc *http.Client, u, path string, size int64, parts int) string {
	f, err := os.Create(path)
	if err != nil {
		c.Fatalf("%v", err)
	}
	defer f.Close()
	chunk := (size + int64(parts) - 1) / int64(parts)
	var wg sync.WaitGroup
	errs := make(chan error, parts)
	for i := range parts {
		lo := int64(i) * chunk
		hi := min(lo+chunk, size) - 1
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(c.Context, http.MethodGet, u, nil)
			req.Header.Set("Range", "bytes="+strconv.FormatInt(lo, 10)+"-"+strconv.FormatInt(hi, 10))
			resp, err := hc.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusPartialContent {
				errs <- fmt.Errorf("range %d-%d: %s (the server ignores Range)", lo, hi, resp.Status)
				return
			}
			if _, err := io.CopyBuffer(io.NewOffsetWriter(f, lo), resp.Body, make([]byte, 1<<20)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		c.Fatalf("ranged GET: %v", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		c.Fatalf("%v", err)
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		c.Fatalf("%v", err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
