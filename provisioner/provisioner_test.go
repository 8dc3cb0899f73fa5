package provisioner

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
)

const mib = 1 << 20

// testEnv is a hub on loopback and a cache in a temp dir.
type testEnv struct {
	t     *testing.T
	hub   *hubtest.Server
	cache string
	cfg   Config
}

func newEnv(t *testing.T, opts hubtest.Options) *testEnv {
	t.Helper()
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HF_HOME", t.TempDir())
	t.Setenv("HF_HUB_CACHE", "")
	hub, err := hubtest.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close() })
	e := &testEnv{t: t, hub: hub, cache: t.TempDir()}
	e.cfg = Config{
		CacheDir:     e.cache,
		Endpoint:     hub.URL(),
		DiskFree:     func(string) (uint64, error) { return 1 << 40, nil },
		MaxAttempts:  4,
		RetryInitial: time.Millisecond,
		Logger:       slog.New(slog.DiscardHandler),
	}
	return e
}

// prov starts a Provisioner on the env's cache (call again to "restart").
func (e *testEnv) prov(mods ...func(*Config)) *Provisioner {
	e.t.Helper()
	cfg := e.cfg
	for _, m := range mods {
		m(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { p.Close() })
	return p
}

// addRepo serves org/name with a small config.json, a nested regular file
// and an LFS model.bin of the given size.
func (e *testEnv) addRepo(name string, modelSize int64, seed uint64) *hubtest.Repo {
	e.t.Helper()
	r, err := e.hub.AddRepo(name,
		&hubtest.File{Path: "config.json", Content: hubtest.Bytes([]byte(`{"arch":"llama","seed":` + fmt.Sprint(seed) + `}`))},
		&hubtest.File{Path: "tokenizer/vocab.txt", Content: hubtest.Bytes([]byte("a\nb\nc\n"))},
		&hubtest.File{Path: "model.bin", Content: hubtest.Synthetic(seed, modelSize), LFS: true},
	)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func ensure(t *testing.T, p *Provisioner, ref string) (Model, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return p.Ensure(ctx, ref)
}

func mustEnsure(t *testing.T, p *Provisioner, ref string) Model {
	t.Helper()
	m, err := ensure(t, p, ref)
	if err != nil {
		t.Fatalf("Ensure(%s): %v", ref, err)
	}
	return m
}

func TestFreshDownloadLayoutAndCacheHit(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	repo := e.addRepo("org/model", 3*mib+17, 1)
	p := e.prov()
	m := mustEnsure(t, p, "hf:org/model")

	dir := filepath.Join(e.cache, "models--org--model")
	snap := filepath.Join(dir, "snapshots", repo.Commit)
	if m.LocalPath != snap || m.Commit != repo.Commit {
		t.Fatalf("model = %+v, want path %s commit %s", m, snap, repo.Commit)
	}
	if want := int64(3*mib+17) + repo.File("config.json").Content.Size() + repo.File("tokenizer/vocab.txt").Content.Size(); m.SizeBytes != want {
		t.Errorf("size %d, want %d", m.SizeBytes, want)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "refs", "main")); err != nil || string(b) != repo.Commit {
		t.Errorf("refs/main = %q, %v", b, err)
	}
	for _, path := range []string{"config.json", "tokenizer/vocab.txt", "model.bin"} {
		f := repo.File(path)
		lp := filepath.Join(snap, path)
		target, err := os.Readlink(lp)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if filepath.IsAbs(target) || filepath.Base(target) != f.BlobID() || !strings.HasPrefix(target, "../") {
			t.Errorf("%s links to %s, want a relative link to blob %s", path, target, f.BlobID())
		}
		if got := fileSHA256(t, lp); got != f.SHA256() {
			t.Errorf("%s content sha256 %s, want %s", path, got, f.SHA256())
		}
	}
	if got := p.Stats().BytesDownloaded; got < 3*mib {
		t.Errorf("BytesDownloaded = %d", got)
	}
	if used, _ := p.Usage(); used != m.SizeBytes {
		t.Errorf("Usage = %d, want %d", used, m.SizeBytes)
	}
	p.Close()

	// A restarted provisioner finds it with no request at all.
	e.hub.ResetStats()
	p2 := e.prov()
	got, ok := p2.Cached("hf:org/model")
	if !ok || got.LocalPath != snap || !got.ProvisionedAt.Equal(m.ProvisionedAt) {
		t.Fatalf("Cached after restart = %+v, %v", got, ok)
	}
	mustEnsure(t, p2, "hf:org/model")
	single := mustEnsure(t, p2, "hf:org/model/model.bin") // a file of the cached snapshot
	if single.SHA256 != repo.File("model.bin").SHA256() {
		t.Errorf("single-file sha256 %s", single.SHA256)
	}
	if n := e.hub.Stats().Requests; n != 0 {
		t.Errorf("cache hits made %d requests", n)
	}
	list := p2.List()
	if len(list) != 2 || list[0].Ref != "hf:org/model" || list[1].Ref != "hf:org/model/model.bin" {
		t.Fatalf("List = %+v", list)
	}
	if !list[0].ProvisionedAt.Equal(m.ProvisionedAt) {
		t.Errorf("provisioned_at not kept across restart: %v vs %v", list[0].ProvisionedAt, m.ProvisionedAt)
	}
}

func TestSingleFileAndRevision(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	repo := e.addRepo("org/model", 64<<10, 2)
	p := e.prov()
	m := mustEnsure(t, p, "hf:org/model/config.json@"+repo.Commit)
	f := repo.File("config.json")
	if m.LocalPath != filepath.Join(e.cache, "models--org--model", "snapshots", repo.Commit, "config.json") {
		t.Errorf("local path %s", m.LocalPath)
	}
	if m.SHA256 != f.SHA256() || m.SizeBytes != f.Content.Size() {
		t.Errorf("model %+v, want sha256 %s", m, f.SHA256())
	}
	// Only the asked-for file was fetched.
	if _, err := os.Stat(filepath.Join(e.cache, "models--org--model", "blobs", repo.File("model.bin").BlobID())); !os.IsNotExist(err) {
		t.Errorf("model.bin blob fetched too: %v", err)
	}
}

// A cache written by Hugging Face's own tools is used without any request.
func TestFindsHuggingFaceToolsCache(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	e.hub.Close() // any request would fail
	dir := filepath.Join(e.cache, "models--TheBloke--tiny")
	commit := strings.Repeat("ab", 20)
	content := []byte("gguf weights")
	sum := sha256.Sum256(content)
	blobID := hex.EncodeToString(sum[:])
	must(t, os.MkdirAll(filepath.Join(dir, "blobs"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "blobs", blobID), content, 0o644))
	must(t, os.MkdirAll(filepath.Join(dir, "snapshots", commit), 0o755))
	must(t, os.Symlink("../../blobs/"+blobID, filepath.Join(dir, "snapshots", commit, "tiny.gguf")))
	must(t, os.MkdirAll(filepath.Join(dir, "refs"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "refs", "main"), []byte(commit), 0o644))

	p := e.prov()
	m := mustEnsure(t, p, "hf:TheBloke/tiny/tiny.gguf")
	if m.SHA256 != blobID || m.Commit != commit || m.SizeBytes != int64(len(content)) {
		t.Errorf("model %+v", m)
	}
	if _, ok := p.Cached("hf:TheBloke/tiny/other.gguf"); ok {
		t.Error("a file not in the snapshot is cached")
	}
	if _, ok := p.Cached("hf:TheBloke/tiny@v2"); ok {
		t.Error("an unknown revision is cached")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestResumeAfterCut(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	const size = 4 * mib
	repo := e.addRepo("org/model", size, 3)
	e.hub.SetFaults("org/model", "model.bin", hubtest.Faults{CutAfter: mib, CutTimes: 1})
	p := e.prov()
	m := mustEnsure(t, p, "hf:org/model/model.bin")
	if m.SHA256 != repo.File("model.bin").SHA256() || fileSHA256(t, m.LocalPath) != m.SHA256 {
		t.Fatalf("bad content after resume")
	}
	st := e.hub.Stats()
	if len(st.Ranges) != 1 || !strings.HasPrefix(st.Ranges[0], "bytes=") {
		t.Fatalf("ranges seen %v, want one resume", st.Ranges)
	}
	if st.BytesSent > size+size/4 {
		t.Errorf("sent %d bytes for a %d byte file: not resumed", st.BytesSent, size)
	}
}

// A partial file survives a restart (Close keeps it) and is resumed by the
// next process, which hashes what is already there.
func TestPartialSurvivesRestart(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	const size = 4 * mib
	repo := e.addRepo("org/model", size, 4)
	e.hub.SetFaults("org/model", "model.bin", hubtest.Faults{CutAfter: 3 * mib / 2, CutTimes: 1, Stall: time.Minute})
	p := e.prov()
	pr, err := p.Start("hf:org/model/model.bin")
	must(t, err)
	waitFor(t, func() bool { return pr.Status().BytesDone >= 3*mib/2 })
	p.Close()
	if _, err := pr.Result(); !errors.Is(err, context.Canceled) {
		t.Fatalf("closed provision: %v", err)
	}
	part := filepath.Join(e.cache, "models--org--model", "blobs", repo.File("model.bin").BlobID()+".incomplete")
	if st, err := os.Stat(part); err != nil || st.Size() == 0 {
		t.Fatalf("partial after close: %v", err)
	}

	e.hub.ResetStats()
	p2 := e.prov()
	m := mustEnsure(t, p2, "hf:org/model/model.bin")
	if fileSHA256(t, m.LocalPath) != repo.File("model.bin").SHA256() {
		t.Fatal("bad content")
	}
	if st := e.hub.Stats(); len(st.Ranges) != 1 || st.Ranges[0] != fmt.Sprintf("bytes=%d-", 3*mib/2) {
		t.Errorf("ranges %v", st.Ranges)
	}
	if _, err := os.Stat(part); !os.IsNotExist(err) {
		t.Errorf("partial left behind: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A server that ignores Range gets a fresh start, and the result is right.
func TestServerIgnoresRange(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	repo := e.addRepo("org/model", 2*mib, 5)
	f := repo.File("model.bin")
	part := filepath.Join(e.cache, "models--org--model", "blobs", f.BlobID()+".incomplete")
	must(t, os.MkdirAll(filepath.Dir(part), 0o755))
	// A partial with wrong bytes: it must not survive the restart from zero.
	must(t, os.WriteFile(part, bytes.Repeat([]byte{0xAA}, mib), 0o644))
	e.hub.SetFaults("org/model", "model.bin", hubtest.Faults{IgnoreRange: true})
	p := e.prov()
	m := mustEnsure(t, p, "hf:org/model/model.bin")
	if fileSHA256(t, m.LocalPath) != f.SHA256() {
		t.Fatal("bad content")
	}
	if st := e.hub.Stats(); len(st.Ranges) != 1 {
		t.Errorf("ranges %v", st.Ranges)
	}
}

func TestStalledBodyIsRetried(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	repo := e.addRepo("org/model", 2*mib, 6)
	e.hub.SetFaults("org/model", "model.bin", hubtest.Faults{CutAfter: mib / 2, CutTimes: 1, Stall: time.Minute})
	p := e.prov(func(c *Config) { c.StallTimeout = 200 * time.Millisecond })
	m := mustEnsure(t, p, "hf:org/model/model.bin")
	if fileSHA256(t, m.LocalPath) != repo.File("model.bin").SHA256() {
		t.Fatal("bad content")
	}
	if st := e.hub.Stats(); len(st.Ranges) != 1 {
		t.Errorf("ranges %v, want one resume after the stall", st.Ranges)
	}
}

func TestCorruptionNeverReachesBlobs(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	repo := e.addRepo("org/model", mib, 7)
	f := repo.File("model.bin")
	blobs := filepath.Join(e.cache, "models--org--model", "blobs")

	// Corrupt once: the retry from zero succeeds.
	e.hub.SetFaults("org/model", "model.bin", hubtest.Faults{Corrupt: true, CorruptAt: 1000, CorruptTimes: 1})
	p := e.prov()
	m := mustEnsure(t, p, "hf:org/model/model.bin")
	if fileSHA256(t, m.LocalPath) != f.SHA256() {
		t.Fatal("corrupted content in the cache")
	}
	if st := e.hub.Stats(); st.CDNRequests != 2 {
		t.Errorf("CDN requests %d, want 2 (one retry from zero)", st.CDNRequests)
	}

	// Corrupt always: fails, and neither a blob nor a partial is left.
	_, err := p.Evict("hf:org/model/model.bin", nil)
	must(t, err)
	e.hub.SetFaults("org/model", "model.bin", hubtest.Faults{Corrupt: true, CorruptAt: 0})
	_, err = ensure(t, p, "hf:org/model/model.bin")
	if !errors.Is(err, ErrChecksumMismatch) {
		t.Fatalf("err = %v, want ErrChecksumMismatch", err)
	}
	entries, _ := os.ReadDir(blobs)
	for _, en := range entries {
		t.Errorf("left in blobs: %s", en.Name())
	}

	// A regular (git sha1) file is verified too.
	e.hub.SetFaults("org/model", "config.json", hubtest.Faults{Corrupt: true, CorruptAt: 2})
	if _, err := ensure(t, p, "hf:org/model/config.json"); !errors.Is(err, ErrChecksumMismatch) {
		t.Fatalf("config.json: err = %v, want ErrChecksumMismatch", err)
	}
}

func TestHubErrors(t *testing.T) {
	e := newEnv(t, hubtest.Options{Token: "hf_secret"})
	e.addRepo("org/model", 1024, 8)
	e.addRepo("org/gated", 1024, 9)
	e.hub.SetGated("org/gated", true)
	p := e.prov()
	for ref, want := range map[string]error{
		"hf:org/missing":              ErrModelNotFound,
		"hf:org/model@no-such-branch": ErrModelNotFound,
		"hf:org/model/no-such-file":   ErrModelNotFound,
		"hf:org/gated":                ErrAccessDenied,
	} {
		_, err := ensure(t, p, ref)
		if !errors.Is(err, want) {
			t.Errorf("%s: err = %v, want %v", ref, err, want)
		}
		if want == ErrAccessDenied && (err == nil || !strings.Contains(err.Error(), "HF_TOKEN")) {
			t.Errorf("%s: no HF_TOKEN hint in %v", ref, err)
		}
	}
	// With the token (from HF_TOKEN) the gated repo works.
	t.Setenv("HF_TOKEN", "hf_secret")
	p2 := e.prov()
	mustEnsure(t, p2, "hf:org/gated")
	// A wrong token is refused with 403.
	p3 := e.prov(func(c *Config) { c.Token = "hf_wrong"; c.CacheDir = t.TempDir() })
	if _, err := ensure(t, p3, "hf:org/gated"); !errors.Is(err, ErrAccessDenied) {
		t.Errorf("wrong token: %v", err)
	}
}

func TestTokenFile(t *testing.T) {
	e := newEnv(t, hubtest.Options{Token: "hf_fromfile"})
	e.addRepo("org/gated", 1024, 10)
	e.hub.SetGated("org/gated", true)
	must(t, os.WriteFile(filepath.Join(os.Getenv("HF_HOME"), "token"), []byte("hf_fromfile\n"), 0o600))
	p := e.prov()
	mustEnsure(t, p, "hf:org/gated")
}

func TestRetriesOn429And503(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	repo := e.addRepo("org/model", 256<<10, 11)
	e.hub.SetFaults("org/model", "model.bin", hubtest.Faults{FailFirst: 2, FailStatus: http.StatusTooManyRequests})
	p := e.prov()
	m := mustEnsure(t, p, "hf:org/model/model.bin")
	if m.SHA256 != repo.File("model.bin").SHA256() {
		t.Fatal("bad model")
	}
	_, err := p.Evict(m.Ref, nil)
	must(t, err)
	e.hub.SetFaults("org/model", "model.bin", hubtest.Faults{FailFirst: 100, FailStatus: http.StatusServiceUnavailable})
	if _, err := ensure(t, p, "hf:org/model/model.bin"); !errors.Is(err, ErrUpstream) {
		t.Fatalf("err = %v, want ErrUpstream", err)
	}
	if st := e.hub.Stats(); st.CDNRequests != 2+1+4 {
		t.Errorf("CDN requests %d, want 7 (3 then MaxAttempts=4)", st.CDNRequests)
	}
}

func TestConnectionRefusedIsUpstream(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	e.hub.Close()
	p := e.prov(func(c *Config) { c.MaxAttempts = 2 })
	if _, err := ensure(t, p, "hf:org/model"); !errors.Is(err, ErrUpstream) {
		t.Fatalf("err = %v, want ErrUpstream", err)
	}
}

// The CDN is 127.0.0.1 on another port: Go would keep the header there, we
// must not.
func TestAuthorizationDroppedOnRedirect(t *testing.T) {
	e := newEnv(t, hubtest.Options{Token: "hf_secret"})
	e.addRepo("org/model", 256<<10, 12)
	p := e.prov(func(c *Config) { c.Token = "hf_secret" })
	mustEnsure(t, p, "hf:org/model/model.bin")
	st := e.hub.Stats()
	if st.CDNRequests != 1 || st.CDNAuthSeen != 0 {
		t.Errorf("CDN requests %d, with Authorization %d", st.CDNRequests, st.CDNAuthSeen)
	}
	if st.AuthRequests < 2 {
		t.Errorf("token not sent to the hub: %d requests with it", st.AuthRequests)
	}
}

func TestRedirectLoopFails(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			fmt.Fprintf(w, `{"sha":"%s","siblings":[{"rfilename":"m.bin","size":3,"blobId":"%s","lfs":{"sha256":"%s","size":3}}]}`,
				strings.Repeat("1", 40), strings.Repeat("2", 40), strings.Repeat("3", 64))
			return
		}
		http.Redirect(w, r, srv.URL+"/loop", http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	e := newEnv(t, hubtest.Options{})
	p := e.prov(func(c *Config) { c.Endpoint = srv.URL })
	_, err := ensure(t, p, "hf:org/model/m.bin")
	if !errors.Is(err, ErrUpstream) || !strings.Contains(err.Error(), "redirect") {
		t.Fatalf("err = %v", err)
	}
}

func TestConcurrentProvisionsDownloadOnce(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	repo := e.addRepo("org/model", 2*mib, 13)
	e.hub.SetFaults("org/model", "model.bin", hubtest.Faults{Stall: 100 * time.Millisecond})
	p := e.prov()
	var wg sync.WaitGroup
	ids := make([]string, 8)
	errs := make([]error, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref := "hf:org/model/model.bin"
			if i%2 == 1 {
				ref = "hf:org/model" // shares the blob
			}
			pr, err := p.Start(ref)
			if err != nil {
				errs[i] = err
				return
			}
			ids[i] = pr.ID()
			_, errs[i] = pr.Result()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
	}
	for i := 2; i < len(ids); i++ {
		if ids[i] != ids[i%2] {
			t.Errorf("provision %d has id %s, want %s (joined)", i, ids[i], ids[i%2])
		}
	}
	if st := e.hub.Stats(); st.CDNRequests != 1 {
		t.Errorf("model.bin downloaded %d times", st.CDNRequests)
	}
	if pr, ok := p.Lookup(ids[0]); !ok || pr.Status().State != StateReady {
		t.Errorf("Lookup(%s) = %v", ids[0], ok)
	}
	if _, ok := p.Lookup("prov-nope"); ok {
		t.Error("Lookup of an unknown id")
	}
	_ = repo
}

// TestHelperProcess is not a test: the cross-process lock test runs the
// test binary again as a second process that holds a blob lock.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("RBEE_PROVISIONER_HELPER") != "lock" {
		t.Skip("helper process only")
	}
	lock, src, dst := os.Getenv("HELPER_LOCK"), os.Getenv("HELPER_SRC"), os.Getenv("HELPER_DST")
	unlock, err := lockFile(context.Background(), lock)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	bufio.NewReader(os.Stdin).ReadString('\n') // the parent says when
	// Finish "our" download: the blob appears, then the lock is released.
	must(t, os.MkdirAll(filepath.Dir(dst), 0o755))
	must(t, os.Rename(src, dst))
	unlock()
	os.Exit(0)
}

func TestCrossProcessLock(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	repo := e.addRepo("org/model", 512<<10, 14)
	f := repo.File("model.bin")
	p := e.prov()

	src := filepath.Join(t.TempDir(), "blob")
	content := make([]byte, f.Content.Size())
	_, err := f.Content.ReadAt(content, 0)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	must(t, os.WriteFile(src, content, 0o644))
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "RBEE_PROVISIONER_HELPER=lock",
		"HELPER_LOCK="+p.lockPath("org/model", f.BlobID()), "HELPER_SRC="+src,
		"HELPER_DST="+filepath.Join(e.cache, "models--org--model", "blobs", f.BlobID()))
	stdin, err := cmd.StdinPipe()
	must(t, err)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "locked\n" {
		t.Fatalf("helper said %q", line)
	}

	busy := make(chan struct{})
	var once sync.Once
	testHookLockBusy = func(string) { once.Do(func() { close(busy) }) }
	t.Cleanup(func() { testHookLockBusy = nil })
	pr, err := p.Start("hf:org/model/model.bin")
	must(t, err)
	select {
	case <-busy: // we wait on the other process's lock
	case <-pr.Done():
		t.Fatalf("provision finished while another process held the lock: %v", pr.Status())
	}
	io.WriteString(stdin, "go\n")
	m, err := pr.Result()
	must(t, err)
	must(t, cmd.Wait())
	if fileSHA256(t, m.LocalPath) != f.SHA256() {
		t.Fatal("bad content")
	}
	if st := e.hub.Stats(); st.CDNRequests != 0 {
		t.Errorf("downloaded %d times although the other process wrote the blob", st.CDNRequests)
	}
}

func TestInsufficientStorage(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	e.addRepo("org/model", mib, 15)
	p := e.prov(func(c *Config) { c.DiskFree = func(string) (uint64, error) { return 1000, nil } })
	_, err := ensure(t, p, "hf:org/model/model.bin")
	var se *StorageError
	if !errors.Is(err, ErrInsufficientStorage) || !errors.As(err, &se) {
		t.Fatalf("err = %v", err)
	}
	if se.RequiredBytes != mib || se.AvailableBytes != 1000 {
		t.Errorf("storage error %+v", se)
	}
	if st := e.hub.Stats(); st.CDNRequests != 0 {
		t.Errorf("downloaded anyway")
	}
}

func TestEvict(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	repo1 := e.addRepo("org/model", 256<<10, 16)
	p := e.prov()
	if _, err := p.Evict("hf:org/model/model.bin", nil); !errors.Is(err, ErrNotCached) {
		t.Fatalf("evict of an unknown model: %v", err)
	}
	old := mustEnsure(t, p, "hf:org/model/model.bin@"+repo1.Commit)
	mustEnsure(t, p, "hf:org/model/config.json@"+repo1.Commit)

	// A new commit on main with the same model.bin: two snapshots share the blob.
	repo2, err := e.hub.AddRepo("org/model",
		&hubtest.File{Path: "model.bin", Content: hubtest.Synthetic(16, 256<<10), LFS: true},
		&hubtest.File{Path: "README.md", Content: hubtest.Bytes([]byte("new"))})
	must(t, err)
	cur := mustEnsure(t, p, "hf:org/model/model.bin")
	if cur.Commit != repo2.Commit || cur.Commit == old.Commit {
		t.Fatalf("commits %s %s", old.Commit, cur.Commit)
	}
	blob := filepath.Join(e.cache, "models--org--model", "blobs", repo2.File("model.bin").BlobID())

	inUse := func(ref string) bool { return ref == old.Ref }
	if _, err := p.Evict(old.Ref, inUse); !errors.Is(err, ErrInUse) || strings.Contains(err.Error(), "shares files") {
		t.Fatalf("evict in use: %v", err)
	}
	freed, err := p.Evict(old.Ref, nil)
	must(t, err)
	if freed != 0 {
		t.Errorf("freed %d, but the blob is still used by the other snapshot", freed)
	}
	if _, err := os.Stat(blob); err != nil {
		t.Fatalf("shared blob removed: %v", err)
	}
	if _, ok := p.Cached(cur.Ref); !ok {
		t.Fatal("the other snapshot's model is gone")
	}
	freed, err = p.Evict(cur.Ref, nil)
	must(t, err)
	if freed != 256<<10 {
		t.Errorf("freed %d, want %d", freed, 256<<10)
	}
	if _, err := os.Stat(blob); !os.IsNotExist(err) {
		t.Errorf("blob still there: %v", err)
	}
	// config.json of the first commit is untouched.
	var refs []string
	for _, m := range p.List() {
		refs = append(refs, m.Ref)
	}
	if len(refs) != 1 || refs[0] != "hf:org/model/config.json@"+repo1.Commit {
		t.Errorf("List = %v", refs)
	}
	if _, ok := p.Cached(refs[0]); !ok {
		t.Error("config.json evicted too")
	}
	// refs/main pointed at the evicted snapshot: gone.
	if _, err := os.Stat(filepath.Join(e.cache, "models--org--model", "refs", "main")); !os.IsNotExist(err) {
		t.Errorf("refs/main kept: %v", err)
	}
}

// Evicting a whole repo takes the single-file models inside it along, and
// is refused while one of them is in use.
func TestEvictWholeRepo(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	e.addRepo("org/model", 128<<10, 17)
	var events []Event
	var mu sync.Mutex
	p := e.prov(func(c *Config) {
		c.Notify = func(ev Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }
	})
	whole := mustEnsure(t, p, "hf:org/model")
	mustEnsure(t, p, "hf:org/model/model.bin")
	if _, err := p.Evict("hf:org/model", func(r string) bool { return r == "hf:org/model/model.bin" }); !errors.Is(err, ErrInUse) ||
		!strings.Contains(err.Error(), "shares files with hf:org/model/model.bin") {
		t.Fatalf("err = %v", err)
	}
	freed, err := p.Evict("hf:org/model", nil)
	must(t, err)
	if freed != whole.SizeBytes {
		t.Errorf("freed %d, want %d", freed, whole.SizeBytes)
	}
	if len(p.List()) != 0 {
		t.Errorf("List = %v", p.List())
	}
	if _, err := os.Stat(filepath.Join(e.cache, "models--org--model")); !os.IsNotExist(err) {
		t.Errorf("repo dir left: %v", err)
	}
	if used, _ := p.Usage(); used != 0 {
		t.Errorf("usage %d", used)
	}
	mu.Lock()
	defer mu.Unlock()
	evicted := 0
	for _, ev := range events {
		if ev.Kind == EventModelEvicted {
			evicted++
		}
	}
	if evicted != 2 {
		t.Errorf("%d evicted events, want 2", evicted)
	}
}

func TestLRUCacheLimit(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	const size = 200 << 10
	for i, name := range []string{"org/a", "org/b", "org/c", "org/d"} {
		_, err := e.hub.AddRepo(name, &hubtest.File{Path: "m.bin", Content: hubtest.Synthetic(uint64(100+i), size), LFS: true})
		must(t, err)
	}
	inUse := map[string]bool{}
	var mu sync.Mutex
	p := e.prov(func(c *Config) {
		c.MaxCacheBytes = 2*size + size/2
		c.InUse = func(ref string) bool { mu.Lock(); defer mu.Unlock(); return inUse[ref] }
	})
	mustEnsure(t, p, "hf:org/a/m.bin")
	mustEnsure(t, p, "hf:org/b/m.bin")
	p.Touch("hf:org/a/m.bin") // b is now the least recently used
	mustEnsure(t, p, "hf:org/c/m.bin")
	cached := func() (out []string) {
		for _, m := range p.List() {
			out = append(out, strings.TrimPrefix(m.Ref, "hf:org/"))
		}
		return out
	}
	if got := strings.Join(cached(), ","); got != "a/m.bin,c/m.bin" {
		t.Fatalf("after c: %s, want b evicted", got)
	}
	// a is older than c now, but in use: c goes.
	p.Touch("hf:org/c/m.bin")
	mu.Lock()
	inUse["hf:org/a/m.bin"] = true
	mu.Unlock()
	mustEnsure(t, p, "hf:org/d/m.bin")
	if got := strings.Join(cached(), ","); got != "a/m.bin,d/m.bin" {
		t.Fatalf("after d: %s, want c evicted", got)
	}
	if used, limit := p.Usage(); used > limit {
		t.Errorf("usage %d over limit %d", used, limit)
	}
}

func TestProgressSubscribers(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	const size = 8 * mib
	e.addRepo("org/model", size, 18)
	e.hub.SetFaults("org/model", "model.bin", hubtest.Faults{Stall: 50 * time.Millisecond})
	var mu sync.Mutex
	kinds := map[EventKind]int{}
	p := e.prov(func(c *Config) {
		c.Notify = func(ev Event) { mu.Lock(); kinds[ev.Kind]++; mu.Unlock() }
	})
	pr, err := p.Start("hf:org/model/model.bin")
	must(t, err)
	slow, _ := pr.Subscribe() // never read until the end
	fast, _ := pr.Subscribe()
	gone, cancel := pr.Subscribe()
	cancel()
	for range gone {
	}
	var last Status
	n := 0
	for st := range fast {
		if st.BytesDone < last.BytesDone && last.State == st.State {
			t.Errorf("bytes went back: %d after %d", st.BytesDone, last.BytesDone)
		}
		last = st
		n++
	}
	if last.State != StateReady || last.BytesDone != size || last.BytesTotal != size {
		t.Fatalf("final status %+v", last)
	}
	<-pr.Done() // the slow subscriber did not hold the download up
	var slowLast Status
	for st := range slow {
		slowLast = st
	}
	if slowLast.State != StateReady || slowLast.ID != pr.ID() {
		t.Errorf("slow subscriber's last status %+v", slowLast)
	}
	// A subscription after the end gets the final status and is closed.
	after, _ := pr.Subscribe()
	if st, ok := <-after; !ok || st.State != StateReady {
		t.Errorf("late subscriber got %+v %v", st, ok)
	}
	if _, ok := <-after; ok {
		t.Error("late subscription not closed")
	}
	mu.Lock()
	defer mu.Unlock()
	if kinds[EventProvisionStarted] != 1 || kinds[EventProvisionDone] != 1 {
		t.Errorf("events %v", kinds)
	}
	if len(p.Active()) != 0 {
		t.Errorf("active %v", p.Active())
	}
}

func TestFailedProvisionStatus(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	var mu sync.Mutex
	var failed []Event
	p := e.prov(func(c *Config) {
		c.Notify = func(ev Event) {
			if ev.Kind == EventProvisionFailed {
				mu.Lock()
				failed = append(failed, ev)
				mu.Unlock()
			}
		}
	})
	pr, err := p.Start("hf:org/none")
	must(t, err)
	ch, _ := pr.Subscribe()
	var last Status
	for st := range ch {
		last = st
	}
	if last.State != StateFailed || !errors.Is(last.Err, ErrModelNotFound) || last.Error == "" {
		t.Errorf("final status %+v", last)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failed) != 1 {
		t.Errorf("failed events %d", len(failed))
	}
}

func TestFileRefs(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	local := t.TempDir()
	outside := t.TempDir()
	path := filepath.Join(local, "m.gguf")
	must(t, os.WriteFile(path, []byte("local weights"), 0o644))
	must(t, os.WriteFile(filepath.Join(outside, "x.gguf"), []byte("x"), 0o644))
	must(t, os.Symlink(filepath.Join(outside, "x.gguf"), filepath.Join(local, "escape.gguf")))
	p := e.prov(func(c *Config) { c.LocalDirs = []string{local} })

	for _, ref := range []string{"file:" + filepath.Join(outside, "x.gguf"), "file:" + filepath.Join(local, "escape.gguf"), "file:" + local + "x/m.gguf"} {
		var re *RefError
		if _, err := p.Resolve(ref); !errors.As(err, &re) || re.Rule != "outside local dirs" {
			t.Errorf("Resolve(%s) = %v", ref, err)
		}
	}
	if _, err := ensure(t, p, "file:"+filepath.Join(local, "missing.gguf")); !errors.Is(err, ErrModelNotFound) {
		t.Errorf("missing file: %v", err)
	}
	ref := "file:" + path
	if _, ok := p.Cached(ref); ok {
		t.Fatal("cached before hashing")
	}
	m := mustEnsure(t, p, ref)
	if m.SHA256 != fileSHA256(t, path) || m.LocalPath != path {
		t.Fatalf("model %+v", m)
	}
	p.Close()
	p2 := e.prov(func(c *Config) { c.LocalDirs = []string{local} })
	if got, ok := p2.Cached(ref); !ok || got.SHA256 != m.SHA256 {
		t.Fatal("hash not recorded across restart")
	}
	// A changed file is hashed again.
	must(t, os.WriteFile(path, []byte("new local weights"), 0o644))
	must(t, os.Chtimes(path, time.Now(), time.Now().Add(time.Hour)))
	if _, ok := p2.Cached(ref); ok {
		t.Fatal("a changed file is still cached")
	}
	if m2 := mustEnsure(t, p2, ref); m2.SHA256 != fileSHA256(t, path) {
		t.Fatal("not rehashed")
	}
	// Evicting a file: model forgets it and leaves the file alone.
	if freed, err := p2.Evict(ref, nil); err != nil || freed != 0 {
		t.Fatalf("evict: %d %v", freed, err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal("the local file was deleted")
	}
}

func TestCatalogNames(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	repo := e.addRepo("org/model", 1024, 19)
	p := e.prov(func(c *Config) {
		c.Catalog = []CatalogEntry{{Name: "tiny", ModelRef: "hf:org/model/model.bin", VRAMBytes: 1234}}
	})
	r, err := p.Resolve("tiny")
	if err != nil || r.String() != "hf:org/model/model.bin" {
		t.Fatalf("Resolve = %v, %v", r, err)
	}
	m := mustEnsure(t, p, "tiny")
	if m.Ref != "hf:org/model/model.bin" || m.VRAMBytes != 1234 || m.SHA256 != repo.File("model.bin").SHA256() {
		t.Errorf("model %+v", m)
	}
	var re *RefError
	if _, err := p.Resolve("huge"); !errors.As(err, &re) || re.Rule != "unknown catalog name" {
		t.Errorf("unknown name: %v", err)
	}
	if len(p.Catalog()) != 1 {
		t.Error("catalog")
	}
	if _, err := New(Config{CacheDir: t.TempDir(), Catalog: []CatalogEntry{{Name: "x", ModelRef: "y"}}}); err == nil {
		t.Error("a catalog entry pointing at a name is accepted")
	}
}

func TestCacheDirFromEnvironment(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("HF_HOME", home)
	p, err := New(Config{})
	must(t, err)
	defer p.Close()
	if p.CacheDir() != filepath.Join(home, "hub") {
		t.Errorf("cache dir %s", p.CacheDir())
	}
	hc := t.TempDir()
	t.Setenv("HF_HUB_CACHE", hc)
	p2, err := New(Config{})
	must(t, err)
	defer p2.Close()
	if p2.CacheDir() != hc {
		t.Errorf("cache dir %s", p2.CacheDir())
	}
}

// A snapshot holding only the files provisioned one by one is not the
// whole repo.
func TestWholeRepoAfterSingleFile(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	repo := e.addRepo("org/model", 64<<10, 20)
	p := e.prov()
	mustEnsure(t, p, "hf:org/model/config.json")
	whole := mustEnsure(t, p, "hf:org/model")
	for _, path := range []string{"config.json", "tokenizer/vocab.txt", "model.bin"} {
		if got := fileSHA256(t, filepath.Join(whole.LocalPath, path)); got != repo.File(path).SHA256() {
			t.Errorf("%s missing or wrong in the whole repo", path)
		}
	}
}

// The kernel's ENOSPC while writing is an insufficient-storage error: the
// partial file is a link to /dev/full, where every write fails that way.
func TestDiskFullWhileWriting(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	e := newEnv(t, hubtest.Options{})
	repo := e.addRepo("org/model", 256<<10, 21)
	blobs := filepath.Join(e.cache, "models--org--model", "blobs")
	must(t, os.MkdirAll(blobs, 0o755))
	must(t, os.Symlink("/dev/full", filepath.Join(blobs, repo.File("model.bin").BlobID()+".incomplete")))
	p := e.prov()
	_, err := ensure(t, p, "hf:org/model/model.bin")
	var se *StorageError
	if !errors.Is(err, ErrInsufficientStorage) || !errors.As(err, &se) {
		t.Fatalf("err = %v, want ErrInsufficientStorage", err)
	}
	if _, err := os.Stat(filepath.Join(blobs, repo.File("model.bin").BlobID())); !os.IsNotExist(err) {
		t.Errorf("blob exists: %v", err)
	}
}

// scriptedHub serves one LFS file whose content answers are scripted per
// request, for protocol corners the hubtest server does not produce.
func scriptedHub(t *testing.T, content []byte, answer func(n int, w http.ResponseWriter, r *http.Request) bool) (url string, requests func() []string) {
	t.Helper()
	sum := sha256.Sum256(content)
	oid := hex.EncodeToString(sum[:])
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			fmt.Fprintf(w, `{"sha":"%s","siblings":[{"rfilename":"m.bin","size":%d,"blobId":"%s","lfs":{"sha256":"%s","size":%d}}]}`,
				strings.Repeat("c", 40), len(content), strings.Repeat("d", 40), oid, len(content))
			return
		}
		mu.Lock()
		seen = append(seen, r.Header.Get("Range"))
		n := len(seen)
		mu.Unlock()
		if answer(n, w, r) {
			return
		}
		http.ServeContent(w, r, "m.bin", time.Time{}, bytes.NewReader(content))
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), seen...) }
}

