package provisioner

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// hubScript is what the fuzzed hub answers for one iteration.
type hubScript struct {
	info   []byte // body of /api/models/.../revision/...
	blob   []byte // body of /.../resolve/...
	mode   byte   // how the blob is served, see serveBlob
	status int    // status of the blob response in mode 4
}

const fuzzCommit = "0123456789abcdef0123456789abcdef01234567"

// serveBlob answers a resolve request by the script's mode: 0 honest
// (Range honoured), 1 a Content-Length larger than the body, 2 an endless
// body, 3 a wrong Content-Range for a range request, 4 the fuzzed status
// code with the body, 5 a redirect to itself, 6 a flipped byte.
func (s *hubScript) serveBlob(w http.ResponseWriter, r *http.Request) {
	body := s.blob
	start := 0
	if rg := r.Header.Get("Range"); strings.HasPrefix(rg, "bytes=") && strings.HasSuffix(rg, "-") {
		if n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-")); err == nil && n >= 0 && n <= len(body) {
			start = n
		}
	}
	switch s.mode % 7 {
	case 0:
		if start > 0 {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(body)-1, len(body)))
			w.WriteHeader(http.StatusPartialContent)
		}
		w.Write(body[start:])
	case 1:
		// A lying Content-Length: the server cuts the connection after
		// the short body, the client sees an unexpected EOF.
		w.Header().Set("Content-Length", strconv.Itoa(len(body)+1+int(s.status)))
		w.Write(body)
	case 2:
		chunk := append([]byte(nil), body...)
		if len(chunk) == 0 {
			chunk = []byte{0}
		}
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	case 3:
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start+1, len(body), len(body)+7))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(body[start:])
	case 4:
		code := s.status
		if code < 100 || code > 599 {
			code = 500
		}
		if code >= 300 && code < 400 {
			w.Header().Set("Location", r.URL.String())
		}
		w.WriteHeader(code)
		w.Write(body)
	case 5:
		http.Redirect(w, r, r.URL.String(), http.StatusFound)
	case 6:
		b := append([]byte(nil), body...)
		if len(b) > 0 {
			b[len(b)/2] ^= 0x5a
		}
		w.Write(b)
	}
}

// FuzzHubResponses feeds the hub client arbitrary model info JSON (lying
// sizes, bad ids, odd file names) and blob answers (short, endless,
// corrupt, wrong ranges, odd status codes) from a hub on 127.0.0.1. The
// provision may fail, but it never panics, never writes outside the cache,
// never leaves a blob that does not match its name, and never succeeds with
// a model outside the cache.
func FuzzHubResponses(f *testing.F) {
	blob := []byte("GGUF fuzz model bytes\n")
	lfs := sha256.Sum256(blob)
	git := sha1.Sum(append([]byte(fmt.Sprintf("blob %d\x00", len(blob))), blob...))
	good := func(name string, size int, id string, isLFS bool) []byte {
		l := "null"
		if isLFS {
			l = fmt.Sprintf(`{"sha256":%q,"size":%d}`, id, size)
		}
		return []byte(fmt.Sprintf(`{"sha":%q,"siblings":[{"rfilename":%q,"size":%d,"blobId":%q,"lfs":%s}]}`,
			fuzzCommit, name, size, hex.EncodeToString(git[:]), l))
	}
	lfsID, gitID := hex.EncodeToString(lfs[:]), hex.EncodeToString(git[:])
	for mode := byte(0); mode < 7; mode++ {
		f.Add(good("model.gguf", len(blob), lfsID, true), blob, mode, 200)
	}
	f.Add(good("config.json", len(blob), gitID, false), blob, byte(0), 200)
	f.Add(good("model.gguf", len(blob)-3, lfsID, true), blob, byte(0), 200)
	f.Add(good("model.gguf", len(blob)+3, lfsID, true), blob, byte(0), 200)
	f.Add(good("model.gguf", -1, lfsID, true), blob, byte(0), 200)
	f.Add(good("model.gguf", 1<<62, lfsID, true), blob, byte(0), 200)
	for _, up := range []string{"../", "../../../", "../../../../", "../../../../../", "../../../../../../"} {
		f.Add(good(up+"escape.gguf", len(blob), lfsID, true), blob, byte(0), 200)
	}
	f.Add(good("a/../../b.gguf", len(blob), lfsID, true), blob, byte(0), 200)
	f.Add(good("/etc/passwd", len(blob), lfsID, true), blob, byte(0), 200)
	f.Add(good("dir/", len(blob), lfsID, true), blob, byte(0), 200)
	f.Add(good("model.gguf", len(blob), "../../../../tmp/x", true), blob, byte(0), 200)
	f.Add([]byte(`{"sha":"`+fuzzCommit+`","siblings":[{"rfilename":"x"}]}`), blob, byte(0), 200)
	f.Add([]byte(`{"sha":"main","siblings":[]}`), blob, byte(0), 200)
	f.Add([]byte(`{"sha":`), blob, byte(0), 200)
	f.Add([]byte(`[]`), blob, byte(0), 200)
	f.Add([]byte(`{"sha":"`+fuzzCommit+`","siblings":null}`), blob, byte(0), 200)
	f.Add(good("model.gguf", len(blob), lfsID, true), blob, byte(4), 429)
	f.Add(good("model.gguf", len(blob), lfsID, true), blob, byte(4), 503)
	f.Add(good("model.gguf", len(blob), lfsID, true), blob, byte(4), 416)
	f.Add(good("model.gguf", len(blob), lfsID, true), blob, byte(4), 301)

	var script atomic.Pointer[hubScript]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := script.Load()
		if s == nil {
			http.NotFound(w, r)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/api/models/") {
			w.Header().Set("Content-Type", "application/json")
			w.Write(s.info)
			return
		}
		s.serveBlob(w, r)
	})}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	tr := &http.Transport{ResponseHeaderTimeout: 2 * time.Second}
	f.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
		<-served
	})
	endpoint := "http://" + ln.Addr().String()

	f.Fuzz(func(t *testing.T, info, body []byte, mode byte, status int) {
		if len(body) > 1<<16 || len(info) > 1<<16 {
			return
		}
		script.Store(&hubScript{info: info, blob: body, mode: mode, status: status})
		root := t.TempDir()
		cache := filepath.Join(root, "a", "b", "cache")
		p, err := New(Config{
			CacheDir: cache, Endpoint: endpoint, Token: "fuzz-secret",
			HTTPClient: &http.Client{Transport: tr}, MaxAttempts: 2, RetryInitial: time.Millisecond,
			StallTimeout: 300 * time.Millisecond, Logger: discardLogger(),
			// A small disk: a lying huge size is refused up front instead
			// of streaming an endless body until the deadline.
			DiskFree: func(string) (uint64, error) { return 16 << 20, nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		watchdog := time.AfterFunc(15*time.Second, func() {
			panic(fmt.Sprintf("provision still running after 15s: mode %d status %d info %q", mode, status, info))
		})
		m, perr := p.Ensure(ctx, "hf:fuzz/model")
		cancel()
		p.Close()
		watchdog.Stop()
		tr.CloseIdleConnections()

		// Nothing outside the cache directory (the file system above the
		// cache is root/a/b, and nothing else is in root).
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && path != root && !within(path, cache) && !within(cache, path) {
				t.Fatalf("provision wrote %s outside the cache (err %v)", path, perr)
			}
			return nil
		})
		checkCacheSound(t, cache)
		if perr == nil && !within(m.LocalPath, cache) {
			t.Fatalf("model at %s, outside the cache %s", m.LocalPath, cache)
		}
	})
}

