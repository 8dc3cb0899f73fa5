package events

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
)

// Defaults of Config.
const (
	DefaultBuffer           = 4096
	DefaultHeartbeat        = 15 * time.Second
	DefaultProgressInterval = 250 * time.Millisecond
	DefaultSubscriberBuffer = 256
)

// Config configures a Hub. Zero values take the defaults above.
type Config struct {
	// Buffer is the size of the ring of recent events (config
	// events.buffer), of the hub's registry watch and of its provisioner
	// inbox.
	Buffer int
	// Registry is watched for worker changes; nil means no worker events.
	Registry *registry.Registry
	// Provisioner supplies the models and provisions of reset snapshots;
	// it may be set later with SetProvisioner. Its events arrive through
	// PublishProvisioner (provisioner.Config.Notify).
	Provisioner *provisioner.Provisioner
	// Heartbeat is the interval of ": ping" comments on idle streams.
	Heartbeat time.Duration
	// ProgressInterval is the least time between two provision_progress
	// events of one provision.
	ProgressInterval time.Duration
	// SubscriberBuffer is how many events may wait for one stream consumer
	// before it counts as stuck and is dropped.
	SubscriberBuffer int
	// OnDrop is called (from the hub's goroutine; it must not block) each
	// time a stream consumer is dropped for falling behind.
	OnDrop func()
	Logger *slog.Logger
}

// errHubStopped is why subscriptions end once Run has returned.
var errHubStopped = errors.New("events: hub stopped")

// Hub numbers the hive's changes and fans them out. Create it with New,
// run it with Run, serve it as an http.Handler.
type Hub struct {
	cfg  Config
	log  *slog.Logger
	reg  *registry.Registry
	prov atomic.Pointer[provisioner.Provisioner]

	// inbox holds pointers: a buffer of cfg.Buffer values is allocated in
	// full up front (0.6 MB at the default size) and is almost always empty.
	inbox        chan *provisioner.Event
	kick         chan struct{} // cap 1: something in the flags below
	provLost     atomic.Bool   // the inbox overflowed: a reset is due
	shutdownReq  atomic.Bool   // hive_shutting_down is due
	shutdownOnce atomic.Bool
	running      atomic.Bool

	progMu       sync.Mutex
	lastProgress map[string]time.Time // provision id → last progress event

	// testHook, when set, runs in the hub goroutine before each registry
	// change (tests use it to stall the hub).
	testHook func()

	// regSub is the hub's registry watch, taken in New so that no change
	// between New and Run is lost.
	regSub *registry.Subscription

	// regSkip: registry changes up to this Seq are in the last reset's
	// snapshot already. Only the Run goroutine uses it.
	regSkip uint64

	mu     sync.Mutex
	ring   *ring
	nextID uint64 // written by the Run goroutine, under mu
	subs   map[*subscriber]struct{}
	closed bool
}

// subscriber is one consumer of the live events.
type subscriber struct {
	ch        chan *entry
	done      chan struct{} // closed when dropped or when the hub stops
	types     map[string]bool
	workers   map[string]bool
	kill      func() // unblocks a write stuck on the consumer; may be nil
	countDrop bool   // call OnDrop when dropped (stream consumers)

	dropped bool  // guarded by Hub.mu
	why     error // why done was closed; guarded by Hub.mu
}

// errFellBehind is why a subscriber whose queue filled was dropped.
var errFellBehind = errors.New("events: subscriber fell behind and was dropped")

// reason says why s.done was closed.
func (h *Hub) reason(s *subscriber) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return s.why
}

// matches reports whether e passes the consumer's filters.
func (s *subscriber) matches(e *entry) bool {
	if e.typ == TypeReset {
		return true
	}
	if s.types != nil && !s.types[e.typ] {
		return false
	}
	if s.workers != nil && e.typ != TypeHiveShuttingDown && !s.workers[e.workerID] {
		return false
	}
	return true
}

// New creates a hub. It starts watching the registry at once, so no change
// between New and Run is lost; events flow once Run runs.
func New(cfg Config) *Hub {
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = DefaultProgressInterval
	}
	if cfg.SubscriberBuffer <= 0 {
		cfg.SubscriberBuffer = DefaultSubscriberBuffer
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Hub{
		cfg:          cfg,
		log:          cfg.Logger,
		reg:          cfg.Registry,
		inbox:        make(chan *provisioner.Event, cfg.Buffer),
		kick:         make(chan struct{}, 1),
		lastProgress: make(map[string]time.Time),
		ring:         newRing(cfg.Buffer),
		subs:         make(map[*subscriber]struct{}),
		// See the package doc: ids of a later hive start above ours.
		nextID: uint64(time.Now().UnixMicro()),
	}
	if cfg.Provisioner != nil {
		h.prov.Store(cfg.Provisioner)
	}
	if h.reg != nil {
		h.regSub = h.reg.Watch(cfg.Buffer)
	}
	return h
}

