// Package hubtest is a Hugging Face hub server for tests and offline demos.
// It speaks the protocol huggingface_hub uses (the model API with
// ?blobs=true, resolve URLs, LFS files redirected with a 302 to a second
// "CDN" listener, Range, ETag and X-Linked-* headers, X-Error-Code errors)
// over 127.0.0.1, serves synthetic or on-disk repos, counts what it served and
// injects faults on request. It uses the standard library only.
package hubtest

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Content is the bytes of one file: held in memory, read from disk or
// generated.
type Content interface {
	io.ReaderAt
	Size() int64
}

type memContent []byte

func (m memContent) Size() int64 { return int64(len(m)) }
func (m memContent) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Bytes is content held in memory.
func Bytes(b []byte) Content { return memContent(b) }

// Synthetic is deterministic pseudo-random content of any size, derived from
// the offset so that any range is produced without holding the file.
func Synthetic(seed uint64, size int64) Content { return synthetic{seed: seed, size: size} }

type synthetic struct {
	seed uint64
	size int64
}

func (s synthetic) Size() int64 { return s.size }

func (s synthetic) word(i uint64) uint64 {
	// splitmix64 of (seed, word index): fast and stateless.
	z := s.seed + (i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (s synthetic) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	want := len(p)
	if rem := s.size - off; int64(want) > rem {
		want = int(rem)
	}
	n := 0
	var buf [8]byte
	for n < want {
		pos := off + int64(n)
		w := uint64(pos / 8)
		in := int(pos % 8)
		if in == 0 && want-n >= 8 {
			binary.LittleEndian.PutUint64(p[n:], s.word(w))
			n += 8
			continue
		}
		binary.LittleEndian.PutUint64(buf[:], s.word(w))
		n += copy(p[n:want], buf[in:])
	}
	if want < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Faults are injected into the responses for one file (File.Faults) or for
// every file (Server.SetFaults). Counters are per file.
type Faults struct {
	// FailFirst answers the first FailFirst content requests with FailStatus
	// (429 or 503; default 503), with Retry-After: 0.
	FailFirst  int
	FailStatus int
	// CutAfter > 0 aborts the connection after CutAfter body bytes, for the
	// first CutTimes content responses (0: every one).
	CutAfter int64
	CutTimes int
	// CorruptAt >= 0 with Corrupt set flips the byte at that file offset in
	// the first CorruptTimes responses (0: every one).
	Corrupt      bool
	CorruptAt    int64
	CorruptTimes int
	// Stall sleeps before the body until the request ends or Stall passes;
	// with CutAfter it applies to the cut responses only, after their bytes.
	Stall time.Duration
	// IgnoreRange answers a Range request with the whole file (200).
	IgnoreRange bool
}

// File is one file of a repo.
type File struct {
	Path    string
	Content Content
	LFS     bool
	Faults  Faults

	sha256  string
	gitSHA1 string
	served  int // content responses, for the fault counters
}

// Repo is one model repo at one commit, with branch names pointing at it.
type Repo struct {
	Name     string
	Commit   string
	Branches []string // default: main
	Gated    bool     // requires the server token (403 GatedRepo without it)
	files    map[string]*File
}

// Options configures a Server.
type Options struct {
	// Addr and CDNAddr are the listen addresses; "" means 127.0.0.1:0.
	Addr, CDNAddr string
	// Token, when set, is required (as a Bearer token) by gated repos.
	Token string
}

// Stats counts what the server saw.
type Stats struct {
	Requests     int      // every request on both listeners
	APIRequests  int      // /api/models/...
	Resolves     int      // /{repo}/resolve/...
	CDNRequests  int      // content requests on the CDN listener
	BytesSent    int64    // body bytes of file content
	Ranges       []string // Range headers seen on content requests
	CDNAuthSeen  int      // CDN requests that carried an Authorization header
	AuthRequests int      // requests that carried an Authorization header
}

// Server is a running hub. Close stops both listeners.
type Server struct {
	opts      Options
	api, cdn  *http.Server
	apiLn     net.Listener
	cdnLn     net.Listener
	mu        sync.Mutex
	repos     map[string]*Repo
	faults    Faults
	stats     Stats
	closeOnce sync.Once
	done      chan struct{}
	files     []*os.File    // opened by AddDir, closed by Close
	unstall   chan struct{} // closed by Unstall
	running   tracker       // Serve loops and handlers, awaited by Close
}

// tracker counts running goroutines; unlike a WaitGroup it tolerates a
// handler starting while Close waits.
type tracker struct {
	mu   sync.Mutex
	cond *sync.Cond
	n    int
}

func (t *tracker) Add(d int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cond == nil {
		t.cond = sync.NewCond(&t.mu)
	}
	t.n += d
	if t.n == 0 {
		t.cond.Broadcast()
	}
}

func (t *tracker) Done() { t.Add(-1) }

func (t *tracker) Wait() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.n > 0 {
		t.cond.Wait()
	}
}

// New starts a hub on two loopback listeners.
func New(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.CDNAddr == "" {
		opts.CDNAddr = "127.0.0.1:0"
	}
	s := &Server{opts: opts, repos: map[string]*Repo{}, done: make(chan struct{}), unstall: make(chan struct{})}
	var err error
	if s.apiLn, err = net.Listen("tcp", opts.Addr); err != nil {
		return nil, fmt.Errorf("hubtest: listen %s: %w", opts.Addr, err)
	}
	if s.cdnLn, err = net.Listen("tcp", opts.CDNAddr); err != nil {
		s.apiLn.Close()
		return nil, fmt.Errorf("hubtest: listen %s: %w", opts.CDNAddr, err)
	}
	s.api = &http.Server{Handler: s.tracked(s.serveAPI), ReadHeaderTimeout: 10 * time.Second}
	s.cdn = &http.Server{Handler: s.tracked(s.serveCDN), ReadHeaderTimeout: 10 * time.Second}
	for _, srv := range []struct {
		*http.Server
		net.Listener
	}{{s.api, s.apiLn}, {s.cdn, s.cdnLn}} {
		s.running.Add(1)
		go func() {
			defer s.running.Done()
			srv.Serve(srv.Listener) //nolint:errcheck // ends with Close
		}()
	}
	return s, nil
}

// tracked counts a handler as running until it returns, so that Close can
// wait for every one (tests check for leaked goroutines).
func (s *Server) tracked(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.running.Add(1)
		defer s.running.Done()
		h(w, r)
	})
}

