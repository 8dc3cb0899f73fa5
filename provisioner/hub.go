package provisioner

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// maxRedirects bounds the redirects of one hub request.
const maxRedirects = 10

// maxRetryAfter caps how long a Retry-After header makes us wait.
const maxRetryAfter = 30 * time.Second

// hubClient speaks the Hugging Face hub protocol.
type hubClient struct {
	endpoint     string
	token        string
	http         *http.Client
	maxAttempts  int
	retryInitial time.Duration
	stallTimeout time.Duration
	log          *slog.Logger
}

// newHTTPClient wraps base (or a default) so that redirects are bounded and
// the Authorization header never follows a redirect to another host:port.
// Go's own rule keeps it for the same host name on another port, which is
// not enough for a CDN on the same machine.
func newHTTPClient(base *http.Client) *http.Client {
	var c http.Client
	if base != nil {
		c = *base
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = 60 * time.Second
		tr.MaxIdleConnsPerHost = 8
		c.Transport = tr
	}
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("%w: stopped after %d redirects", errRedirect, maxRedirects)
		}
		for _, v := range via {
			if v.URL.String() == req.URL.String() {
				return fmt.Errorf("%w: loop at %s", errRedirect, req.URL.Redacted())
			}
		}
		if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
			req.Header.Del("Authorization")
		}
		return nil
	}
	return &c
}

// retryableError is a failure worth another attempt.
type retryableError struct {
	err        error
	retryAfter time.Duration // from Retry-After; -1 when absent
}

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// retry runs op until it succeeds, fails permanently or the attempts are
// spent. op reports progress (bytes moved) so that an attempt that moved
// data does not count against the limit.
func (c *hubClient) retry(ctx context.Context, what string, op func() (progressed bool, err error)) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = c.retryInitial
	b.MaxInterval = 30 * time.Second
	b.MaxElapsedTime = 0
	b.Reset()
	failures := 0
	for {
		progressed, err := op()
		if err == nil {
			return nil
		}
		var re *retryableError
		if !errors.As(err, &re) || ctx.Err() != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if progressed {
			failures = 0
			b.Reset()
		}
		failures++
		if failures >= c.maxAttempts {
			return fmt.Errorf("%w: %s: %v (after %d attempts)", ErrUpstream, what, re.err, failures)
		}
		wait := b.NextBackOff()
		if re.retryAfter >= 0 {
			wait = min(re.retryAfter, maxRetryAfter)
		}
		c.log.Debug("hub request failed, retrying", "what", what, "err", re.err, "wait", wait, "failures", failures)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (c *hubClient) newRequest(ctx context.Context, u string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "rbee-hive; hf_hub-compatible")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// statusError maps a failed hub response to a typed error; 429 and 5xx come
// back retryable.
func statusError(resp *http.Response, what string) error {
	code := resp.Header.Get("X-Error-Code")
	msg := resp.Header.Get("X-Error-Message")
	if msg == "" {
		msg = resp.Status
	}
	switch {
	case code == "RepoNotFound":
		return fmt.Errorf("%w: %s: repository not found (%s)", ErrModelNotFound, what, msg)
	case code == "RevisionNotFound":
		return fmt.Errorf("%w: %s: revision not found (%s)", ErrModelNotFound, what, msg)
	case code == "EntryNotFound":
		return fmt.Errorf("%w: %s: file not found in repo (%s)", ErrModelNotFound, what, msg)
	case code == "GatedRepo", resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: %s: %s (gated or private: set HF_TOKEN to a token with access)", ErrAccessDenied, what, msg)
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: %s: %s", ErrModelNotFound, what, msg)
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		ra := time.Duration(-1)
		if s := resp.Header.Get("Retry-After"); s != "" {
			if secs, err := strconv.Atoi(s); err == nil && secs >= 0 {
				ra = time.Duration(secs) * time.Second
			}
		}
		return &retryableError{err: fmt.Errorf("%s: %s", what, resp.Status), retryAfter: ra}
	}
	return fmt.Errorf("%w: %s: unexpected %s", ErrUpstream, what, resp.Status)
}

// errRedirect is a redirect chain we refuse to follow.
var errRedirect = errors.New("bad redirect")

// transportError makes connection errors retryable; cancellation and bad
// redirects are not.
func transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, errRedirect) {
		return fmt.Errorf("%w: %v", ErrUpstream, err)
	}
	return &retryableError{err: err, retryAfter: -1}
}