// SetProvisioner sets the provisioner reset snapshots read models and
// provisions from (the provisioner is created after the hub, because its
// Notify is the hub's PublishProvisioner).
func (h *Hub) SetProvisioner(p *provisioner.Provisioner) { h.prov.Store(p) }

// Run consumes the registry's watch and the provisioner's events until ctx
// ends, then ends every stream. It returns nil when ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	if !h.running.CompareAndSwap(false, true) {
		return errors.New("events: hub already running")
	}
	defer h.stop()

	sub := h.regSub
	var regC <-chan *registry.Event
	if sub != nil {
		regC = sub.C()
	}
	defer func() {
		if sub != nil {
			sub.Close()
		}
	}()

	for {
		select {
		case <-ctx.Done():
			h.drainPending(regC)
			return nil
		case ev, ok := <-regC:
			if !ok {
				if errors.Is(sub.Err(), registry.ErrSlowSubscriber) {
					// We fell behind: changes were lost. Watch again and
					// tell everyone the full state.
					h.log.Warn("events: registry watch fell behind; re-subscribing and sending a reset", "buffer", h.cfg.Buffer)
					sub = h.reg.Watch(h.cfg.Buffer)
					regC = sub.C()
					h.broadcastReset()
					continue
				}
				// The registry closed: no more worker changes.
				regC = nil
				continue
			}
			if h.testHook != nil {
				h.testHook()
			}
			h.emitRegistry(ev)
		case pe := <-h.inbox:
			h.emitProvisioner(pe)
		case <-h.kick:
			if h.provLost.Swap(false) {
				// Emit what did fit first, so the reset comes last.
				h.drainInbox()
				h.log.Warn("events: provisioner events overflowed the hub's inbox; sending a reset", "buffer", h.cfg.Buffer)
				h.broadcastReset()
			}
			if h.shutdownReq.Swap(false) {
				h.drainInbox()
				h.emit(&Event{Type: TypeHiveShuttingDown, Time: time.Now()}, 0)
			}
		}
	}
}

// emitRegistry emits the events of one registry change.
func (h *Hub) emitRegistry(ev *registry.Event) {
	if ev.Seq <= h.regSkip {
		return // the last reset's snapshot holds it
	}
	for _, e := range workerEvents(ev) {
		h.emit(&e, ev.Seq)
	}
}

// drainPending emits what was already queued when Run was told to stop: in
// a drain, the shutdown notice and the last workers' removals, which
// subscribers and the queen pusher must still see before their streams end.
func (h *Hub) drainPending(regC <-chan *registry.Event) {
	h.drainInbox()
	if h.shutdownReq.Swap(false) {
		h.emit(&Event{Type: TypeHiveShuttingDown, Time: time.Now()}, 0)
	}
	for regC != nil {
		select {
		case ev, ok := <-regC:
			if !ok {
				return
			}
			h.emitRegistry(ev)
		default:
			return
		}
	}
}

func (h *Hub) drainInbox() {
	for {
		select {
		case pe := <-h.inbox:
			h.emitProvisioner(pe)
		default:
			return
		}
	}
}

// PublishProvisioner takes one provisioner event (wire it as
// provisioner.Config.Notify). It never blocks: if the hub's inbox is full
// the event is lost and the hub sends a reset instead.
func (h *Hub) PublishProvisioner(ev provisioner.Event) {
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	switch ev.Kind {
	case provisioner.EventProvisionProgress:
		if !h.allowProgress(ev.Status.ID, ev.At) {
			return
		}
	case provisioner.EventProvisionDone, provisioner.EventProvisionFailed:
		h.progMu.Lock()
		delete(h.lastProgress, ev.Status.ID)
		h.progMu.Unlock()
	}
	select {
	case h.inbox <- &ev:
	default:
		h.provLost.Store(true)
		h.poke()
	}
}

// allowProgress rate-limits progress events per provision.
func (h *Hub) allowProgress(id string, at time.Time) bool {
	h.progMu.Lock()
	defer h.progMu.Unlock()
	if last, ok := h.lastProgress[id]; ok && at.Sub(last) < h.cfg.ProgressInterval {
		return false
	}
	h.lastProgress[id] = at
	return true
}

// PublishShutdown emits hive_shutting_down (once). It never blocks.
func (h *Hub) PublishShutdown() {
	if h.shutdownOnce.CompareAndSwap(false, true) {
		h.shutdownReq.Store(true)
		h.poke()
	}
}

func (h *Hub) poke() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