// URL is the hub endpoint (what HF_ENDPOINT would be).
func (s *Server) URL() string { return "http://" + s.apiLn.Addr().String() }

// CDNURL is the base URL of the second listener serving LFS content.
func (s *Server) CDNURL() string { return "http://" + s.cdnLn.Addr().String() }

// Close stops the server, cuts open connections and waits for its
// goroutines' handlers to return.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.api.Close()
		s.cdn.Close()
		s.mu.Lock()
		for _, f := range s.files {
			f.Close()
		}
		s.files = nil
		s.mu.Unlock()
		s.running.Wait()
	})
	return nil
}

// AddRepo adds (or replaces) a repo whose files are given; it computes the
// hashes once (for generated content too) and derives the commit from them.
func (s *Server) AddRepo(name string, files ...*File) (*Repo, error) {
	if strings.Count(name, "/") != 1 {
		return nil, fmt.Errorf("hubtest: repo name %q: want org/name", name)
	}
	r := &Repo{Name: name, Branches: []string{"main"}, files: map[string]*File{}}
	commit := sha1.New()
	io.WriteString(commit, name)
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	for _, f := range files {
		if err := f.hash(); err != nil {
			return nil, fmt.Errorf("hubtest: %s/%s: %w", name, f.Path, err)
		}
		fmt.Fprintf(commit, "\x00%s\x00%s", f.Path, f.sha256)
		r.files[f.Path] = f
	}
	r.Commit = hex.EncodeToString(commit.Sum(nil))
	s.mu.Lock()
	s.repos[name] = r
	s.mu.Unlock()
	return r, nil
}