func TestProtocolCorners(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	sum := sha256.Sum256(content)
	oid := hex.EncodeToString(sum[:])
	cases := []struct {
		name    string
		partial int // bytes of a correct partial file left before
		answer  func(n int, w http.ResponseWriter, r *http.Request) bool
		ranges  []string
	}{
		{"more data than announced", 0, func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n == 1 {
				w.Write(append(append([]byte(nil), content...), "extra"...))
				return true
			}
			return false
		}, []string{"", ""}},
		{"wrong Content-Range", 1000, func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n == 1 {
				w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(content)-1, len(content)))
				w.WriteHeader(http.StatusPartialContent)
				w.Write(content)
				return true
			}
			return false
		}, []string{"bytes=1000-", ""}},
		{"range not satisfiable", 1000, func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n == 1 {
				w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
				return true
			}
			return false
		}, []string{"bytes=1000-", ""}},
		{"short body", 0, func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n == 1 {
				w.Header().Set("Content-Length", fmt.Sprint(len(content)))
				w.Write(content[:4096])
				return true // the connection closes short
			}
			return false
		}, []string{"", "bytes=4096-"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url, requests := scriptedHub(t, content, c.answer)
			e := newEnv(t, hubtest.Options{})
			if c.partial > 0 {
				part := filepath.Join(e.cache, "models--org--model", "blobs", oid+".incomplete")
				must(t, os.MkdirAll(filepath.Dir(part), 0o755))
				must(t, os.WriteFile(part, content[:c.partial], 0o644))
			}
			p := e.prov(func(cfg *Config) { cfg.Endpoint = url })
			m := mustEnsure(t, p, "hf:org/model/m.bin")
			if fileSHA256(t, m.LocalPath) != oid {
				t.Fatal("bad content")
			}
			if got := requests(); strings.Join(got, "|") != strings.Join(c.ranges, "|") {
				t.Errorf("requests with ranges %q, want %q", got, c.ranges)
			}
		})
	}
}