func (h *Hub) emitProvisioner(pe *provisioner.Event) {
	ev := Event{Type: string(pe.Kind), Time: pe.At}
	switch pe.Kind {
	case provisioner.EventProvisionStarted, provisioner.EventProvisionProgress,
		provisioner.EventProvisionDone, provisioner.EventProvisionFailed:
		st := pe.Status
		ev.Provision = &st
	case provisioner.EventModelEvicted:
	default:
		h.log.Warn("events: unknown provisioner event kind; ignored", "kind", pe.Kind)
		return
	}
	if pe.Model != nil {
		m := *pe.Model
		ev.Model = &m
	}
	h.emit(&ev, 0)
}

// emit numbers ev, rings it and hands it to every matching subscriber.
// Only the Run goroutine calls it.
func (h *Hub) emit(ev *Event, regSeq uint64) {
	ev.ID = h.nextID
	e, err := encode(ev, regSeq)
	if err != nil {
		h.log.Error("events: encoding an event failed; dropped", "type", ev.Type, "err", err)
		return
	}
	drops := 0
	h.mu.Lock()
	h.nextID++
	h.ring.push(e)
	for s := range h.subs {
		if !s.matches(e) {
			continue
		}
		select {
		case s.ch <- e:
		default:
			h.endLocked(s, errFellBehind)
			if s.countDrop {
				drops++
			}
		}
	}
	h.mu.Unlock()
	if drops > 0 {
		h.log.Warn("events: dropped stream consumers that fell behind", "count", drops, "id", e.id)
		if h.cfg.OnDrop != nil {
			for range drops {
				h.cfg.OnDrop()
			}
		}
	}
}

// broadcastReset emits a reset with the full state, and makes the Run loop
// skip the registry changes the snapshot already holds.
func (h *Hub) broadcastReset() {
	snap, seq := h.snapshot()
	h.regSkip = seq
	h.emit(&Event{Type: TypeReset, Time: time.Now(), Snapshot: &snap}, 0)
}

// snapshot returns the full state and the registry Seq it holds at least:
// every change up to that Seq is in it (later ones may be too).
func (h *Hub) snapshot() (Snapshot, uint64) {
	snap := Snapshot{Workers: []registry.Worker{}, Models: []provisioner.Model{}}
	var seq uint64
	if h.reg != nil {
		seq = h.reg.Seq()
		snap.Workers = h.reg.List(registry.Filter{})
	}
	if p := h.prov.Load(); p != nil {
		if ms := p.List(); ms != nil {
			snap.Models = ms
		}
		snap.Provisions = p.Active()
	}
	return snap, seq
}

// subscribeRequest says what a new subscriber wants.
type subscribeRequest struct {
	types     map[string]bool
	workers   map[string]bool
	buffer    int
	resume    bool   // lastID is set
	lastID    uint64 // resume after this id
	kill      func()
	countDrop bool
}

// subscribeResult is where a new subscriber starts.
type subscribeResult struct {
	sub    *subscriber
	pos    uint64   // id of the latest event when it subscribed
	replay []*entry // events after lastID, from the ring, filtered
	reset  bool     // lastID was not in the ring: start with a reset
}

// subscribe registers a subscriber for every event after the latest one
// and, for a resume, returns what it missed from the ring.
func (h *Hub) subscribe(req subscribeRequest) (subscribeResult, error) {
	s := &subscriber{
		ch:        make(chan *entry, req.buffer),
		done:      make(chan struct{}),
		types:     req.types,
		workers:   req.workers,
		kill:      req.kill,
		countDrop: req.countDrop,
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return subscribeResult{}, errHubStopped
	}
	res := subscribeResult{sub: s, pos: h.nextID - 1}
	if req.resume && req.lastID != res.pos {
		oldest, ok := h.ring.oldest()
		if ok && req.lastID+1 >= oldest && req.lastID < res.pos {
			for _, e := range h.ring.after(req.lastID) {
				if s.matches(e) {
					res.replay = append(res.replay, e)
				}
			}
		} else {
			res.reset = true
		}
	}
	h.subs[s] = struct{}{}
	return res, nil
}

// unsubscribe forgets s (it was done, or is now).
func (h *Hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !s.dropped {
		s.dropped = true
		delete(h.subs, s)
		close(s.done)
	}
}

// endLocked drops s and unblocks its writer; h.mu held.
func (h *Hub) endLocked(s *subscriber, why error) {
	if s.dropped {
		return
	}
	s.dropped = true
	s.why = why
	delete(h.subs, s)
	close(s.done)
	// A consumer that fell behind may have its writer blocked on a full
	// socket: unblock it. When the hub stops, streams end cleanly instead
	// (a writer stuck then is ended by the server's Close).
	if why == errFellBehind && s.kill != nil {
		s.kill()
	}
}

// stop ends every subscriber; later subscribes fail.
func (h *Hub) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		h.endLocked(s, errHubStopped)
	}
}

// subscribers returns how many consumers are subscribed.
func (h *Hub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// latest returns the id of the latest event.
func (h *Hub) latest() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.nextID - 1
}