// AddDir adds a repo from a directory: every regular file under dir, those
// of at least lfsThreshold bytes as LFS files, read from disk on demand.
func (s *Server) AddDir(name, dir string, lfsThreshold int64) (*Repo, error) {
	var files []*File
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		fh, err := os.Open(path)
		if err != nil {
			return err
		}
		st, err := fh.Stat()
		if err != nil {
			fh.Close()
			return err
		}
		s.mu.Lock()
		s.files = append(s.files, fh)
		s.mu.Unlock()
		files = append(files, &File{Path: filepath.ToSlash(rel), Content: fileContent{fh, st.Size()}, LFS: st.Size() >= lfsThreshold})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hubtest: add %s: %w", dir, err)
	}
	return s.AddRepo(name, files...)
}

type fileContent struct {
	*os.File
	size int64
}

func (f fileContent) Size() int64 { return f.size }

// Repo returns a repo by name.
func (s *Server) Repo(name string) *Repo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.repos[name]
}

// File returns a file of the repo.
func (r *Repo) File(path string) *File { return r.files[path] }

// SetGated marks a repo as gated: it needs the server token.
func (s *Server) SetGated(name string, gated bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.repos[name]; r != nil {
		r.Gated = gated
	}
}

// SetFaults sets the faults of one file ("" path: every file without its own).
func (s *Server) SetFaults(repo, path string, f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if path == "" {
		s.faults = f
		return
	}
	if r := s.repos[repo]; r != nil && r.files[path] != nil {
		r.files[path].Faults = f
		r.files[path].served = 0
	}
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Ranges = append([]string(nil), s.stats.Ranges...)
	return st
}

// ResetStats zeroes the counters.
func (s *Server) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = Stats{}
}

// SHA256 is the hex sha256 of the file's content.
func (f *File) SHA256() string { return f.sha256 }

// GitSHA1 is the git blob id of the file (what huggingface_hub's ETag is for
// regular files).
func (f *File) GitSHA1() string { return f.gitSHA1 }

// BlobID is the name the file's blob has in a hub cache.
func (f *File) BlobID() string {
	if f.LFS {
		return f.sha256
	}
	return f.gitSHA1
}

func (f *File) hash() error {
	size := f.Content.Size()
	h256 := sha256.New()
	h1 := sha1.New()
	fmt.Fprintf(h1, "blob %d\x00", size)
	w := io.Writer(h256)
	if !f.LFS {
		w = io.MultiWriter(h256, h1)
	}
	if _, err := io.Copy(w, io.NewSectionReader(f.Content, 0, size)); err != nil {
		return err
	}
	f.sha256 = hex.EncodeToString(h256.Sum(nil))
	f.gitSHA1 = hex.EncodeToString(h1.Sum(nil))
	return nil
}

