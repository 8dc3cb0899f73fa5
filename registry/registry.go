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
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	// ReservedBytes is the device memory the hive reserved for the worker,
	// reserved again by the next hive. 0: not known (a file written before
	// the field existed).
	ReservedBytes uint64 `json:"reserved_bytes,omitempty"`
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
func (w Worker) Clone() Worker {
	if w.LastExit != nil {
		e := *w.LastExit
		if e.Code != nil {
			c := *e.Code
			e.Code = &c
		}
		w.LastExit = &e
	}
	if w.ReadyAt != nil {
		t := *w.ReadyAt
		w.ReadyAt = &t
	}
	if w.LastHeartbeat != nil {
		t := *w.LastHeartbeat
		w.LastHeartbeat = &t
	}
	return w
}

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
	// ErrClosed is returned by changes after Close.
	ErrClosed = errors.New("registry closed")
	// ErrPersist wraps a failure to write the state file; the change it
	// reports was not applied (see Registry).
	ErrPersist = errors.New("registry: persisting state failed")
	// ErrCorrupt wraps a state file that cannot be read back; Open moved it
	// aside and names both paths.
	ErrCorrupt = errors.New("registry: corrupt state file")
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

// Options configure a Registry.
type Options struct {
	// StateDir, when set, makes every change durable in StateDir/workers.json.
	StateDir string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger reports what no caller can be told (a failed background flush,
	// a dropped watcher); nil means slog.Default().
	Logger *slog.Logger
}

// Registry holds worker records. All methods are safe for concurrent use.
//
// Changes are serialized: each one is staged against the committed records,
// and, with a StateDir, written to disk before it is committed to memory and
// announced to watchers. So a change that returns an error (ErrPersist
// included) changed nothing: no reader or watcher ever saw it, and the file
// on disk still holds every worker the registry holds. (If only the final
// directory fsync failed, the file may already show the refused change; the
// store then rewrites it from memory within about a second.) Concurrent changes
// share one write (group commit): while one write is in flight the next
// changes queue up, and the first of them to get its turn writes them all.
//
// One exception, for heartbeat rates, spawn and relaunch latency: an Update
// that changes only what a restart finds out again (heartbeats, vram_bytes,
// ready_at, moves between loading, idle and busy, see onlyLiveness; and the
// move to restarting of a worker whose process ended, see processEnded) is
// committed at once and reaches the disk lazily, at most about a second
// later (or with the next write, or at Close). Nothing re-adoption needs is
// lost if the hive dies in between.
type Registry struct {
	now func() time.Time
	log *slog.Logger
	st  *store // nil without a StateDir

	// commitMu serializes changes: staging, the write, the commit. It also
	// guards closed and st's timer (see store for what it does not cover).
	commitMu sync.Mutex
	queueMu  sync.Mutex
	queue    []*op
	closed   bool

	// mu guards the committed records and seq; writers hold it only for the
	// in-memory commit, so readers never wait for a disk write.
	mu      sync.RWMutex
	workers map[string]*Worker // never mutated in place: replaced on commit
	seq     uint64

	lists atomic.Pointer[listCache] // AppendJSON's encodings (listjson.go)

	subMu      sync.Mutex
	subs       map[*Subscription]struct{}
	subsClosed bool // after Close, new watches start closed
}

// Open creates a registry and, with a StateDir, loads what it persisted. A
// corrupt or truncated file is an error (matching ErrCorrupt) naming it; the
// bad file is moved aside (workers.json.corrupt-<unixnano>) and never
// silently dropped. A missing file is an empty registry.
func Open(opts Options) (*Registry, error) {
	r := &Registry{
		now:     opts.Now,
		log:     opts.Logger,
		workers: make(map[string]*Worker),
		subs:    make(map[*Subscription]struct{}),
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	if opts.StateDir != "" {
		st, workers, seq, err := openStore(opts.StateDir, r.log)
		if err != nil {
			return nil, err
		}
		st.onTimer = r.flushLazy
		r.st = st
		for _, w := range workers {
			r.workers[w.ID] = w
		}
		r.seq = seq
	}
	return r, nil
}

// Register adds a new record (ErrExists when the id is taken). An empty
// State means StateLoading and a zero CreatedAt means now.
func (r *Registry) Register(w Worker) (Worker, error) {
	o := &op{kind: EventRegistered, id: w.ID, w: w.Clone()}
	return r.submit(o)
}

// Get returns a copy of one record, or ErrNotFound.
func (r *Registry) Get(id string) (Worker, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	w, ok := r.workers[id]
	if !ok {
		return Worker{}, fmt.Errorf("get %s: %w", id, ErrNotFound)
	}
	return w.Clone(), nil
}

// List returns copies of the matching records, oldest first (CreatedAt,
// then ID).
func (r *Registry) List(f Filter) []Worker {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.listLocked(f)
}

func (r *Registry) listLocked(f Filter) []Worker {
	out := make([]Worker, 0, len(r.workers))
	for _, w := range r.workers {
		if f.matches(w) {
			out = append(out, w.Clone())
		}
	}
	sortWorkers(out)
	return out
}

func (f Filter) matches(w *Worker) bool {
	return (f.State == "" || w.State == f.State) && (f.ModelRef == "" || w.ModelRef == f.ModelRef)
}

func sortWorkers(ws []Worker) {
	slices.SortFunc(ws, func(a, b Worker) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// Update applies fn to the record under the registry's lock, so
// read-modify-write cannot race. If fn returns an error, nothing changes and
// that error is returned as it is. A state change the state machine refuses
// returns a *TransitionError and changes nothing; so does changing the ID.
// It returns the record after the change. fn works on a copy and must not
// call the registry. An fn that changes nothing commits nothing and emits no
// event.
func (r *Registry) Update(id string, fn func(*Worker) error) (Worker, error) {
	o := &op{kind: EventUpdated, id: id, fn: fn}
	return r.submit(o)
}

// Remove deletes a record, in any state, and returns it as it was.
func (r *Registry) Remove(id string) (Worker, error) {
	o := &op{kind: EventRemoved, id: id}
	return r.submit(o)
}

// Counts returns the number of workers in each state, every state present.
func (r *Registry) Counts() map[State]int {
	counts := make(map[State]int, len(transitions))
	for _, s := range States() {
		counts[s] = 0
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, w := range r.workers {
		counts[w.State]++
	}
	return counts
}

// Len returns the number of records.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.workers)
}

// Seq returns the sequence number of the last committed change. With a
// StateDir it carries on across restarts.
func (r *Registry) Seq() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.seq
}

// Close stops all watches and flushes persistence (a lazily persisted
// heartbeat). Later changes return ErrClosed; reads keep working. Safe to
// call more than once.
func (r *Registry) Close() error {
	r.commitMu.Lock()
	defer r.commitMu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	var err error
	if r.st != nil {
		err = r.st.close(r.workers, r.seq)
	}
	r.mu.Lock()
	r.closeSubs()
	r.mu.Unlock()
	return err
}

// op is one queued change and, once done, its result.
type op struct {
	kind EventKind
	id   string
	w    Worker              // Register
	fn   func(*Worker) error // Update

	done     bool // set under commitMu
	res      Worker
	err      error
	panicked any

	next  *Worker // staged record; nil for a removal
	ev    *Event  // staged event; nil when nothing changed
	eager bool    // must reach the disk before it returns
}

// submit runs o, together with whatever else is queued (group commit), and
// returns its result.
func (r *Registry) submit(o *op) (Worker, error) {
	if r.st == nil {
		// Nothing to share a write with: run it alone.
		r.commitMu.Lock()
		r.runBatch([]*op{o})
		r.commitMu.Unlock()
	} else {
		r.queueMu.Lock()
		r.queue = append(r.queue, o)
		r.queueMu.Unlock()

		r.commitMu.Lock()
		if !o.done {
			// Our turn: take everything queued, o included.
			r.queueMu.Lock()
			batch := r.queue
			r.queue = nil
			r.queueMu.Unlock()
			r.runBatch(batch)
		}
		r.commitMu.Unlock()
	}
	if o.panicked != nil {
		panic(o.panicked)
	}
	return o.res, o.err
}

// runBatch stages every op of batch, writes the result when it must, then
// commits and announces it. Called with commitMu held.
func (r *Registry) runBatch(batch []*op) {
	defer func() {
		for _, o := range batch {
			o.done = true
		}
	}()
	if r.closed {
		for _, o := range batch {
			o.err = fmt.Errorf("%s %s: %w", o.kind, o.id, ErrClosed)
		}
		return
	}

	// Staged records shadow the committed ones: a later op of the batch sees
	// what an earlier one did. A nil value is a removal.
	staged := make(map[string]*Worker, len(batch))
	lookup := func(id string) (*Worker, bool) {
		if w, ok := staged[id]; ok {
			return w, w != nil
		}
		w, ok := r.workers[id]
		return w, ok
	}
	var changed []*op
	eager := false
	now := r.now()
	for _, o := range batch {
		r.stage(o, lookup, now)
		if o.err != nil || o.panicked != nil || o.ev == nil {
			continue
		}
		staged[o.id] = o.next
		changed = append(changed, o)
		eager = eager || o.eager
	}
	if len(changed) == 0 {
		return
	}

	if r.st != nil {
		if eager {
			if err := r.st.write(r.workers, staged, r.seq+uint64(len(changed))); err != nil {
				r.st.markDirty()
				for _, o := range changed {
					o.err = fmt.Errorf("%s %s: %w", o.kind, o.id, err)
					o.res = Worker{}
				}
				return
			}
		} else {
			r.st.markDirty()
		}
	}

	r.mu.Lock()
	for id, w := range staged {
		if w == nil {
			delete(r.workers, id)
		} else {
			r.workers[id] = w
		}
	}
	for _, o := range changed {
		r.seq++
		o.ev.Seq = r.seq
		r.publish(*o.ev)
	}
	r.mu.Unlock()
}

// stage decides one op against the records as lookup sees them, setting
// o.res and o.err, and o.next and o.ev when something changes.
func (r *Registry) stage(o *op, lookup func(string) (*Worker, bool), now time.Time) {
	defer func() {
		if p := recover(); p != nil {
			// Re-panicked in the caller's goroutine, not the one committing.
			o.panicked = p
			o.ev = nil
		}
	}()
	cur, exists := lookup(o.id)
	switch o.kind {
	case EventRegistered:
		w := o.w
		switch {
		case w.ID == "":
			o.err = errors.New("register: empty worker id")
			return
		case exists:
			o.err = fmt.Errorf("register %s: %w", w.ID, ErrExists)
			return
		}
		if w.State == "" {
			w.State = StateLoading
		}
		if !w.State.Valid() {
			o.err = fmt.Errorf("register %s: unknown state %q", w.ID, w.State)
			return
		}
		if w.CreatedAt.IsZero() {
			w.CreatedAt = now.UTC().Round(0)
		}
		o.next = &w
		o.ev = &Event{Kind: EventRegistered, Worker: w.Clone(), At: now}
		o.res = w.Clone()
		o.eager = true

	case EventUpdated:
		if !exists {
			o.err = fmt.Errorf("update %s: %w", o.id, ErrNotFound)
			return
		}
		w := cur.Clone()
		if err := o.fn(&w); err != nil {
			o.err = err
			return
		}
		if w.ID != cur.ID {
			o.err = fmt.Errorf("update %s: the worker id cannot change (to %q)", cur.ID, w.ID)
			return
		}
		if !CanTransition(cur.State, w.State) {
			o.err = &TransitionError{WorkerID: cur.ID, From: cur.State, To: w.State}
			return
		}
		o.res = w.Clone()
		if reflect.DeepEqual(&w, cur) {
			return // nothing changed: nothing to commit or announce
		}
		o.eager = r.st != nil && !onlyLiveness(cur, &w) && !processEnded(cur, &w)
		o.next = &w
		o.ev = &Event{Kind: EventUpdated, From: cur.State, Worker: w.Clone(), At: now}

	case EventRemoved:
		if !exists {
			o.err = fmt.Errorf("remove %s: %w", o.id, ErrNotFound)
			return
		}
		o.next = nil
		o.ev = &Event{Kind: EventRemoved, From: cur.State, Worker: cur.Clone(), At: now}
		o.res = cur.Clone()
		o.eager = true
	}
}

// onlyLiveness reports whether next differs from cur only in what a hive
// restart finds out again by probing the worker: heartbeats, the reported
// vram_bytes, ready_at, and moves between the live states loading, idle and
// busy (re-adoption probes every worker and marks a healthy one ready,
// whatever state the file says). Such a change reaches the disk lazily (at
// the next write, the lazy flush or Close), so a spawn or a heartbeat does
// not wait for an fsync. Everything re-adoption needs to find and trust the
// process (pid, process identity, url, port) and every other state change
// but processEnded's is written before Update returns.
func onlyLiveness(cur, next *Worker) bool {
	if cur.State != next.State && (!liveState(cur.State) || !liveState(next.State)) {
		return false
	}
	return equalBeyondLiveness(cur, next, nil)
}

// equalBeyondLiveness reports whether cur and next are equal once the
// liveness fields (heartbeat, ready_at, vram_bytes, state) and whatever
// clear also resets, applied to copies of both, are set aside.
func equalBeyondLiveness(cur, next *Worker, clear func(*Worker)) bool {
	a, b := *cur, *next
	for _, w := range []*Worker{&a, &b} {
		w.LastHeartbeat, w.ReadyAt, w.VRAMBytes, w.State = nil, nil, 0, ""
		if clear != nil {
			clear(w)
		}
	}
	return reflect.DeepEqual(a, b)
}

// processEnded reports whether next only records that cur's process ended
// and the worker waits to be started again: the move to restarting with the
// pid cleared, last_exit, last_error and restart_count set, nothing else
// re-adoption reads (process identity, url, port, model path) changed. It is
// written lazily, so a crashed worker is relaunched without waiting for an
// fsync. If the hive dies first, the file still names the ended process:
// re-adoption finds that pid gone, or taken by a process with another start
// time (which it leaves alone), and hands the worker to its restart policy,
// as it does a record that says restarting. Only this exit's code and the
// count of one restart can be missing from the file then. The record of the
// next process (its pid) is written at once, as before.
func processEnded(cur, next *Worker) bool {
	if next.State != StateRestarting || next.PID != 0 {
		return false
	}
	switch cur.State {
	case StateLoading, StateIdle, StateBusy, StateUnhealthy, StateRestarting:
	default:
		return false
	}
	return equalBeyondLiveness(cur, next, func(w *Worker) {
		w.PID, w.LastExit, w.LastError, w.RestartCount = 0, nil, "", 0
	})
}

func liveState(s State) bool {
	return s == StateLoading || s == StateIdle || s == StateBusy
}

// mergeRecords returns the committed records with the staged ones applied,
// oldest first, without touching either map.
func mergeRecords(committed, staged map[string]*Worker) []*Worker {
	out := make([]*Worker, 0, len(committed)+len(staged))
	for id, w := range committed {
		if _, ok := staged[id]; !ok {
			out = append(out, w)
		}
	}
	for _, w := range staged {
		if w != nil {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b *Worker) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// flushLazy writes changes that were committed without a write (heartbeats).
// It runs from the store's timer. It holds commitMu only to take a
// snapshot of the records (the map of immutable records, not the records):
// changes go on while the file is written.
func (r *Registry) flushLazy() {
	r.commitMu.Lock()
	if r.closed {
		r.commitMu.Unlock()
		return
	}
	r.st.timer = nil
	snap, seq := maps.Clone(r.workers), r.seq
	r.commitMu.Unlock()
	if err := r.st.flush(snap, seq); err != nil {
		r.commitMu.Lock()
		if !r.closed {
			r.st.markDirty() // retry later
		}
		r.commitMu.Unlock()
	}
}
