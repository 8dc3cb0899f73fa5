// Package monitor owns the worker lifecycle: spawn (model, device memory,
// port, command, process group, log file), readiness (callback or poll),
// crash detection, health probes, restarts by policy, stop, and re-adoption
// of live workers after a hive restart. It is the only module that starts or
// signals worker processes.
//
// How it works, briefly:
//
//   - Each worker runs in its own process group (its children are killed with
//     it, after every exit and at stop), with stdout and stderr appended to
//     LogDir/<worker_id>.log (capped, see Logs).
//   - Exits are seen at once through pidfds, all in one epoll instance
//     that the runtime's poller watches (one goroutine), the same way for
//     workers this monitor started and for workers it re-adopted; its own
//     children are reaped, so no zombie is left.
//   - Without persistence, workers get a parent-death signal (SIGKILL) and
//     die with the hive; processes are started from one OS thread locked
//     for the monitor's lifetime, because the signal follows the forking
//     thread, not the process (Go issue 27505).
//   - Readiness: the ready callback (Ready, authenticated by the per-worker
//     token's sha256, compared in constant time) or polling
//     GET {url}{HealthPath} every 10ms growing to 250ms. HealthPath also
//     serves the periodic health probes.
//   - Restarts follow the restart package's Tracker, one per worker.
//   - The worker's id, token, hive URL, correlation id and, for cuda,
//     CUDA_VISIBLE_DEVICES are in its environment (RBEE_WORKER_ID,
//     RBEE_WORKER_TOKEN, RBEE_HIVE_URL, RBEE_CORRELATION_ID).
//
// Requires Linux 5.3 or later (pidfd_open).
package monitor

import (
	"errors"
	"log/slog"
	"time"

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
	HealthPath       string // GET {url}{HealthPath}: poll readiness and health probes ("/health")
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
	Err    error // the cause, e.g. a *provisioner.RefError; may be nil
}

func (e *FieldError) Error() string { return "invalid " + e.Field + ": " + e.Reason }

// Unwrap returns the cause.
func (e *FieldError) Unwrap() error { return e.Err }

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
