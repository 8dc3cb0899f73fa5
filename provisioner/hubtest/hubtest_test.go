package hubtest

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

func TestSyntheticRangesAgree(t *testing.T) {
	c := Synthetic(9, 100_003)
	all := make([]byte, c.Size())
	if n, err := c.ReadAt(all, 0); n != len(all) || err != nil {
		t.Fatalf("ReadAt all: %d %v", n, err)
	}
	for _, off := range []int64{0, 1, 7, 8, 9, 4095, 99_990} {
		part := make([]byte, 13)
		n, _ := c.ReadAt(part, off)
		if !bytes.Equal(part[:n], all[off:off+int64(n)]) {
			t.Errorf("ReadAt(%d) disagrees with the whole", off)
		}
	}
	if n, err := c.ReadAt(make([]byte, 10), c.Size()-3); n != 3 || err != io.EOF {
		t.Errorf("tail read: %d %v", n, err)
	}
}

func TestRangeAndErrors(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	content := []byte("hello, hub")
	r, err := s.AddRepo("o/r", &File{Path: "a.txt", Content: Bytes(content)})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, rng string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, s.URL()+path, nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, body := get("/o/r/resolve/main/a.txt", "bytes=7-")
	if resp.StatusCode != http.StatusPartialContent || string(body) != "hub" || resp.Header.Get("Content-Range") != "bytes 7-9/10" {
		t.Errorf("range: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Range"))
	}
	if resp.Header.Get("ETag") != `"`+r.File("a.txt").GitSHA1()+`"` || resp.Header.Get("X-Repo-Commit") != r.Commit {
		t.Errorf("headers %v", resp.Header)
	}
	for path, code := range map[string]string{
		"/o/x/resolve/main/a.txt":       "RepoNotFound",
		"/o/r/resolve/nope/a.txt":       "RevisionNotFound",
		"/o/r/resolve/main/b.txt":       "EntryNotFound",
		"/api/models/o/x/revision/main": "RepoNotFound",
	} {
		if resp, _ := get(path, ""); resp.StatusCode != http.StatusNotFound || resp.Header.Get("X-Error-Code") != code {
			t.Errorf("%s: %d %q", path, resp.StatusCode, resp.Header.Get("X-Error-Code"))
		}
	}
	if resp, _ := get("/o/r/resolve/main/a.txt", "bytes=10-"); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range past the end: %d", resp.StatusCode)
	}
}

func TestAddDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "small.json"), []byte("{}"), 0o644)
	os.WriteFile(filepath.Join(dir, "sub", "big.bin"), bytes.Repeat([]byte("x"), 2048), 0o644)
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.AddDir("o/d", dir, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if f := r.File("sub/big.bin"); f == nil || !f.LFS {
		t.Fatalf("big.bin: %+v", f)
	}
	if f := r.File("small.json"); f == nil || f.LFS {
		t.Fatalf("small.json: %+v", f)
	}
	resp, err := http.Get(s.URL() + "/o/d/resolve/main/sub/big.bin") // 302 to the CDN, followed
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if len(b) != 2048 || resp.Header.Get("ETag") != `"`+r.File("sub/big.bin").SHA256()+`"` {
		t.Errorf("big.bin via CDN: %d bytes, etag %s", len(b), resp.Header.Get("ETag"))
	}
}
