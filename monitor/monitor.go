// Package monitor owns the worker lifecycle: spawn (model, device memory,
// port, command, process group, log file), readiness (callback or poll),
// crash detection, health probes, restarts by policy, stop, and re-adoption
// of live workers after a hive restart. It is the only module that starts or
// signals worker processes.
package monitor

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
	"github.com/rbee-hive/rbee-hive/restart"
)

// Readiness modes.
const (
	ReadinessCallback = "callback" // the worker POSTs /v1/workers/ready
	ReadinessPoll     = "poll"     // the hive GETs {url}{health_path} until 200
)

// Config is the worker, health and restart configuration of DESIGN.md.
type Config struct {
	Command          []string // template with {worker_id} {model_path} {model_ref} {backend} {device} {port} {callback_url}
	Env              []string // extra environment, KEY=VALUE
	Readiness        string
	HealthPath       string
	PortMin, PortMax int
	ReadyTimeout     time.Duration
	Grace            time.Duration // after the HTTP shutdown request, before SIGTERM
	TermTimeout      time.Duration // after SIGTERM, before SIGKILL (5s)
	LogMaxBytes      int64
	LogDir           string // per-worker logs; "" means a temporary directory
	HealthInterval   time.Duration
	HealthTimeout    time.Duration
	FailureThreshold int
	DefaultPolicy    restart.Policy
	Restart          restart.Config
	// HiveURL is the base URL workers call back (RBEE_HIVE_URL, {callback_url}
	// is HiveURL + "/v1/workers/ready").
	HiveURL string
	// Persistent is true when the registry is persisted: live workers are then
	// re-adopted by the next hive; otherwise they get a parent-death signal.
	Persistent bool
	// Observer receives supervision events for metrics; nil ignores them.
	Observer Observer
	Logger   *slog.Logger
}

// Observer is told what the monitor sees, for metrics. The metrics module
// implements it and the daemon passes it down, so monitor imports no
// metrics code. Methods must not block.
type Observer interface {
	WorkerRestarted(reason string)          // reason: the restart.ExitKind that caused it
	HealthCheckFailed()                     // one failed probe
	WorkerReady(spawnToReady time.Duration) // a (re)start became ready
}

// Errors callers decide on.
var (
	ErrInvalidRequest     = errors.New("invalid request")      // *FieldError
	ErrBackendUnavailable = resources.ErrBackendUnavailable    // re-exported for callers
	ErrSpawnFailed        = errors.New("spawn failed")         // exec failed, no free port, ...
	ErrUnauthorized       = errors.New("invalid worker token") //
	ErrClosed             = errors.New("monitor closed")
)

// FieldError names the request field that is wrong. It matches
// ErrInvalidRequest.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return "invalid " + e.Field + ": " + e.Reason }

// Is reports whether target is ErrInvalidRequest.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidRequest }

// SpawnRequest asks for one worker.
type SpawnRequest struct {
	ModelRef      string
	Backend       string
	Device        *int   // nil: choose
	RestartPolicy string // "": the default policy
	CorrelationID string
}

// ReadyReport is a worker's ready callback.
type ReadyReport struct {
	WorkerID  string
	URL       string
	ModelRef  string
	Backend   string
	Device    int
	VRAMBytes *int64
}

// Heartbeat is a worker's heartbeat callback.
type Heartbeat struct {
	WorkerID  string
	State     registry.State // "", idle or busy
	VRAMBytes *int64
}

// Outcome says how a stop ended.
type Outcome string

const (
	OutcomeGraceful   Outcome = "graceful"   // exited after the HTTP shutdown request
	OutcomeTerminated Outcome = "terminated" // exited after SIGTERM
	OutcomeKilled     Outcome = "killed"     // needed SIGKILL
)

// Health is one worker's probe state.
type Health struct {
	WorkerID            string         `json:"worker_id"`
	State               registry.State `json:"state"`
	Healthy             bool           `json:"healthy"`
	ConsecutiveFailures int            `json:"consecutive_failures"`
	LastProbeAt         *time.Time     `json:"last_probe_at"`
	LastHeartbeat       *time.Time     `json:"last_heartbeat"`
	RestartCount        int            `json:"restart_count"`
	LastExit            *registry.Exit `json:"last_exit"`
}

// Monitor supervises workers. Safe for concurrent use.
type Monitor struct{}

// New creates a monitor over the registry, the device ledger and the
// provisioner. It starts nothing until Start.
func New(cfg Config, reg *registry.Registry, res *resources.Manager, prov *provisioner.Provisioner) (*Monitor, error) {
	panic("monitor: not implemented")
}

// Start re-adopts persisted workers (or cleans them up) and starts the health
// loop. It returns when re-adoption is done.
func (m *Monitor) Start(ctx context.Context) error { panic("monitor: not implemented") }

// Spawn validates, provisions, reserves, starts and registers a worker in
// state loading, and returns at once. Every failure releases what it took.
func (m *Monitor) Spawn(ctx context.Context, req SpawnRequest) (registry.Worker, error) {
	panic("monitor: not implemented")
}

// WaitReady blocks until the worker is ready (idle/busy), failed or removed,
// or ctx ends.
func (m *Monitor) WaitReady(ctx context.Context, id string) (registry.Worker, error) {
	panic("monitor: not implemented")
}

// AuthenticateWorker reports, in constant time, whether token is the one the
// worker was given.
func (m *Monitor) AuthenticateWorker(workerID, token string) bool { panic("monitor: not implemented") }

// Ready handles a worker's ready callback: loading → idle.
func (m *Monitor) Ready(r ReadyReport) (registry.Worker, error) { panic("monitor: not implemented") }

// Heartbeat handles a worker's heartbeat.
func (m *Monitor) Heartbeat(h Heartbeat) (registry.Worker, error) { panic("monitor: not implemented") }

// Stop stops a worker by the stop sequence (timeout overrides the grace
// period when > 0), never restarts it, and removes it from the registry.
func (m *Monitor) Stop(ctx context.Context, id string, timeout time.Duration) (Outcome, error) {
	panic("monitor: not implemented")
}

// StopAll stops every worker in parallel; ctx bounds the whole.
func (m *Monitor) StopAll(ctx context.Context) { panic("monitor: not implemented") }

// Detach stops supervising without stopping workers, for the next hive to
// re-adopt (shutdown.leave_workers).
func (m *Monitor) Detach() { panic("monitor: not implemented") }

// Health returns probe state for one worker ("" for all).
func (m *Monitor) Health(id string) ([]Health, error) { panic("monitor: not implemented") }

// Logs returns the last n lines of a worker's stdout and stderr.
func (m *Monitor) Logs(id string, n int) ([]byte, error) { panic("monitor: not implemented") }

// InUse reports whether any worker uses the model (canonical reference).
func (m *Monitor) InUse(modelRef string) bool { panic("monitor: not implemented") }

// UsersOf returns the ids of workers that use the model.
func (m *Monitor) UsersOf(modelRef string) []string { panic("monitor: not implemented") }

// Close stops the health loop and waits for every goroutine the monitor
// owns. It does not stop workers: call StopAll or Detach first.
func (m *Monitor) Close() error { panic("monitor: not implemented") }
