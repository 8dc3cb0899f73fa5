// Package provisioner owns the models on this machine: model references, the
// Hugging Face hub client (as huggingface_hub speaks the protocol), the hub
// cache layout shared with Hugging Face's own tools, verification while
// streaming, resumable downloads, progress, listing and eviction.
package provisioner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/rbee-hive/rbee-hive/resources"
)

// RefKind is the scheme of a model reference.
type RefKind string

const (
	KindHF      RefKind = "hf"      // hf:<org>/<repo>[/<path>][@<revision>]
	KindFile    RefKind = "file"    // file:<absolute path> inside a local dir
	KindCatalog RefKind = "catalog" // a name from the configured catalog
)

// Ref is a parsed model reference.
type Ref struct {
	Kind     RefKind
	Repo     string // hf: "org/name"
	Path     string // hf: file in the repo; "" means the whole repo
	Revision string // hf: branch, tag or commit; "" means "main"
	File     string // file: the absolute path
	Name     string // catalog: the name
}

// ErrInvalidRef matches every *RefError.
var ErrInvalidRef = errors.New("invalid model reference")

// RefError names the rule a model reference broke: "empty", "too long",
// "invalid character", "control character", "traversal", "unknown scheme",
// "not absolute", "outside local dirs", "unknown catalog name", ...
type RefError struct {
	Ref  string
	Rule string
}

func (e *RefError) Error() string { return fmt.Sprintf("model reference %q: %s", e.Ref, e.Rule) }

// Is reports whether target is ErrInvalidRef.
func (e *RefError) Is(target error) bool { return target == ErrInvalidRef }

// Errors callers decide on (mapped to HTTP codes by httpserver).
var (
	ErrModelNotFound       = errors.New("model not found")      // repo, revision or file missing upstream or on disk
	ErrAccessDenied        = errors.New("access denied")        // gated or private: set HF_TOKEN
	ErrUpstream            = errors.New("upstream error")       // the hub failed after retries
	ErrInsufficientStorage = errors.New("insufficient storage") // not enough free disk
	ErrChecksumMismatch    = errors.New("checksum mismatch")    // twice in a row
	ErrNotCached           = errors.New("model not cached")     // evict of an unknown model
	ErrInUse               = errors.New("model in use")         // evict of a model a worker uses
	ErrUnknownProvision    = errors.New("unknown provision")    //
)

// StorageError details ErrInsufficientStorage.
type StorageError struct {
	Path           string
	RequiredBytes  int64
	AvailableBytes int64
}

func (e *StorageError) Error() string {
	return fmt.Sprintf("insufficient storage at %s: required %d bytes, available %d bytes", e.Path, e.RequiredBytes, e.AvailableBytes)
}

// Is reports whether target is ErrInsufficientStorage.
func (e *StorageError) Is(target error) bool { return target == ErrInsufficientStorage }

// CatalogEntry is one configured model name.
type CatalogEntry struct {
	Name        string `json:"name" koanf:"name"`
	ModelRef    string `json:"model_ref" koanf:"model_ref"`
	Description string `json:"description,omitempty" koanf:"description"`
	SizeBytes   int64  `json:"size_bytes,omitempty" koanf:"size_bytes"`
	VRAMBytes   int64  `json:"vram_bytes,omitempty" koanf:"vram_bytes"`
}

// Model is one cached model.
type Model struct {
	Ref           string    `json:"model_ref"`  // canonical reference (catalog names resolved)
	LocalPath     string    `json:"local_path"` // the file, or the snapshot directory for a whole repo
	SizeBytes     int64     `json:"size_bytes"`
	SHA256        string    `json:"sha256,omitempty"`     // single-file models
	Commit        string    `json:"commit,omitempty"`     // hf: the resolved commit
	VRAMBytes     int64     `json:"vram_bytes,omitempty"` // from the catalog, 0 when unknown
	ProvisionedAt time.Time `json:"provisioned_at"`
	LastUsedAt    time.Time `json:"last_used_at"`
}