// A provision of another ref that needs a blob already downloading follows
// that download's progress instead of sitting at zero.
func TestSharedBlobProgress(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	repo := e.addRepo("org/model", 2*mib, 22)
	e.hub.SetFaults("org/model", "model.bin", hubtest.Faults{CutAfter: mib / 2, CutTimes: 1, Stall: time.Hour})
	p := e.prov()
	single, err := p.Start("hf:org/model/model.bin")
	must(t, err)
	waitFor(t, func() bool { return single.Status().BytesDone >= mib/2 }) // stalled there
	whole, err := p.Start("hf:org/model")
	must(t, err)
	// config.json comes first, then it follows model.bin (files go in order).
	waitFor(t, func() bool { return whole.Status().BytesDone >= repo.File("config.json").Content.Size()+mib/2 })
	e.hub.Unstall() // the stalled response is cut; the download resumes
	for _, pr := range []*Provision{single, whole} {
		if _, err := pr.Result(); err != nil {
			t.Fatal(err)
		}
		if st := pr.Status(); st.BytesDone != st.BytesTotal {
			t.Errorf("%s: %d of %d bytes", st.ModelRef, st.BytesDone, st.BytesTotal)
		}
	}
	if st := e.hub.Stats(); st.CDNRequests != 2 || len(st.Ranges) != 1 {
		t.Errorf("CDN requests %d, ranges %v: want one download, resumed once", st.CDNRequests, st.Ranges)
	}
}

