package security

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// TestHubRedirects: the hub token goes to the configured endpoint only. A
// redirect to another host (127.0.0.2, still loopback: nothing here may
// leave the machine) is followed without it, as Hugging Face's LFS CDN
// needs; redirect loops and endless chains end in a clear 502 and leave
// nothing in the cache.
func TestHubRedirects(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	hubToken := "hf_secret_" + strings.Repeat("z", 12)
	hub, err := hubtest.New(hubtest.Options{CDNAddr: "127.0.0.2:0", Token: hubToken})
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	t.Cleanup(func() { hub.Close() })
	if _, err := hub.AddRepo("acme/tiny", &hubtest.File{Path: "tiny.gguf", Content: hubtest.Synthetic(7, 64<<10), LFS: true}); err != nil {
		t.Fatal(err)
	}

	// A second hub whose resolve URLs redirect forever: in a circle
	// between two hosts, or along an endless chain of new URLs.
	loop := newRedirectHub(t)

	for _, c := range []struct {
		name, endpoint, ref string
		ok                  bool
	}{
		{"cdn on another host", hub.URL(), "hf:acme/tiny/tiny.gguf", true},
		{"redirect circle", loop.url, "hf:acme/circle/m.gguf", false},
		{"endless redirects", loop.url, "hf:acme/chain/m.gguf", false},
		{"redirect to itself", loop.url, "hf:acme/self/m.gguf", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cache := e.Path("cache-" + strings.ReplaceAll(c.name, " ", "-"))
			d := e.StartDaemon(harness.DaemonOptions{Config: map[string]any{"provisioner": map[string]any{
				"hf_endpoint": c.endpoint, "hf_token": hubToken, "cache_dir": cache}}})
			r := d.Request("POST", "/v1/models/provision?wait=true", map[string]any{"model_ref": c.ref})
			if c.ok {
				if r.Status != 200 {
					t.Fatalf("provision through the CDN: %d %s", r.Status, r.Body)
				}
				st := hub.Stats()
				if st.CDNRequests == 0 || st.CDNAuthSeen != 0 || st.AuthRequests == 0 {
					t.Fatalf("CDN requests %d with Authorization %d; hub requests with Authorization %d: the token must reach the hub and never the CDN host",
						st.CDNRequests, st.CDNAuthSeen, st.AuthRequests)
				}
			} else {
				if r.Status != 502 || errorCode(r.Body) != "UPSTREAM_ERROR" || !strings.Contains(strings.ToLower(string(r.Body)), "redirect") {
					t.Fatalf("provision with a redirect loop: %d %s, want 502 UPSTREAM_ERROR naming the redirects", r.Status, r.Body)
				}
				if n := countFiles(t, cache); n != 0 {
					t.Errorf("a failed provision left %d files in the cache (blobs, snapshots or bytes)", n)
				}
			}
			if strings.Contains(d.Log(), hubToken) || strings.Contains(mustRead(t, d.StateDir+"/audit.log"), hubToken) {
				t.Errorf("the hub token is in the hive's logs")
			}
		})
	}
	if n := loop.authElsewhere(); n != 0 {
		t.Errorf("%d requests to the second host carried the hub token", n)
	}
}

// countFiles counts regular files under dir, ignoring the hive's metadata,
// lock files and empty partial downloads (kept for a resume, harmless).
func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && !strings.Contains(path, ".rbee-hive") && !strings.HasSuffix(path, ".lock") &&
			!(strings.HasSuffix(path, ".incomplete") && info.Size() == 0) {
			n++
		}
		return nil
	})
	return n
}

// redirectHub serves model info on 127.0.0.1 and answers every resolve
// with a redirect, alternating with a second listener on 127.0.0.2.
type redirectHub struct {
	url   string
	other string
	mu    sync.Mutex
	auth2 int // requests on the second host with an Authorization header
}

func newRedirectHub(t *testing.T) *redirectHub {
	t.Helper()
	h := &redirectHub{}
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		ln1.Close()
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	h.url, h.other = "http://"+ln1.Addr().String(), "http://"+ln2.Addr().String()
	const commit = "0123456789abcdef0123456789abcdef01234567"
	const sha = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	handler := func(second bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if second && r.Header.Get("Authorization") != "" {
				h.mu.Lock()
				h.auth2++
				h.mu.Unlock()
			}
			if strings.HasPrefix(r.URL.Path, "/api/models/") {
				fmt.Fprintf(w, `{"sha":%q,"siblings":[{"rfilename":"m.gguf","size":10,"blobId":%q,"lfs":{"sha256":%q,"size":10}}]}`, commit, commit, sha)
				return
			}
			next := h.other
			if second {
				next = h.url
			}
			switch {
			case strings.Contains(r.URL.Path, "/circle/"):
				http.Redirect(w, r, next+r.URL.Path, http.StatusFound)
			case strings.Contains(r.URL.Path, "/chain/"):
				http.Redirect(w, r, fmt.Sprintf("%s%s?hop=%d", next, r.URL.Path, len(r.URL.RawQuery)+1), http.StatusTemporaryRedirect)
			default:
				http.Redirect(w, r, r.URL.String(), http.StatusMovedPermanently)
			}
		}
	}
	s1 := &http.Server{Handler: handler(false)}
	s2 := &http.Server{Handler: handler(true)}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s1.Serve(ln1) }()
	go func() { defer wg.Done(); s2.Serve(ln2) }()
	t.Cleanup(func() { s1.Close(); s2.Close(); wg.Wait() })
	return h
}

func (h *redirectHub) authElsewhere() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.auth2
}

// TestHubFileNames: a hub (compromised, or a man in the middle of an http
// endpoint) that names repo files so that they climb out of the snapshot
// or point at absolute paths gets a 502, and nothing is written outside
// the cache.
func TestHubFileNames(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	const commit = "0123456789abcdef0123456789abcdef01234567"
	blob := []byte("evil bytes")
	sum := sha256.Sum256(blob)
	names := []string{"../../../../../../escape.gguf", "a/../../../../../../../escape2.gguf", "/tmp/escape3.gguf", "a//b.gguf", "./c.gguf", `..\..\d.gguf`}
	var mu sync.Mutex
	name := ""
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n := name
		mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/api/models/") {
			fmt.Fprintf(w, `{"sha":%q,"siblings":[{"rfilename":%q,"size":%d,"blobId":%q,"lfs":{"sha256":"%x","size":%d}}]}`,
				commit, n, len(blob), commit, sum, len(blob))
			return
		}
		w.Write(blob)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	cache := e.Path("deep", "er", "cache")
	d := e.StartDaemon(harness.DaemonOptions{Config: map[string]any{"provisioner": map[string]any{
		"hf_endpoint": "http://" + ln.Addr().String(), "cache_dir": cache}}})
	for i, n := range names {
		mu.Lock()
		name = n
		mu.Unlock()
		r := d.Request("POST", "/v1/models/provision?wait=true", map[string]any{"model_ref": fmt.Sprintf("hf:evil/repo%d", i)})
		if r.Status != 502 || errorCode(r.Body) != "UPSTREAM_ERROR" {
			t.Errorf("hub file name %q: %d %s, want 502 UPSTREAM_ERROR", n, r.Status, r.Body)
		}
	}
	filepath.Walk(e.Dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && strings.Contains(filepath.Base(path), "escape") {
			t.Errorf("a hub file name wrote %s", path)
		}
		return nil
	})
	if _, err := os.Lstat("/tmp/escape3.gguf"); err == nil {
		t.Errorf("a hub file name wrote /tmp/escape3.gguf")
	}
}