// State is a provision's progress state.
type State string

const (
	StateQueued      State = "queued"
	StateDownloading State = "downloading"
	StateVerifying   State = "verifying"
	StateReady       State = "ready"
	StateFailed      State = "failed"
)

// Status is a snapshot of one provision.
type Status struct {
	ID         string `json:"provision_id"`
	ModelRef   string `json:"model_ref"`
	State      State  `json:"state"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	Error      string `json:"error,omitempty"`
	Err        error  `json:"-"` // the typed error behind Error
}

// EventKind says what happened in the provisioner.
type EventKind string

const (
	EventProvisionStarted  EventKind = "provision_started"
	EventProvisionProgress EventKind = "provision_progress"
	EventProvisionDone     EventKind = "provision_done"
	EventProvisionFailed   EventKind = "provision_failed"
	EventModelEvicted      EventKind = "model_evicted"
)

// Event is one provisioner change, passed to Config.Notify.
type Event struct {
	Kind   EventKind
	Status Status // provision events
	Model  *Model // done and evicted
	At     time.Time
}

// Config configures a Provisioner. Zero values take the Hugging Face
// defaults from the environment.
type Config struct {
	CacheDir      string // "" → HF_HUB_CACHE → $HF_HOME/hub → ~/.cache/huggingface/hub
	Endpoint      string // "" → HF_ENDPOINT → https://huggingface.co
	Token         string // "" → HF_TOKEN → $HF_HOME/token
	LocalDirs     []string
	MaxCacheBytes int64 // 0: no limit
	Catalog       []CatalogEntry
	// MetaDir holds provisioned/last-used times; "" means <cache>/.rbee-hive.
	MetaDir string
	// HTTPClient is used for every hub request; nil means a default with
	// sensible timeouts.
	HTTPClient *http.Client
	// DiskFree reports free bytes at a path; nil means resources.DiskFree.
	DiskFree func(path string) (uint64, error)
	// InUse reports whether a worker uses the model (canonical ref); used by
	// LRU eviction. nil means nothing is in use.
	InUse func(modelRef string) bool
	// Notify receives every event. It must not block.
	Notify func(Event)
	// MaxAttempts bounds retries of one file download (connection errors,
	// 429, 5xx); RetryInitial is the first backoff. Zero: 5 and 500ms.
	MaxAttempts  int
	RetryInitial time.Duration
	// StallTimeout ends a download attempt that received no byte for this
	// long (it is retried). Zero: 60s.
	StallTimeout time.Duration
	Logger       *slog.Logger
}

// Stats are cumulative counters of a Provisioner.
type Stats struct {
	// BytesDownloaded counts bytes received from upstream (the
	// rbee_hive_provision_bytes_total metric).
	BytesDownloaded int64
}

// parallelFiles bounds the files of one repo fetched at once.
const parallelFiles = 4

// keepFinished is how long Lookup still finds a finished provision.
const keepFinished = 15 * time.Minute

// Provisioner fetches and caches models. Safe for concurrent use.
type Provisioner struct {
	cfg      Config
	log      *slog.Logger
	cacheDir string
	hub      *hubClient
	diskFree func(string) (uint64, error)
	meta     *metaStore
	vram     map[string]int64 // canonical ref → catalog vram_bytes

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	inflight map[string]*Provision // by canonical ref
	byID     map[string]*Provision // in flight and recently finished

	// busyRepos counts provisions in flight per hf repo (own lock, taken
	// with no other held): a snapshot such a provision is filling is not
	// yet a whole repo for Cached.
	repoMu    sync.Mutex
	busyRepos map[string]int

	blobMu          sync.Mutex
	blobFetches     map[string]*blobFetch // by blob path
	cacheMu         sync.Mutex            // links, refs and eviction
	bytesDownloaded atomic.Int64
}

// New creates the cache directories and loads the metadata.
func New(cfg Config) (*Provisioner, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "provisioner")
	cacheDir, err := hubCacheDir(cfg.CacheDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("provisioner: cache dir: %w", err)
	}
	metaDir := cfg.MetaDir
	if metaDir == "" {
		metaDir = filepath.Join(cacheDir, ".rbee-hive")
	}
	meta, err := loadMeta(metaDir)
	if err != nil {
		return nil, fmt.Errorf("provisioner: %w", err)
	}
	for i, d := range cfg.LocalDirs {
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("provisioner: local dir %q is not absolute", d)
		}
		cfg.LocalDirs[i] = filepath.Clean(d)
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.RetryInitial <= 0 {
		cfg.RetryInitial = 500 * time.Millisecond
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 60 * time.Second
	}
	diskFree := cfg.DiskFree
	if diskFree == nil {
		diskFree = resources.DiskFree
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Provisioner{
		cfg: cfg, log: log, cacheDir: cacheDir, diskFree: diskFree, meta: meta,
		vram: map[string]int64{}, ctx: ctx, cancel: cancel,
		inflight: map[string]*Provision{}, byID: map[string]*Provision{}, busyRepos: map[string]int{},
		blobFetches: map[string]*blobFetch{},
		hub: &hubClient{
			endpoint: hubEndpoint(cfg.Endpoint), token: hubToken(cfg.Token),
			http: newHTTPClient(cfg.HTTPClient), maxAttempts: cfg.MaxAttempts,
			retryInitial: cfg.RetryInitial, stallTimeout: cfg.StallTimeout, log: log,
		},
	}
	for _, e := range cfg.Catalog {
		r, err := ParseRef(e.ModelRef)
		if err != nil || r.Kind == KindCatalog {
			cancel()
			return nil, fmt.Errorf("provisioner: catalog entry %q: model_ref %q is not an hf: or file: reference", e.Name, e.ModelRef)
		}
		if e.VRAMBytes > 0 {
			p.vram[r.String()] = e.VRAMBytes
		}
	}
	return p, nil
}

// hubCacheDir applies HF_HUB_CACHE → $HF_HOME/hub → ~/.cache/huggingface/hub.
func hubCacheDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("HF_HUB_CACHE")
	}
	if dir == "" {
		dir = filepath.Join(hfHome(), "hub")
	}
	if strings.HasPrefix(dir, "~/") {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("provisioner: cache dir: %w", err)
		}
		dir = filepath.Join(home, dir[2:])
	}
	return filepath.Abs(dir)
}

func hfHome() string {
	if h := os.Getenv("HF_HOME"); h != "" {
		return h
	}
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(x, "huggingface")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "huggingface")
}

func hubEndpoint(e string) string {
	if e == "" {
		e = os.Getenv("HF_ENDPOINT")
	}
	if e == "" {
		e = "https://huggingface.co"
	}
	return strings.TrimRight(e, "/")
}

// hubToken applies config → HF_TOKEN → the token file huggingface-cli login writes.
func hubToken(t string) string {
	if t != "" {
		return t
	}
	if t = os.Getenv("HF_TOKEN"); t != "" {
		return t
	}
	path := os.Getenv("HF_TOKEN_PATH")
	if path == "" {
		path = filepath.Join(hfHome(), "token")
	}
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b))
	}
	return ""
}

// Close cancels in-flight provisions (partial files are kept for resume)
// and waits for them to stop.
func (p *Provisioner) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
	return nil
}

// Stats returns cumulative counters.
func (p *Provisioner) Stats() Stats {
	return Stats{BytesDownloaded: p.bytesDownloaded.Load()}
}

// Resolve parses ref, resolves catalog names and checks file: refs against
// the local dirs.
func (p *Provisioner) Resolve(ref string) (Ref, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return Ref{}, err
	}
	if r.Kind == KindCatalog {
		found := false
		for _, e := range p.cfg.Catalog {
			if e.Name == r.Name {
				if r, err = ParseRef(e.ModelRef); err != nil {
					return Ref{}, err
				}
				found = true
				break
			}
		}
		if !found {
			return Ref{}, &RefError{Ref: ref, Rule: "unknown catalog name"}
		}
	}
	if r.Kind == KindFile && !p.inLocalDirs(r.File) {
		return Ref{}, &RefError{Ref: ref, Rule: "outside local dirs"}
	}
	return r, nil
}

// inLocalDirs checks the path as written and, when it exists, with its
// symlinks resolved.
func (p *Provisioner) inLocalDirs(path string) bool {
	within := func(path string, resolve bool) bool {
		for _, d := range p.cfg.LocalDirs {
			if resolve {
				if rd, err := filepath.EvalSymlinks(d); err == nil {
					d = rd
				}
			}
			rel, err := filepath.Rel(d, path)
			if err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
				return true
			}
		}
		return false
	}
	path = filepath.Clean(path)
	if !within(path, false) {
		return false
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		return within(real, true)
	}
	return true
}

// Cached returns the cached model for ref without any network call.
func (p *Provisioner) Cached(ref string) (Model, bool) {
	r, err := p.Resolve(ref)
	if err != nil {
		return Model{}, false
	}
	return p.cached(r)
}

func (p *Provisioner) cached(r Ref) (Model, bool) {
	canonical := r.String()
	if r.Kind == KindFile {
		return p.cachedFile(r)
	}
	m, ok := p.cachedHF(r)
	if !ok {
		return Model{}, false
	}
	m.VRAMBytes = p.vram[canonical]
	e, known := p.meta.get(canonical)
	if known && e.Commit == m.Commit && e.LocalPath == m.LocalPath {
		m.ProvisionedAt, m.LastUsedAt = e.ProvisionedAt, e.LastUsedAt
		if m.SHA256 == "" {
			m.SHA256 = e.SHA256
		}
		return m, true
	}
	if r.Path == "" {
		p.repoMu.Lock()
		busy := p.busyRepos[r.Repo] > 0
		p.repoMu.Unlock()
		if busy {
			return Model{}, false
		}
		// A snapshot we filled file by file is not the whole repo.
		for _, other := range p.meta.all() {
			if within(other.LocalPath, m.LocalPath) {
				return Model{}, false
			}
		}
	}
	// Put there by Hugging Face's tools (or an older run): record it.
	if st, err := os.Lstat(m.LocalPath); err == nil {
		m.ProvisionedAt = st.ModTime().UTC()
	}
	m.LastUsedAt = m.ProvisionedAt
	p.record(m, 0, 0)
	return m, true
}

func (p *Provisioner) cachedFile(r Ref) (Model, bool) {
	st, err := os.Stat(r.File)
	if err != nil {
		return Model{}, false
	}
	canonical := r.String()
	e, known := p.meta.get(canonical)
	if st.Mode().IsRegular() {
		if !known || e.FileSize != st.Size() || e.FileMtime != st.ModTime().UnixNano() {
			return Model{}, false // (re)hashed by a provision
		}
		e.Model.VRAMBytes = p.vram[canonical]
		return e.Model, true
	}
	if !st.IsDir() {
		return Model{}, false
	}
	if known {
		return e.Model, true
	}
	var size int64
	filepath.WalkDir(r.File, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				size += info.Size()
			}
		}
		return nil
	})
	now := time.Now().UTC()
	m := Model{Ref: canonical, LocalPath: r.File, SizeBytes: size, VRAMBytes: p.vram[canonical], ProvisionedAt: now, LastUsedAt: now}
	p.record(m, 0, 0)
	return m, true
}

// record stores a model's metadata, keeping an earlier last-used time.
func (p *Provisioner) record(m Model, fileSize, fileMtime int64) {
	err := p.meta.update(func(entries map[string]*metaEntry) bool {
		if old, ok := entries[m.Ref]; ok && old.LastUsedAt.After(m.LastUsedAt) {
			m.LastUsedAt = old.LastUsedAt
		}
		entries[m.Ref] = &metaEntry{Model: m, FileSize: fileSize, FileMtime: fileMtime}
		return true
	})
	if err != nil {
		p.log.Warn("cannot save model metadata", "err", err)
	}
}

// Start begins provisioning ref in the background, or joins the provision
// already in flight for it (same id). A cached ref gives a provision that is
// already ready.
func (p *Provisioner) Start(ref string) (*Provision, error) {
	r, err := p.Resolve(ref)
	if err != nil {
		return nil, err
	}
	canonical := r.String()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("provision %s: provisioner closed", canonical)
	}
	p.pruneLocked()
	if pr := p.inflight[canonical]; pr != nil {
		return pr, nil
	}
	pr := &Provision{
		id: "prov-" + uuid.NewString(), ref: canonical, p: p, state: StateQueued,
		done: make(chan struct{}), subs: map[*subscriber]struct{}{},
	}
	p.byID[pr.id] = pr
	if m, ok := p.cached(r); ok {
		pr.finish(m, nil)
		return pr, nil
	}
	p.inflight[canonical] = pr
	p.wg.Add(1)
	go p.run(pr, r)
	return pr, nil
}

func (p *Provisioner) pruneLocked() {
	for id, pr := range p.byID {
		pr.mu.Lock()
		old := !pr.finished.IsZero() && time.Since(pr.finished) > keepFinished
		pr.mu.Unlock()
		if old {
			delete(p.byID, id)
		}
	}
}

func (p *Provisioner) notify(ev Event) {
	if p.cfg.Notify != nil {
		p.cfg.Notify(ev)
	}
}

func (p *Provisioner) run(pr *Provision, r Ref) {
	defer p.wg.Done()
	if r.Kind == KindHF {
		p.repoMu.Lock()
		p.busyRepos[r.Repo]++
		p.repoMu.Unlock()
		defer func() {
			p.repoMu.Lock()
			if p.busyRepos[r.Repo]--; p.busyRepos[r.Repo] == 0 {
				delete(p.busyRepos, r.Repo)
			}
			p.repoMu.Unlock()
		}()
	}
	p.notify(Event{Kind: EventProvisionStarted, Status: pr.Status(), At: time.Now()})
	m, err := p.provision(p.ctx, pr, r)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			err = fmt.Errorf("provision %s: %w (partial files kept)", r, err)
		} else {
			err = fmt.Errorf("provision %s: %w", r, err)
		}
		p.log.Warn("provision failed", "model_ref", r.String(), "provision_id", pr.id, "err", err)
	} else {
		p.log.Info("model provisioned", "model_ref", m.Ref, "provision_id", pr.id, "path", m.LocalPath, "bytes", m.SizeBytes)
	}
	if err == nil {
		p.enforceLimit(m.Ref) // before Done, so callers see the cache settled
	}
	st := pr.complete(m, err)
	if err != nil {
		p.notify(Event{Kind: EventProvisionFailed, Status: st, At: time.Now()})
	} else {
		p.notify(Event{Kind: EventProvisionDone, Status: st, Model: &m, At: time.Now()})
	}
	p.mu.Lock()
	delete(p.inflight, pr.ref)
	p.mu.Unlock()
	pr.close()
}

func (p *Provisioner) provision(ctx context.Context, pr *Provision, r Ref) (Model, error) {
	if r.Kind == KindFile {
		return p.provisionFile(pr, r)
	}
	pr.setState(StateDownloading)
	info, err := p.hub.repoInfo(ctx, r.Repo, r.revision())
	if err != nil {
		return Model{}, err
	}
	commit := info.SHA
	var files []repoSibling
	for _, s := range info.Siblings {
		if r.Path == "" || s.RFilename == r.Path {
			files = append(files, s)
		}
	}
	if r.Path != "" && len(files) == 0 {
		return Model{}, fmt.Errorf("%w: %s has no file %s at %s", ErrModelNotFound, r.Repo, r.Path, commit)
	}
	dir := p.repoDir(r.Repo)
	blobsDir := filepath.Join(dir, "blobs")
	if err := os.MkdirAll(blobsDir, 0o755); err != nil {
		return Model{}, err
	}
	specs := make([]blobSpec, len(files))
	var total, need int64
	for i, s := range files {
		if !safeRepoPath(s.RFilename) {
			return Model{}, fmt.Errorf("%w: %s: unsafe file name %q in the repo listing", ErrUpstream, r.Repo, s.RFilename)
		}
		spec := blobSpec{id: s.BlobID, size: s.Size}
		if s.LFS != nil {
			spec.id, spec.lfs, spec.size = s.LFS.SHA256, true, s.LFS.Size
		}
		if spec.size < 0 {
			return Model{}, fmt.Errorf("%w: %s: negative size for %s", ErrUpstream, r.Repo, s.RFilename)
		}
		if !isCommit(spec.id) && !isSHA256(spec.id) {
			return Model{}, fmt.Errorf("%w: %s: no usable blob id for %s", ErrUpstream, r.Repo, s.RFilename)
		}
		spec.url = fmt.Sprintf("%s/%s/resolve/%s/%s", p.hub.endpoint, r.Repo, commit, escapePath(s.RFilename))
		specs[i] = spec
		total += spec.size
		blob := filepath.Join(blobsDir, spec.id)
		if _, err := os.Stat(blob); err == nil {
			continue
		}
		need += spec.size
		if st, err := os.Stat(blob + ".incomplete"); err == nil && st.Size() <= spec.size {
			need -= st.Size()
		}
	}
	pr.bytesTotal.Store(total)
	if need > 0 {
		p.makeRoom(r.String(), need)
		free, err := p.diskFree(blobsDir)
		if err != nil {
			return Model{}, fmt.Errorf("free disk space at %s: %w", blobsDir, err)
		}
		if uint64(need) > free {
			return Model{}, &StorageError{Path: blobsDir, RequiredBytes: need, AvailableBytes: int64(min(free, 1<<62))}
		}
	}
	// Several files at once, as huggingface_hub's snapshot_download does;
	// the first failure cancels the rest (their partials stay for resume).
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelFiles)
	for _, spec := range specs {
		g.Go(func() error { return p.fetchBlob(gctx, r.Repo, spec, pr.progress) })
	}
	if err := g.Wait(); err != nil {
		return Model{}, err
	}
	pr.setState(StateVerifying)
	p.cacheMu.Lock()
	for i, spec := range specs {
		if err := link(dir, commit, files[i].RFilename, spec.id); err != nil {
			p.cacheMu.Unlock()
			return Model{}, fmt.Errorf("link %s: %w", files[i].RFilename, err)
		}
	}
	err = writeRef(dir, r.revision(), commit)
	p.cacheMu.Unlock()
	if err != nil {
		return Model{}, fmt.Errorf("write ref: %w", err)
	}
	now := time.Now().UTC()
	m := Model{
		Ref: r.String(), Commit: commit, SizeBytes: total, VRAMBytes: p.vram[r.String()],
		LocalPath: filepath.Join(dir, "snapshots", commit), ProvisionedAt: now, LastUsedAt: now,
	}
	if r.Path != "" {
		m.LocalPath = filepath.Join(m.LocalPath, filepath.FromSlash(r.Path))
		if specs[0].lfs {
			m.SHA256 = specs[0].id
		} else if m.SHA256, err = sha256File(m.LocalPath, nil); err != nil {
			return Model{}, err
		}
	}
	p.record(m, 0, 0)
	return m, nil
}

// safeRepoPath reports whether a file name from the hub stays inside the
// snapshot: relative, no empty, "." or ".." segment, no backslash or NUL.
func safeRepoPath(p string) bool {
	if p == "" || strings.ContainsAny(p, "\\\x00") {
		return false
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// escapePath escapes each segment of a repo file path for a URL.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// provisionFile hashes a file: model once and records it.
func (p *Provisioner) provisionFile(pr *Provision, r Ref) (Model, error) {
	st, err := os.Stat(r.File)
	if err != nil {
		if os.IsNotExist(err) {
			return Model{}, fmt.Errorf("%w: %s does not exist", ErrModelNotFound, r.File)
		}
		return Model{}, err
	}
	if !st.Mode().IsRegular() {
		return Model{}, fmt.Errorf("%w: %s is not a regular file", ErrModelNotFound, r.File)
	}
	pr.bytesTotal.Store(st.Size())
	pr.setState(StateVerifying)
	sum, err := sha256File(r.File, pr.progress)
	if err != nil {
		return Model{}, err
	}
	now := time.Now().UTC()
	m := Model{Ref: r.String(), LocalPath: r.File, SizeBytes: st.Size(), SHA256: sum, VRAMBytes: p.vram[r.String()], ProvisionedAt: now, LastUsedAt: now}
	p.record(m, st.Size(), st.ModTime().UnixNano())
	return m, nil
}

// sha256File hashes a file, reporting progress when asked.
func sha256File(path string, progress func(int64)) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			if progress != nil {
				progress(int64(n))
			}
		}
		if err == io.EOF {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", path, err)
		}
	}
}

// Ensure returns the cached model or provisions it, blocking until done or
// ctx ends (ctx ending does not cancel a provision others may share).
func (p *Provisioner) Ensure(ctx context.Context, ref string) (Model, error) {
	r, err := p.Resolve(ref)
	if err != nil {
		return Model{}, err
	}
	if m, ok := p.cached(r); ok { // the hot path: no provision record
		return m, nil
	}
	pr, err := p.Start(ref)
	if err != nil {
		return Model{}, err
	}
	select {
	case <-pr.Done():
		return pr.Result()
	case <-ctx.Done():
		return Model{}, fmt.Errorf("provision %s: %w", ref, ctx.Err())
	}
}

// Lookup returns a provision by id, in flight or recently finished.
func (p *Provisioner) Lookup(id string) (*Provision, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr, ok := p.byID[id]
	return pr, ok
}

// Active returns the provisions in flight.
func (p *Provisioner) Active() []Status {
	p.mu.Lock()
	prs := make([]*Provision, 0, len(p.inflight))
	for _, pr := range p.inflight {
		prs = append(prs, pr)
	}
	p.mu.Unlock()
	out := make([]Status, 0, len(prs))
	for _, pr := range prs {
		out = append(out, pr.Status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ModelRef < out[j].ModelRef })
	return out
}

// List returns the cached models.
func (p *Provisioner) List() []Model {
	var out []Model
	for _, e := range p.meta.all() {
		if _, err := os.Stat(e.LocalPath); err != nil {
			continue // removed behind our back
		}
		m := e.Model
		m.VRAMBytes = p.vram[m.Ref]
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out
}

// Touch records that ref was used now (LRU).
func (p *Provisioner) Touch(ref string) {
	r, err := p.Resolve(ref)
	if err != nil {
		return
	}
	canonical := r.String()
	now := time.Now().UTC()
	err = p.meta.update(func(entries map[string]*metaEntry) bool {
		e, ok := entries[canonical]
		if !ok {
			return false
		}
		e.LastUsedAt = now
		return true
	})
	if err != nil {
		p.log.Warn("cannot save model metadata", "err", err)
	}
}

// Evict removes a cached model: its snapshot entries and any blob no other
// snapshot uses. inUse (may be nil) refusing gives ErrInUse.
func (p *Provisioner) Evict(ref string, inUse func(modelRef string) bool) (freedBytes int64, err error) {
	r, err := p.Resolve(ref)
	if err != nil {
		return 0, err
	}
	return p.evict(r, inUse)
}

func (p *Provisioner) evict(r Ref, inUse func(string) bool) (int64, error) {
	canonical := r.String()
	p.cacheMu.Lock()
	defer p.cacheMu.Unlock()
	m, ok := p.cached(r)
	if !ok {
		return 0, fmt.Errorf("evict %s: %w", canonical, ErrNotCached)
	}
	// Every recorded model whose files go with this one is affected too.
	affected := []string{canonical}
	for _, e := range p.meta.all() {
		if e.Ref == canonical {
			continue
		}
		if within(e.LocalPath, m.LocalPath) || (r.Kind == KindHF && within(m.LocalPath, e.LocalPath)) {
			affected = append(affected, e.Ref)
		}
	}
	for _, a := range affected {
		if inUse == nil || !inUse(a) {
			continue
		}
		if a == canonical {
			return 0, fmt.Errorf("evict %s: %w", canonical, ErrInUse)
		}
		return 0, fmt.Errorf("evict %s: %w: it shares files with %s, which a worker uses", canonical, ErrInUse, a)
	}
	if r.Kind == KindHF {
		p.mu.Lock()
		for ref := range p.inflight {
			if fr, err := ParseRef(ref); err == nil && fr.Kind == KindHF && fr.Repo == r.Repo {
				p.mu.Unlock()
				return 0, fmt.Errorf("evict %s: %w: %s is being provisioned", canonical, ErrInUse, ref)
			}
		}
		p.mu.Unlock()
	}
	var freed int64
	if r.Kind == KindHF {
		var err error
		if freed, err = p.removeModelFiles(r, m); err != nil {
			return 0, fmt.Errorf("evict %s: %w", canonical, err)
		}
	}
	err := p.meta.update(func(entries map[string]*metaEntry) bool {
		for _, a := range affected {
			delete(entries, a)
		}
		return true
	})
	if err != nil {
		p.log.Warn("cannot save model metadata", "err", err)
	}
	p.log.Info("model evicted", "model_ref", canonical, "freed_bytes", freed)
	for _, a := range affected {
		mm := m
		mm.Ref = a
		p.notify(Event{Kind: EventModelEvicted, Model: &mm, At: time.Now()})
	}
	return freed, nil
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+string(filepath.Separator))
}

// makeRoom evicts least recently used models (not keep, not in use) until
// need more bytes fit under the cache limit.
func (p *Provisioner) makeRoom(keep string, need int64) {
	limit := p.cfg.MaxCacheBytes
	if limit <= 0 {
		return
	}
	used := p.usage()
	if used+need <= limit {
		return
	}
	candidates := p.meta.all()
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].LastUsedAt.Before(candidates[j].LastUsedAt) })
	for _, c := range candidates {
		if used+need <= limit {
			return
		}
		if c.Ref == keep || !strings.HasPrefix(c.Ref, "hf:") || (p.cfg.InUse != nil && p.cfg.InUse(c.Ref)) {
			continue
		}
		r, err := ParseRef(c.Ref)
		if err != nil {
			continue
		}
		if kr, err := ParseRef(keep); err == nil && kr.Kind == KindHF && kr.Repo == r.Repo {
			if km, ok := p.cachedHF(kr); ok && (within(km.LocalPath, c.LocalPath) || within(c.LocalPath, km.LocalPath)) {
				continue // shares the files we keep
			}
		}
		freed, err := p.evict(r, p.cfg.InUse)
		if err != nil {
			p.log.Debug("cache limit: cannot evict", "model_ref", c.Ref, "err", err)
			continue
		}
		p.log.Info("cache limit: evicted least recently used model", "model_ref", c.Ref, "freed_bytes", freed)
		used = p.usage()
	}
	if used+need > limit {
		p.log.Warn("cache limit exceeded; nothing more can be evicted", "used_bytes", used, "need_bytes", need, "limit_bytes", limit)
	}
}

// enforceLimit brings the cache under its limit after keep was provisioned.
func (p *Provisioner) enforceLimit(keep string) { p.makeRoom(keep, 0) }

// Catalog returns the configured catalog.
func (p *Provisioner) Catalog() []CatalogEntry {
	return append([]CatalogEntry(nil), p.cfg.Catalog...)
}

// CacheDir returns the hub cache directory in use.
func (p *Provisioner) CacheDir() string { return p.cacheDir }

// Usage returns the bytes the cache holds and the configured limit (0: none).
func (p *Provisioner) Usage() (usedBytes, limitBytes int64) {
	return p.usage(), p.cfg.MaxCacheBytes
}
