package client

import (
	"time"

	"github.com/rbee-hive/rbee-hive/registry"
)

// Worker is the worker record of DESIGN.md.
type Worker = registry.Worker

// Exit is a worker's last exit ({code, signal, reason, at}).
type Exit = registry.Exit

// SpawnRequest is the body of POST /v1/workers/spawn.
type SpawnRequest struct {
	ModelRef      string `json:"model_ref"`
	Backend       string `json:"backend"`
	Device        *int   `json:"device,omitempty"`         // nil: the hive picks
	RestartPolicy string `json:"restart_policy,omitempty"` // always, on-failure, never; "": the hive's default
	Wait          bool   `json:"wait,omitempty"`           // answer when ready (200) instead of at once (202)
}

// WorkerList is the answer of GET /v1/workers/list.
type WorkerList struct {
	Workers []Worker `json:"workers"`
}

// ListWorkersOptions filters GET /v1/workers/list.
type ListWorkersOptions struct {
	State    string // a worker state; "" for all
	ModelRef string
}

// ReadyRequest is a worker's ready callback (POST /v1/workers/ready).
type ReadyRequest struct {
	WorkerID  string `json:"worker_id"`
	URL       string `json:"url"`
	ModelRef  string `json:"model_ref"`
	Backend   string `json:"backend"`
	Device    int    `json:"device"`
	VRAMBytes *int64 `json:"vram_bytes,omitempty"`
}

// HeartbeatRequest is a worker's heartbeat (POST /v1/heartbeat).
type HeartbeatRequest struct {
	WorkerID  string `json:"worker_id"`
	State     string `json:"state,omitempty"` // idle or busy
	VRAMBytes *int64 `json:"vram_bytes,omitempty"`
}

// ShutdownRequest is the body of POST /v1/workers/shutdown.
type ShutdownRequest struct {
	WorkerID string `json:"worker_id"`
	// TimeoutS overrides the grace period before SIGTERM, in seconds; 0
	// means the configured grace.
	TimeoutS float64 `json:"timeout_s,omitempty"`
}

// ShutdownResult says how a worker stopped: graceful, terminated or killed.
type ShutdownResult struct {
	WorkerID string `json:"worker_id"`
	Outcome  string `json:"outcome"`
}

// WorkerHealth is one worker's probe state.
type WorkerHealth struct {
	WorkerID            string     `json:"worker_id"`
	State               string     `json:"state"`
	Healthy             bool       `json:"healthy"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	LastProbeAt         *time.Time `json:"last_probe_at"`
	LastHeartbeat       *time.Time `json:"last_heartbeat"`
	RestartCount        int        `json:"restart_count"`
	LastExit            *Exit      `json:"last_exit"`
}

// HealthList is the answer of GET /v1/workers/health.
type HealthList struct {
	Workers []WorkerHealth `json:"workers"`
}

// ProvisionRequest is the body of POST /v1/models/provision.
type ProvisionRequest struct {
	ModelRef string `json:"model_ref"`
}

// ProvisionAccepted is the 202 answer of POST /v1/models/provision.
type ProvisionAccepted struct {
	ProvisionID string `json:"provision_id"`
	ModelRef    string `json:"model_ref"`
	State       string `json:"state"`
}

// ProvisionResult is the answer of POST /v1/models/provision: Model when
// the model is cached (200), Accepted when a provision runs (202).
type ProvisionResult struct {
	Model    *Model
	Accepted *ProvisionAccepted
}

// ProvisionStatus is a provision's state: queued, downloading, verifying,
// ready or failed.
type ProvisionStatus struct {
	ProvisionID string `json:"provision_id"`
	ModelRef    string `json:"model_ref"`
	State       string `json:"state"`
	BytesDone   int64  `json:"bytes_done"`
	BytesTotal  int64  `json:"bytes_total"`
	Error       string `json:"error,omitempty"`
}

// Model is a cached model.
type Model struct {
	ModelRef      string    `json:"model_ref"`
	LocalPath     string    `json:"local_path"`
	SizeBytes     int64     `json:"size_bytes"`
	SHA256        string    `json:"sha256,omitempty"`
	Commit        string    `json:"commit,omitempty"`
	VRAMBytes     int64     `json:"vram_bytes,omitempty"`
	ProvisionedAt time.Time `json:"provisioned_at"`
	LastUsedAt    time.Time `json:"last_used_at"`
	InUseBy       []string  `json:"in_use_by"`
}

// ModelList is the answer of GET /v1/models/list.
type ModelList struct {
	Models []Model `json:"models"`
}

// CatalogEntry is a configured model name and whether it is cached.
type CatalogEntry struct {
	Name        string `json:"name"`
	ModelRef    string `json:"model_ref"`
	Description string `json:"description,omitempty"`
	SizeBytes   int64  `json:"size_bytes,omitempty"`
	VRAMBytes   int64  `json:"vram_bytes,omitempty"`
	Cached      bool   `json:"cached"`
}

// Catalog is the answer of GET /v1/models/catalog.
type Catalog struct {
	Models []CatalogEntry `json:"models"`
}

// EvictRequest is the optional body of DELETE /v1/models/evict.
type EvictRequest struct {
	ModelRef string `json:"model_ref"`
}

// EvictResult is the answer of DELETE /v1/models/evict.
type EvictResult struct {
	ModelRef   string `json:"model_ref"`
	FreedBytes int64  `json:"freed_bytes"`
}

// Health is the answer of GET /v1/health: status "alive", or
// "shutting_down" (with 503).
type Health struct {
	Status     string `json:"status"`
	Version    string `json:"version,omitempty"`
	APIVersion string `json:"api_version,omitempty"`
}

// Device is one device as the hive reads it now.
type Device struct {
	Index         int    `json:"index"`
	Backend       string `json:"backend"`
	Name          string `json:"name"`
	TotalBytes    uint64 `json:"total_bytes"`
	FreeBytes     uint64 `json:"free_bytes"`
	ReservedBytes uint64 `json:"reserved_bytes"`
}

// CacheStatus describes the model cache.
type CacheStatus struct {
	Dir           string `json:"dir"`
	UsedBytes     int64  `json:"used_bytes"`
	LimitBytes    int64  `json:"limit_bytes"`
	FreeDiskBytes uint64 `json:"free_disk_bytes"`
}

// Status is the answer of GET /v1/status.
type Status struct {
	Version          string            `json:"version"`
	UptimeS          int64             `json:"uptime_s"`
	Workers          map[string]int    `json:"workers"`
	Devices          []Device          `json:"devices"`
	Cache            CacheStatus       `json:"cache"`
	ActiveProvisions []ProvisionStatus `json:"active_provisions"`
}

// ShutdownStatus is the answer of POST /v1/admin/shutdown.
type ShutdownStatus struct {
	Status string `json:"status"`
}

// ProvisionEvent is one Server-Sent Event of
// GET /v1/models/provision/{id}/events: Type "progress" with Status, then
// one "done" with Model or "error" with Err.
type ProvisionEvent struct {
	Type   string
	Status *ProvisionStatus
	Model  *Model
	Err    *APIError
}