func (s *Server) count(r *http.Request, fn func(st *Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Requests++
	if r.Header.Get("Authorization") != "" {
		s.stats.AuthRequests++
	}
	if fn != nil {
		fn(&s.stats)
	}
}

func hubError(w http.ResponseWriter, status int, code, msg string) {
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// lookup finds the repo and checks access; it writes the error itself.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request, name, rev string) *Repo {
	s.mu.Lock()
	repo := s.repos[name]
	s.mu.Unlock()
	if repo == nil {
		hubError(w, http.StatusNotFound, "RepoNotFound", "Repository Not Found for url: "+r.URL.String()+".")
		return nil
	}
	if repo.Gated && (s.opts.Token == "" || r.Header.Get("Authorization") != "Bearer "+s.opts.Token) {
		status := http.StatusForbidden
		if r.Header.Get("Authorization") == "" {
			status = http.StatusUnauthorized
		}
		hubError(w, status, "GatedRepo", "Access to model "+name+" is restricted. You must have access to it and be authenticated to access it.")
		return nil
	}
	if rev != repo.Commit && !contains(repo.Branches, rev) {
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return nil
	}
	return repo
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

type lfsInfo struct {
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	PointerSize int    `json:"pointerSize"`
}

type sibling struct {
	RFilename string   `json:"rfilename"`
	Size      int64    `json:"size"`
	BlobID    string   `json:"blobId"`
	LFS       *lfsInfo `json:"lfs,omitempty"`
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	p := r.URL.EscapedPath()
	switch {
	case strings.HasPrefix(p, "/api/models/"):
		s.count(r, func(st *Stats) { st.APIRequests++ })
		s.modelInfo(w, r, strings.TrimPrefix(p, "/api/models/"))
	case strings.Contains(p, "/resolve/"):
		s.count(r, func(st *Stats) { st.Resolves++ })
		s.resolve(w, r, p)
	default:
		s.count(r, nil)
		hubError(w, http.StatusNotFound, "", "not found")
	}
}

// modelInfo answers /api/models/{org}/{name}[/revision/{rev}].
func (s *Server) modelInfo(w http.ResponseWriter, r *http.Request, rest string) {
	parts := strings.SplitN(rest, "/", 4)
	if len(parts) < 2 {
		hubError(w, http.StatusNotFound, "RepoNotFound", "Repository Not Found")
		return
	}
	name := parts[0] + "/" + parts[1]
	rev := "main"
	if len(parts) == 4 && parts[2] == "revision" {
		var err error
		if rev, err = url.PathUnescape(parts[3]); err != nil {
			hubError(w, http.StatusBadRequest, "", "bad revision")
			return
		}
	} else if len(parts) > 2 {
		hubError(w, http.StatusNotFound, "", "not found")
		return
	}
	repo := s.lookup(w, r, name, rev)
	if repo == nil {
		return
	}
	var sibs []sibling
	paths := make([]string, 0, len(repo.files))
	for p := range repo.files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		f := repo.files[p]
		sb := sibling{RFilename: f.Path}
		if r.URL.Query().Get("blobs") == "true" {
			sb.Size = f.Content.Size()
			sb.BlobID = f.gitSHA1
			if f.LFS {
				// The git blob of an LFS file is its pointer file.
				sb.BlobID = lfsPointerID(f)
				sb.LFS = &lfsInfo{SHA256: f.sha256, Size: f.Content.Size(), PointerSize: len(lfsPointer(f))}
			}
		}
		sibs = append(sibs, sb)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"_id": repo.Commit[:24], "id": repo.Name, "modelId": repo.Name, "sha": repo.Commit,
		"private": false, "gated": repo.Gated, "siblings": sibs,
	})
}

func lfsPointer(f *File) string {
	return fmt.Sprintf("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", f.sha256, f.Content.Size())
}

func lfsPointerID(f *File) string {
	p := lfsPointer(f)
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00%s", len(p), p)
	return hex.EncodeToString(h.Sum(nil))
}

// resolve answers /{org}/{name}/resolve/{rev}/{path}.
func (s *Server) resolve(w http.ResponseWriter, r *http.Request, p string) {
	i := strings.Index(p, "/resolve/")
	name := strings.TrimPrefix(p[:i], "/")
	rest := p[i+len("/resolve/"):]
	j := strings.IndexByte(rest, '/')
	if j < 0 {
		hubError(w, http.StatusNotFound, "EntryNotFound", "missing file path")
		return
	}
	rev, err1 := url.PathUnescape(rest[:j])
	fpath, err2 := url.PathUnescape(rest[j+1:])
	if err1 != nil || err2 != nil {
		hubError(w, http.StatusBadRequest, "", "bad path")
		return
	}
	repo := s.lookup(w, r, name, rev)
	if repo == nil {
		return
	}
	f := repo.files[fpath]
	if f == nil {
		w.Header().Set("X-Repo-Commit", repo.Commit)
		hubError(w, http.StatusNotFound, "EntryNotFound", fpath+" does not exist on \""+rev+"\"")
		return
	}
	w.Header().Set("X-Repo-Commit", repo.Commit)
	if f.LFS {
		w.Header().Set("X-Linked-Etag", `"`+f.sha256+`"`)
		w.Header().Set("X-Linked-Size", strconv.FormatInt(f.Content.Size(), 10))
		w.Header().Set("ETag", `"`+lfsPointerID(f)+`"`)
		loc := s.CDNURL() + "/repos/" + name + "/" + f.sha256 + "?path=" + url.QueryEscape(fpath)
		http.Redirect(w, r, loc, http.StatusFound)
		return
	}
	w.Header().Set("ETag", `"`+f.gitSHA1+`"`)
	s.serveContent(w, r, repo, f)
}