// checkCacheSound fails unless every complete blob under cache hashes to its
// name and every snapshot symlink stays inside the cache.
func checkCacheSound(t *testing.T, cache string) {
	t.Helper()
	filepath.WalkDir(cache, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			target, err := filepath.EvalSymlinks(path)
			if err == nil && !within(target, cache) {
				t.Fatalf("symlink %s points outside the cache: %s", path, target)
			}
			dest, _ := os.Readlink(path)
			if !filepath.IsAbs(dest) && !within(filepath.Join(filepath.Dir(path), dest), cache) {
				t.Fatalf("symlink %s → %s leaves the cache", path, dest)
			}
			return nil
		}
		if d.IsDir() || filepath.Base(filepath.Dir(path)) != "blobs" || strings.Contains(d.Name(), ".") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s256 := sha256.Sum256(b)
		s1 := sha1.Sum(append([]byte(fmt.Sprintf("blob %d\x00", len(b))), b...))
		if d.Name() != hex.EncodeToString(s256[:]) && d.Name() != hex.EncodeToString(s1[:]) {
			t.Fatalf("blob %s does not match its content (%d bytes)", path, len(b))
		}
		return nil
	})
}

// discardLogger keeps fuzzing output quiet.
func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestEndlessModelInfo: a hub whose model info never ends (an endless list
// of files) costs the client a bounded read (64 MiB), then an upstream
// error; nothing is written to the cache.
func TestEndlessModelInfo(t *testing.T) {
	for _, c := range []struct{ name, head, item string }{
		{"endless siblings", `{"sha":"` + fuzzCommit + `","siblings":[`, `{"rfilename":"x.gguf","size":1,"blobId":"` + fuzzCommit + `"},`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var sent atomic.Int64
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			chunk := []byte(strings.Repeat(c.item, 4096))
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n, _ := io.WriteString(w, c.head)
				sent.Add(int64(n))
				for r.Context().Err() == nil {
					n, err := w.Write(chunk)
					sent.Add(int64(n))
					if err != nil {
						return
					}
				}
			})}
			done := make(chan struct{})
			go func() { defer close(done); srv.Serve(ln) }()
			tr := &http.Transport{}
			defer func() { tr.CloseIdleConnections(); srv.Close(); <-done }()
			cache := t.TempDir()
			p, err := New(Config{CacheDir: cache, Endpoint: "http://" + ln.Addr().String(), Token: "-",
				HTTPClient: &http.Client{Transport: tr}, MaxAttempts: 1, Logger: discardLogger()})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_, err = p.Ensure(ctx, "hf:endless/model")
			if err == nil || ctx.Err() != nil {
				t.Fatalf("Ensure = %v (deadline: %v), want an upstream error before the deadline", err, ctx.Err())
			}
			// The client stops reading at its limit; the server may have
			// buffered a little more into the socket.
			if n := sent.Load(); n > 80<<20 {
				t.Errorf("the client read %d MiB of model info", n>>20)
			}
			checkCacheSound(t, cache)
			filepath.WalkDir(cache, func(path string, d fs.DirEntry, err error) error {
				if err == nil && strings.Contains(path, "models--") {
					t.Errorf("endless model info left %s in the cache", path)
				}
				return nil
			})
		})
	}
}