func TestEndpointFromEnvironment(t *testing.T) {
	e := newEnv(t, hubtest.Options{})
	e.addRepo("org/model", 1024, 23)
	t.Setenv("HF_ENDPOINT", e.hub.URL()+"/")
	p := e.prov(func(c *Config) { c.Endpoint = "" })
	mustEnsure(t, p, "hf:org/model/model.bin")
	if st := e.hub.Stats(); st.APIRequests != 1 {
		t.Errorf("API requests %d", st.APIRequests)
	}
}

// File names from the hub never lead outside the snapshot.
func TestUnsafeFileNamesRefused(t *testing.T) {
	for _, name := range []string{"../escape.bin", "a/../../b.bin", "/etc/x", "dir/", "a//b", "./x", `a\b`} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"sha":"%s","siblings":[{"rfilename":%q,"size":1,"blobId":"%s"}]}`,
				strings.Repeat("e", 40), name, strings.Repeat("f", 40))
		}))
		e := newEnv(t, hubtest.Options{})
		p := e.prov(func(c *Config) { c.Endpoint = srv.URL })
		_, err := ensure(t, p, "hf:org/model")
		srv.Close()
		if !errors.Is(err, ErrUpstream) || !strings.Contains(err.Error(), "unsafe file name") {
			t.Errorf("%q: err = %v", name, err)
		}
	}
	if !safeRepoPath("sub/dir/model-00001-of-00002.safetensors") {
		t.Error("a nested file name refused")
	}
}
