// Package provisioner owns the models on this machine: model references, the
// Hugging Face hub client (as huggingface_hub speaks the protocol), the hub
// cache layout shared with Hugging Face's own tools, verification while
// streaming, resumable downloads, progress, listing and eviction.
package provisioner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
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

// String returns the canonical text of the reference.
func (r Ref) String() string { panic("provisioner: not implemented") }

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

// ParseRef checks the syntax of a reference (it does not consult the catalog
// or the local dirs; Provisioner.Resolve does).
func ParseRef(s string) (Ref, error) { panic("provisioner: not implemented") }

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
	Logger       *slog.Logger
}

// Provisioner fetches and caches models. Safe for concurrent use.
type Provisioner struct{}

// New creates the cache directories and loads the metadata.
func New(cfg Config) (*Provisioner, error) { panic("provisioner: not implemented") }

// Close cancels in-flight provisions (partial files are kept for resume)
// and waits for them to stop.
func (p *Provisioner) Close() error { panic("provisioner: not implemented") }

// Resolve parses ref, resolves catalog names and checks file: refs against
// the local dirs.
func (p *Provisioner) Resolve(ref string) (Ref, error) { panic("provisioner: not implemented") }

// Cached returns the cached model for ref without any network call.
func (p *Provisioner) Cached(ref string) (Model, bool) { panic("provisioner: not implemented") }

// Start begins provisioning ref in the background, or joins the provision
// already in flight for it (same id). A cached ref gives a provision that is
// already ready.
func (p *Provisioner) Start(ref string) (*Provision, error) { panic("provisioner: not implemented") }

// Ensure returns the cached model or provisions it, blocking until done or
// ctx ends (ctx ending does not cancel a provision others may share).
func (p *Provisioner) Ensure(ctx context.Context, ref string) (Model, error) {
	panic("provisioner: not implemented")
}

// Lookup returns a provision by id, in flight or recently finished.
func (p *Provisioner) Lookup(id string) (*Provision, bool) { panic("provisioner: not implemented") }

// Active returns the provisions in flight.
func (p *Provisioner) Active() []Status { panic("provisioner: not implemented") }

// List returns the cached models.
func (p *Provisioner) List() []Model { panic("provisioner: not implemented") }

// Touch records that ref was used now (LRU).
func (p *Provisioner) Touch(ref string) { panic("provisioner: not implemented") }

// Evict removes a cached model: its snapshot entries and any blob no other
// snapshot uses. inUse (may be nil) refusing gives ErrInUse.
func (p *Provisioner) Evict(ref string, inUse func(modelRef string) bool) (freedBytes int64, err error) {
	panic("provisioner: not implemented")
}

// Catalog returns the configured catalog.
func (p *Provisioner) Catalog() []CatalogEntry { panic("provisioner: not implemented") }

// CacheDir returns the hub cache directory in use.
func (p *Provisioner) CacheDir() string { panic("provisioner: not implemented") }

// Usage returns the bytes the cache holds and the configured limit (0: none).
func (p *Provisioner) Usage() (usedBytes, limitBytes int64) { panic("provisioner: not implemented") }

// Provision is one download in flight or finished.
type Provision struct{}

// ID returns the provision id ("prov-<uuid>").
func (pr *Provision) ID() string { panic("provisioner: not implemented") }

// Status returns the current status.
func (pr *Provision) Status() Status { panic("provisioner: not implemented") }

// Done is closed when the provision is ready or failed.
func (pr *Provision) Done() <-chan struct{} { panic("provisioner: not implemented") }

// Result returns the model or the error once Done is closed.
func (pr *Provision) Result() (Model, error) { panic("provisioner: not implemented") }

// Subscribe delivers statuses; a slow subscriber skips intermediate ones but
// always receives the final one, after which the channel is closed. cancel
// ends the subscription early.
func (pr *Provision) Subscribe() (updates <-chan Status, cancel func()) {
	panic("provisioner: not implemented")
}
