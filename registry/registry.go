// Package registry owns the hive's worker records: the record itself, the
// worker state machine of DESIGN.md, concurrency-safe access, a change watch
// that never lets a slow subscriber stall writers, and optional atomic
// persistence in a state directory.
//
// It imports no other rbee-hive module; it is safe to use on its own.
package registry

import (
	"errors"
	"fmt"
	"time"
)

// State is a worker's lifecycle state.
type State string

// The worker states of DESIGN.md.
const (
	StateLoading    State = "loading"    // provisioning or starting, waiting for ready
	StateIdle       State = "idle"       // ready, serving nothing
	StateBusy       State = "busy"       // ready, serving
	StateUnhealthy  State = "unhealthy"  // live, but health probes failing
	StateRestarting State = "restarting" // exited, waiting out backoff
	StateStopping   State = "stopping"   // the hive is stopping it
	StateFailed     State = "failed"     // gave up; kept with LastError until shut down
)

// States lists every state in a stable order (for metrics with zero values).
func States() []State {
	return []State{StateLoading, StateIdle, StateBusy, StateUnhealthy, StateRestarting, StateStopping, StateFailed}
}

// Exit describes how a worker process ended.
type Exit struct {
	Code   *int      `json:"code"`   // exit status; nil when killed by a signal
	Signal string    `json:"signal"` // signal name ("SIGKILL"), "" when it exited
	Reason string    `json:"reason"` // restart.ExitKind as text: clean, error, signal, stopped, unhealthy, start_failed
	At     time.Time `json:"at"`
}

// Process identifies a worker's OS process well enough to re-adopt it after a
// hive restart. It is persisted but never served over the API.
type Process struct {
	PGID      int    `json:"pgid"`
	StartTime uint64 `json:"start_time"` // /proc/<pid>/stat field 22, clock ticks since boot
	TokenHash string `json:"token_hash"` // hex sha256 of the worker's RBEE_WORKER_TOKEN
	LogPath   string `json:"log_path"`
}

// Worker is one worker record, as served by the API.
type Worker struct {
	ID            string     `json:"worker_id"`
	PID           int        `json:"pid"`
	ModelRef      string     `json:"model_ref"`
	ModelPath     string     `json:"model_path"`
	Backend       string     `json:"backend"`
	Device        int        `json:"device"`
	State         State      `json:"state"`
	URL           string     `json:"url"`
	Port          int        `json:"port"`
	VRAMBytes     int64      `json:"vram_bytes"`
	RestartPolicy string     `json:"restart_policy"`
	RestartCount  int        `json:"restart_count"`
	LastExit      *Exit      `json:"last_exit"`
	LastError     string     `json:"last_error"`
	CreatedAt     time.Time  `json:"created_at"`
	ReadyAt       *time.Time `json:"ready_at"`
	LastHeartbeat *time.Time `json:"last_heartbeat"`

	// Process is supervision data: persisted, never served.
	Process Process `json:"-"`
}

// Clone returns a deep copy, so callers never share pointers with the registry.
func (w Worker) Clone() Worker { panic("registry: not implemented") }

// Filter selects workers in List. Zero fields match everything.
type Filter struct {
	State    State
	ModelRef string
}

// EventKind says what happened to a worker.
type EventKind string

const (
	EventRegistered EventKind = "registered"
	EventUpdated    EventKind = "updated"
	EventRemoved    EventKind = "removed"
)

// Event is one change, delivered to watchers in commit order.
type Event struct {
	Seq    uint64    // strictly increasing per registry
	Kind   EventKind //
	From   State     // state before the change ("" for registered)
	Worker Worker    // the record after the change (before, for removed)
	At     time.Time
}

// Errors callers decide on.
var (
	ErrNotFound       = errors.New("worker not found")
	ErrExists         = errors.New("worker already registered")
	ErrSlowSubscriber = errors.New("watch subscriber fell behind and was dropped")
)

// TransitionError is returned when a change asks for a state transition the
// state machine does not allow. It matches ErrInvalidTransition with errors.Is.
type TransitionError struct {
	WorkerID string
	From, To State
}

// ErrInvalidTransition matches every *TransitionError.
var ErrInvalidTransition = errors.New("invalid state transition")

func (e *TransitionError) Error() string {
	return fmt.Sprintf("worker %s: invalid state transition %s -> %s", e.WorkerID, e.From, e.To)
}

// Is reports whether target is ErrInvalidTransition.
func (e *TransitionError) Is(target error) bool { return target == ErrInvalidTransition }

// CanTransition reports whether the state machine allows from -> to.
// A change that keeps the state is always allowed.
func CanTransition(from, to State) bool { panic("registry: not implemented") }

// Options configure a Registry.
type Options struct {
	// StateDir, when set, makes every change durable in StateDir/workers.json.
	StateDir string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Registry holds worker records. All methods are safe for concurrent use.
type Registry struct{}

// Open creates a registry and, with a StateDir, loads what it persisted. A
// corrupt or truncated file is an error naming it; the bad file is moved
// aside (workers.json.corrupt-<unix>) and never silently dropped.
func Open(opts Options) (*Registry, error) { panic("registry: not implemented") }

// Register adds a new record (ErrExists when the id is taken).
func (r *Registry) Register(w Worker) (Worker, error) { panic("registry: not implemented") }

// Get returns a copy of one record, or ErrNotFound.
func (r *Registry) Get(id string) (Worker, error) { panic("registry: not implemented") }

// List returns copies of the matching records, oldest first.
func (r *Registry) List(f Filter) []Worker { panic("registry: not implemented") }

// Update applies fn to the record under the registry's lock, so
// read-modify-write cannot race. If fn returns an error, nothing changes. A
// state change the state machine refuses returns a *TransitionError and
// changes nothing. It returns the record after the change.
func (r *Registry) Update(id string, fn func(*Worker) error) (Worker, error) {
	panic("registry: not implemented")
}

// Remove deletes a record and returns it as it was.
func (r *Registry) Remove(id string) (Worker, error) { panic("registry: not implemented") }

// Counts returns the number of workers in each state, every state present.
func (r *Registry) Counts() map[State]int { panic("registry: not implemented") }

// Len returns the number of records.
func (r *Registry) Len() int { panic("registry: not implemented") }

// Seq returns the sequence number of the last committed change.
func (r *Registry) Seq() uint64 { panic("registry: not implemented") }

// Watch subscribes to changes from now on, buffered up to buffer events. A
// subscriber that lets its buffer fill is dropped: its channel is closed and
// Err reports ErrSlowSubscriber; it may re-subscribe and re-List.
func (r *Registry) Watch(buffer int) *Subscription { panic("registry: not implemented") }

// Close stops all watches and flushes persistence.
func (r *Registry) Close() error { panic("registry: not implemented") }

// Subscription is one Watch.
type Subscription struct{}

// C delivers events in commit order; it is closed on Close, on registry
// Close, or when the subscriber fell behind.
func (s *Subscription) C() <-chan Event { panic("registry: not implemented") }

// Err reports why C was closed (nil after Close).
func (s *Subscription) Err() error { panic("registry: not implemented") }

// Close ends the subscription. Safe to call more than once.
func (s *Subscription) Close() { panic("registry: not implemented") }
