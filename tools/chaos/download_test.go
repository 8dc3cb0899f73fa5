package chaos

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// hubDaemon starts a hive whose hub is hub and whose cache is cache.
func hubDaemon(e *harness.Env, hub *hubtest.Server, cache, stateDir string) *harness.Daemon {
	return e.StartDaemon(harness.DaemonOptions{StateDir: stateDir, Config: map[string]any{
		"provisioner": map[string]any{"hf_endpoint": hub.URL(), "cache_dir": cache, "hf_token": "-"}}})
}

// blobPath is where a hub file's blob lives in the cache.
func blobPath(cache, repo string, f *hubtest.File) string {
	return filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"), "blobs", f.BlobID())
}

// checkBlobs fails unless every complete blob in the cache hashes to its
// name (sha256 for LFS, git sha1 otherwise): never a bad blob.
func checkBlobs(t *testing.T, cache string) (n int) {
	t.Helper()
	filepath.Walk(cache, func(path string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() || filepath.Base(filepath.Dir(path)) != "blobs" || strings.Contains(info.Name(), ".") {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		h := sha256.New()
		size, _ := io.Copy(h, f)
		if got := hex.EncodeToString(h.Sum(nil)); got != info.Name() && len(info.Name()) == 64 {
			t.Errorf("blob %s (%d bytes) hashes to %s: a bad blob in the cache", path, size, got)
		}
		n++
		return nil
	})
	return n
}

// TestDownloadFaults provisions a repo whose files are cut at random
// offsets again and again, corrupted once, and behind 429 and 503 storms:
// it arrives whole and verified. A file that is corrupt on every attempt
// and one behind an endless 503 storm fail with a clear 502, leaving no
// blob.
func TestDownloadFaults(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	hub := e.StartHub()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	corruptAt := int64(rng.IntN(1 << 20))
	files := []*hubtest.File{
		{Path: "corrupt.gguf", Content: hubtest.Synthetic(2, 1<<20), LFS: true, Faults: hubtest.Faults{Corrupt: true, CorruptAt: corruptAt, CorruptTimes: 1}},
		{Path: "storm429.gguf", Content: hubtest.Synthetic(3, 256<<10), LFS: true, Faults: hubtest.Faults{FailFirst: 3, FailStatus: 429}},
		{Path: "storm503.gguf", Content: hubtest.Synthetic(4, 256<<10), LFS: true, Faults: hubtest.Faults{FailFirst: 3, FailStatus: 503}},
		{Path: "config.json", Content: hubtest.Bytes([]byte(`{"arch":"llama"}`)), Faults: hubtest.Faults{CutAfter: 5, CutTimes: 2}},
	}
	// Files cut again and again, each at its own random offset (every
	// resumed response is cut that many bytes further on).
	cuts := 2 // config.json
	var cutAts []int64
	for i := range 4 {
		at, times := int64(1<<10+rng.IntN(700<<10)), 2+rng.IntN(7)
		files = append(files, &hubtest.File{Path: fmt.Sprintf("cut%d.gguf", i), Content: hubtest.Synthetic(uint64(100+i), int64(2<<20+rng.IntN(2<<20))),
			LFS: true, Faults: hubtest.Faults{CutAfter: at, CutTimes: times}})
		cuts += times
		cutAts = append(cutAts, at)
	}
	if _, err := hub.AddRepo("acme/faulty", files...); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.AddRepo("acme/rotten", &hubtest.File{Path: "m.gguf", Content: hubtest.Synthetic(5, 512<<10), LFS: true,
		Faults: hubtest.Faults{Corrupt: true, CorruptAt: 1000}}); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.AddRepo("acme/down", &hubtest.File{Path: "m.gguf", Content: hubtest.Synthetic(6, 512<<10), LFS: true,
		Faults: hubtest.Faults{FailFirst: 1000, FailStatus: 503}}); err != nil {
		t.Fatal(err)
	}
	cache := e.Path("cache")
	d := hubDaemon(e, hub, cache, "")
	injected := cuts + 1 + 3 + 3

	r := d.Request("POST", "/v1/models/provision?wait=true", map[string]any{"model_ref": "hf:acme/faulty"})
	if r.Status != 200 {
		t.Fatalf("provision through %d faults: %d %s", injected, r.Status, r.Body)
	}
	for _, f := range files {
		b, err := os.ReadFile(blobPath(cache, "acme/faulty", f))
		if err != nil {
			t.Fatalf("%s: %v", f.Path, err)
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != f.SHA256() {
			t.Errorf("%s arrived with the wrong content", f.Path)
		}
	}
	st := hub.Stats()
	t.Logf("acme/faulty: %d cuts (first offsets %v), corrupt at %d, 3×429, 3×503; %d content ranges requested, %d bytes sent",
		cuts, cutAts, corruptAt, len(st.Ranges), st.BytesSent)

	for _, c := range []struct{ ref, want string }{{"hf:acme/rotten", "checksum"}, {"hf:acme/down", "503"}} {
		r := d.Request("POST", "/v1/models/provision?wait=true", map[string]any{"model_ref": c.ref})
		if r.Status != 502 || !strings.Contains(strings.ToLower(string(r.Body)), c.want) {
			t.Errorf("provision %s: %d %s, want 502 saying %s", c.ref, r.Status, r.Body, c.want)
		}
		injected++
	}
	if _, err := os.Stat(blobPath(cache, "acme/rotten", hub.Repo("acme/rotten").File("m.gguf"))); err == nil {
		t.Errorf("a blob that never verified is in the cache")
	}
	n := checkBlobs(t, cache)
	t.Logf("DOWNLOAD-RESULT faults_injected=%d survived=%d lost=0 verified_blobs=%d", injected, injected, n)
}

// TestDownloadKill9Resume kills the hive with SIGKILL once one file of a
// repo is verified and another is half downloaded (the hive fetches a
// repo's files in parallel); the next hive on the same state and cache
// resumes the partial from where it stopped, and fetches nothing that was
// already verified.
func TestDownloadKill9Resume(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	hub := e.StartHub()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	cutAt := int64(1<<20 + rng.IntN(4<<20))
	first := &hubtest.File{Path: "a.gguf", Content: hubtest.Synthetic(11, 2<<20), LFS: true}
	second := &hubtest.File{Path: "b.gguf", Content: hubtest.Synthetic(12, 16<<20), LFS: true,
		Faults: hubtest.Faults{CutAfter: cutAt, CutTimes: 1, Stall: time.Minute}}
	if _, err := hub.AddRepo("acme/big", first, second); err != nil {
		t.Fatal(err)
	}
	cache := e.Path("cache")
	d1 := hubDaemon(e, hub, cache, "")
	if r := d1.Request("POST", "/v1/models/provision", map[string]any{"model_ref": "hf:acme/big"}); r.Status != 202 {
		t.Fatalf("provision: %d %s", r.Status, r.Body)
	}
	part := blobPath(cache, "acme/big", second) + ".incomplete"
	if !harness.Poll(30*time.Second, 10*time.Millisecond, func() bool {
		st, err := os.Stat(part)
		_, errFirst := os.Stat(blobPath(cache, "acme/big", first))
		return err == nil && st.Size() == cutAt && errFirst == nil
	}) {
		t.Fatalf("never had the first file verified and the second's partial at %d bytes", cutAt)
	}
	d1.Kill9()
	before := hub.Stats()
	hub.SetFaults("acme/big", "b.gguf", hubtest.Faults{})

	d2 := hubDaemon(e, hub, cache, d1.StateDir)
	r := d2.Request("POST", "/v1/models/provision?wait=true", map[string]any{"model_ref": "hf:acme/big"})
	if r.Status != 200 {
		t.Fatalf("provision after kill -9: %d %s", r.Status, r.Body)
	}
	after := hub.Stats()
	sent := after.BytesSent - before.BytesSent
	if want := second.Content.Size() - cutAt; sent != want {
		t.Errorf("after the restart the hub sent %d bytes, want %d: the rest of the partial and nothing verified", sent, want)
	}
	resumed := false
	for _, rg := range after.Ranges[len(before.Ranges):] {
		resumed = resumed || rg == fmt.Sprintf("bytes=%d-", cutAt)
	}
	if !resumed {
		t.Errorf("ranges after the restart %v, want bytes=%d-", after.Ranges[len(before.Ranges):], cutAt)
	}
	if n := checkBlobs(t, cache); n != 2 {
		t.Errorf("%d verified blobs, want 2", n)
	}
	t.Logf("DOWNLOAD-RESULT kill9_at=%d resumed=%v refetched_bytes=%d", cutAt, resumed, sent-(second.Content.Size()-cutAt))
}

// TestDownloadDiskFull: the cache's file system (an 8 MiB tmpfs; needs
// root, skipped otherwise) fills while a file downloads. The provision
// fails with a clear 507 (or a 502 naming the space), leaves no blob, and
// once space is freed the same provision completes.
func TestDownloadDiskFull(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	e := harness.New(t)
	mnt := e.Path("small")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	hub := e.StartHub()
	f := &hubtest.File{Path: "m.gguf", Content: hubtest.Synthetic(21, 5<<20), LFS: true,
		Faults: hubtest.Faults{CutAfter: 1 << 20, CutTimes: 1, Stall: 3 * time.Second}}
	if _, err := hub.AddRepo("acme/fat", f); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(mnt, "cache")
	d := hubDaemon(e, hub, cache, "")
	if r := d.Request("POST", "/v1/models/provision", map[string]any{"model_ref": "hf:acme/fat"}); r.Status != 202 {
		t.Fatalf("provision: %d %s", r.Status, r.Body)
	}
	part := blobPath(cache, "acme/fat", f) + ".incomplete"
	if !harness.Poll(30*time.Second, 5*time.Millisecond, func() bool {
		st, err := os.Stat(part)
		return err == nil && st.Size() == 1<<20
	}) {
		t.Fatal("the partial never reached 1 MiB")
	}
	// Fill the disk while the hub stalls.
	filler := filepath.Join(mnt, "filler")
	fh, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(fh, io.LimitReader(zeros{}, 16<<20)) // stops at ENOSPC
	fh.Close()
	r := d.Request("POST", "/v1/models/provision?wait=true", map[string]any{"model_ref": "hf:acme/fat"})
	fullStatus := r.Status
	body := strings.ToLower(string(r.Body))
	if !(r.Status == 507 || (r.Status == 502 && strings.Contains(body, "space"))) {
		t.Fatalf("provision on a full disk: %d %s, want 507 INSUFFICIENT_STORAGE", r.Status, r.Body)
	}
	if _, err := os.Stat(blobPath(cache, "acme/fat", f)); err == nil {
		t.Fatal("a blob was moved into place from a failed download")
	}
	partial := int64(0)
	if st, err := os.Stat(part); err == nil {
		partial = st.Size() // kept for a resume: never more than the file
		if partial > f.Content.Size() {
			t.Fatalf("the partial has %d bytes, the file %d", partial, f.Content.Size())
		}
	}
	t.Logf("after the full disk the partial holds %d bytes", partial)
	checkBlobs(t, cache)
	os.Remove(filler)
	ranges := len(hub.Stats().Ranges)
	r = d.Request("POST", "/v1/models/provision?wait=true", map[string]any{"model_ref": "hf:acme/fat"})
	if r.Status != 200 {
		t.Fatalf("provision after freeing space: %d %s", r.Status, r.Body)
	}
	if partial > 0 {
		if rs := hub.Stats().Ranges[ranges:]; len(rs) == 0 || rs[0] != fmt.Sprintf("bytes=%d-", partial) {
			t.Errorf("after freeing space the hive asked for %v, want to resume at %d", rs, partial)
		}
	}
	if n := checkBlobs(t, cache); n != 1 {
		t.Errorf("%d verified blobs, want 1", n)
	}
	t.Logf("DOWNLOAD-RESULT disk_full status=%d recovered=true", fullStatus)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