// repoInfo is the part of /api/models/{repo}/revision/{rev}?blobs=true we use.
type repoInfo struct {
	SHA      string        `json:"sha"`
	Siblings []repoSibling `json:"siblings"`
}

type repoSibling struct {
	RFilename string `json:"rfilename"`
	Size      int64  `json:"size"`
	BlobID    string `json:"blobId"`
	LFS       *struct {
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	} `json:"lfs"`
}

func (c *hubClient) repoInfo(ctx context.Context, repo, rev string) (*repoInfo, error) {
	u := fmt.Sprintf("%s/api/models/%s/revision/%s?blobs=true", c.endpoint, repo, url.PathEscape(rev))
	what := "model info " + repo + "@" + rev
	var info repoInfo
	err := c.retry(ctx, what, func() (bool, error) {
		req, err := c.newRequest(ctx, u)
		if err != nil {
			return false, err
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return false, transportError(ctx, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, statusError(resp, what)
		}
		info = repoInfo{}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&info); err != nil {
			return false, transportError(ctx, fmt.Errorf("decode: %w", err))
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	if !isCommit(info.SHA) {
		return nil, fmt.Errorf("%w: %s: no commit in the answer", ErrUpstream, what)
	}
	return &info, nil
}

// blobSpec is one file to fetch into the cache.
type blobSpec struct {
	url  string // resolve URL pinned to the commit
	id   string // blob name: sha256 for LFS files, git blob sha1 otherwise
	lfs  bool
	size int64
}

// blobHasher computes what a blob's name must match.
type blobHasher struct {
	lfs  bool
	size int64
	h    hash.Hash
}

func newBlobHasher(spec blobSpec) *blobHasher {
	b := &blobHasher{lfs: spec.lfs, size: spec.size}
	b.Reset()
	return b
}

func (b *blobHasher) Reset() {
	if b.lfs {
		b.h = sha256.New()
		return
	}
	b.h = sha1.New()
	fmt.Fprintf(b.h, "blob %d\x00", b.size)
}

func (b *blobHasher) Write(p []byte) (int, error) { return b.h.Write(p) }
func (b *blobHasher) Sum() string                 { return hex.EncodeToString(b.h.Sum(nil)) }

// errChecksum is one verification failure (ErrChecksumMismatch is two).
var errChecksum = errors.New("checksum mismatch")

// download streams spec into part (resuming what part already holds),
// hashing as it writes; it returns errChecksum when the content does not
// match. progress receives byte deltas (negative when it starts over);
// received counts bytes read from the network.
func (c *hubClient) download(ctx context.Context, spec blobSpec, part string, progress func(int64), received func(int64)) error {
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open partial: %w", err)
	}
	defer f.Close()
	h := newBlobHasher(spec)
	// Resume: what a previous attempt (or process) left is hashed first.
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat partial: %w", err)
	}
	n, err := io.CopyN(h, f, st.Size())
	if err != nil {
		return fmt.Errorf("read partial: %w", err)
	}
	if n > spec.size {
		if err := restart(f, h); err != nil {
			return err
		}
		n = 0
	}
	progress(n)
	err = c.retry(ctx, "download "+spec.url, func() (bool, error) {
		if n == spec.size {
			return false, nil
		}
		start := n
		err := c.fetchRange(ctx, spec, f, h, &n, progress, received)
		return n > start, err
	})
	if err != nil {
		return err
	}
	if got := h.Sum(); got != spec.id {
		return fmt.Errorf("%w: %s: expected %s, got %s", errChecksum, spec.url, spec.id, got)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync partial: %w", err)
	}
	return nil
}

func restart(f *os.File, h *blobHasher) error {
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("truncate partial: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	h.Reset()
	return nil
}

// fetchRange does one GET from *n on, appending to f and h.
func (c *hubClient) fetchRange(ctx context.Context, spec blobSpec, f *os.File, h *blobHasher, n *int64, progress, received func(int64)) error {
	// A stalled body (no byte for stallTimeout) ends the attempt.
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errStall := fmt.Errorf("no data for %s", c.stallTimeout)
	stall := time.AfterFunc(c.stallTimeout, func() { cancel(errStall) })
	defer stall.Stop()

	req, err := c.newRequest(actx, spec.url)
	if err != nil {
		return err
	}
	if *n > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", *n))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if context.Cause(actx) == errStall && ctx.Err() == nil {
			return &retryableError{err: errStall, retryAfter: -1}
		}
		return transportError(ctx, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if *n > 0 { // the server ignored Range: start over
			progress(-*n)
			if err := restart(f, h); err != nil {
				return err
			}
			*n = 0
		}
	case http.StatusPartialContent:
		if !strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", *n)) {
			progress(-*n)
			if err := restart(f, h); err != nil {
				return err
			}
			*n = 0
			return &retryableError{err: fmt.Errorf("unexpected Content-Range %q", resp.Header.Get("Content-Range")), retryAfter: 0}
		}
	case http.StatusRequestedRangeNotSatisfiable:
		progress(-*n)
		if err := restart(f, h); err != nil {
			return err
		}
		*n = 0
		return &retryableError{err: errors.New("range not satisfiable"), retryAfter: 0}
	default:
		return statusError(resp, "download "+spec.url)
	}
	return c.copyBody(ctx, actx, errStall, stall, resp.Body, spec, f, h, n, progress, received)
}