// serveCDN answers /repos/{org}/{name}/{sha256}?path=...
func (s *Server) serveCDN(w http.ResponseWriter, r *http.Request) {
	s.count(r, func(st *Stats) {
		st.CDNRequests++
		if r.Header.Get("Authorization") != "" {
			st.CDNAuthSeen++
		}
	})
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/repos/"), "/")
	if len(parts) != 3 {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	repo := s.repos[parts[0]+"/"+parts[1]]
	s.mu.Unlock()
	if repo == nil {
		http.NotFound(w, r)
		return
	}
	f := repo.files[r.URL.Query().Get("path")]
	if f == nil || f.sha256 != parts[2] {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", `"`+f.sha256+`"`)
	s.serveContent(w, r, repo, f)
}

// serveContent streams a file, honouring Range and the faults.
func (s *Server) serveContent(w http.ResponseWriter, r *http.Request, repo *Repo, f *File) {
	s.mu.Lock()
	fl := f.Faults
	if fl == (Faults{}) {
		fl = s.faults
	}
	f.served++
	n := f.served
	if rg := r.Header.Get("Range"); rg != "" {
		s.stats.Ranges = append(s.stats.Ranges, rg)
	}
	s.mu.Unlock()

	if n <= fl.FailFirst {
		status := fl.FailStatus
		if status == 0 {
			status = http.StatusServiceUnavailable
		}
		w.Header().Set("Retry-After", "0")
		hubError(w, status, "", "injected failure")
		return
	}
	n -= fl.FailFirst // the count of real content responses

	size := f.Content.Size()
	start, end := int64(0), size // [start, end)
	status := http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && !fl.IgnoreRange {
		a, b, ok := parseRange(rg, size)
		if !ok {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			hubError(w, http.StatusRequestedRangeNotSatisfiable, "", "range not satisfiable")
			return
		}
		start, end, status = a, b, http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1, size))
	}
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(end-start, 10))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}

	limit := end - start
	cut := fl.CutAfter > 0 && (fl.CutTimes == 0 || n <= fl.CutTimes)
	if cut && fl.CutAfter < limit {
		limit = fl.CutAfter
	}
	if fl.Stall > 0 && fl.CutAfter == 0 {
		s.stall(r, fl.Stall)
	}
	corrupt := fl.Corrupt && (fl.CorruptTimes == 0 || n <= fl.CorruptTimes)
	buf := make([]byte, 256<<10)
	off := start
	for off < start+limit {
		chunk := buf
		if rem := start + limit - off; int64(len(chunk)) > rem {
			chunk = chunk[:rem]
		}
		k, err := f.Content.ReadAt(chunk, off)
		if k == 0 && err != nil {
			panic(http.ErrAbortHandler)
		}
		chunk = chunk[:k]
		if corrupt && fl.CorruptAt >= off && fl.CorruptAt < off+int64(k) {
			chunk[fl.CorruptAt-off] ^= 0xff
		}
		wn, werr := w.Write(chunk)
		s.mu.Lock()
		s.stats.BytesSent += int64(wn)
		s.mu.Unlock()
		if werr != nil {
			return
		}
		off += int64(k)
	}
	if cut && limit < end-start {
		if fl.Stall > 0 {
			if fw, ok := w.(http.Flusher); ok {
				fw.Flush()
			}
			s.stall(r, fl.Stall)
		}
		panic(http.ErrAbortHandler) // cut the connection mid-body
	}
}

func (s *Server) stall(r *http.Request, d time.Duration) {
	s.mu.Lock()
	release := s.unstall
	s.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	case <-s.done:
	case <-release:
	}
}

// Unstall ends every stall in progress now (later ones stall as usual).
func (s *Server) Unstall() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.unstall)
	s.unstall = make(chan struct{})
}

// parseRange parses "bytes=a-" and "bytes=a-b" into [start, end).
func parseRange(h string, size int64) (int64, int64, bool) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 || start >= size {
		return 0, 0, false
	}
	end := size
	if b != "" {
		e, err := strconv.ParseInt(b, 10, 64)
		if err != nil || e < start {
			return 0, 0, false
		}
		if e+1 < end {
			end = e + 1
		}
	}
	return start, end, true
}