// hashPipe hashes chunks on its own goroutine so that verification runs
// alongside the network reads and file writes instead of after them.
type hashPipe struct {
	h    *blobHasher
	work chan []byte
	free chan []byte
	done chan struct{}
}

const (
	pipeChunk   = 1 << 20
	pipeBuffers = 4
)

func newHashPipe(h *blobHasher) *hashPipe {
	hp := &hashPipe{h: h, work: make(chan []byte, pipeBuffers), free: make(chan []byte, pipeBuffers), done: make(chan struct{})}
	for range pipeBuffers {
		hp.free <- make([]byte, pipeChunk)
	}
	go func() {
		defer close(hp.done)
		for b := range hp.work {
			hp.h.Write(b)
			hp.free <- b[:cap(b)]
		}
	}()
	return hp
}

// wait stops the pipe; afterwards the hash covers every chunk sent.
func (hp *hashPipe) wait() {
	close(hp.work)
	<-hp.done
}

// stallReader restarts the stall timer whenever bytes arrive.
type stallReader struct {
	r     io.Reader
	t     *time.Timer
	d     time.Duration
	count func(int64)
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.t.Reset(s.d)
		s.count(int64(n))
	}
	return n, err
}

// copyBody appends the response body to f from *n on; the hash of every
// byte written is complete when it returns, whatever the outcome.
func (c *hubClient) copyBody(ctx, actx context.Context, errStall error, stall *time.Timer, body io.Reader, spec blobSpec, f *os.File, h *blobHasher, n *int64, progress, received func(int64)) error {
	r := &stallReader{r: body, t: stall, d: c.stallTimeout, count: received}
	hp := newHashPipe(h)
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			hp.wait()
		}
	}
	defer stop()
	for {
		buf := <-hp.free
		k, rerr := r.Read(buf)
		if k > 0 {
			if *n+int64(k) > spec.size {
				stop()
				progress(-*n)
				if err := restart(f, h); err != nil {
					return err
				}
				*n = 0
				return &retryableError{err: errors.New("more data than the announced size"), retryAfter: -1}
			}
			if _, err := f.Write(buf[:k]); err != nil {
				// Keep the file and the hash in step for the next attempt.
				if terr := f.Truncate(*n); terr == nil {
					f.Seek(*n, io.SeekStart)
				}
				if errors.Is(err, syscall.ENOSPC) {
					return &StorageError{Path: filepath.Dir(f.Name()), RequiredBytes: spec.size - *n}
				}
				return fmt.Errorf("write partial: %w", err)
			}
			hp.work <- buf[:k]
			*n += int64(k)
			progress(int64(k))
		} else {
			hp.free <- buf
		}
		if rerr == io.EOF {
			if *n != spec.size {
				return &retryableError{err: fmt.Errorf("body ended at %d of %d bytes", *n, spec.size), retryAfter: -1}
			}
			return nil
		}
		if rerr != nil {
			if context.Cause(actx) == errStall && ctx.Err() == nil {
				return &retryableError{err: errStall, retryAfter: -1}
			}
			return transportError(ctx, rerr)
		}
	}
}

// isCommit reports whether s is a full git commit id.
func isCommit(s string) bool {
	if len(s) != 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
