package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
	"github.com/rbee-hive/rbee-hive/restart"
)

// errHalted means a stop or detach was asked for: the supervisor stands down.
var errHalted = errors.New("supervision halted")

// supervisor owns one worker: its process over restarts, readiness, health
// probes and restart decisions. Its goroutine (run) is the only one that
// starts processes for the worker after the first; while a process is live
// there is none (see watchLive), and whichever ends the live watch goes on
// as it. Stop and Detach halt it.
type supervisor struct {
	m        *Monitor
	id       string
	policy   restart.Policy
	backend  string
	device   int
	modelRef string
	logPath  string
	corrID   string

	registered chan struct{}   // closed once the record exists
	readyCh    chan *process   // a process that became ready (buffer 1)
	stopCh     chan struct{}   // closed by Stop or Detach
	stopCtx    context.Context // cancelled with stopCh closed (for context.AfterFunc)
	stopCancel context.CancelFunc
	haltOnce   sync.Once
	done       chan struct{} // closed when run returns
	stopDone   chan struct{} // closed when Stop finished

	// launchMu serialises starting a process with a stop request, so no
	// process is started after Stop looked for the current one; and a ready
	// callback with the record update that follows a start.
	launchMu sync.Mutex

	mu        sync.Mutex
	port      int    // may move at a restart when someone else took it
	url       string // http://127.0.0.1:<port>, or what a re-adopted record said
	token     string // "" for a re-adopted worker until its next start
	tokenHash string
	modelPath string
	resv      *resources.Reservation
	// reserveBytes is what the worker reserves (resv's size when it holds
	// one), recorded so the next hive reserves exactly that again.
	reserveBytes uint64
	proc         *process
	tracker      *restart.Tracker
	stopping     bool
	detached     bool
	failures     int
	lastProbe    time.Time
	outcome      Outcome
}

func (m *Monitor) newSupervisor(id string, policy restart.Policy) *supervisor {
	stopCtx, stopCancel := context.WithCancel(context.Background())
	return &supervisor{
		stopCtx: stopCtx, stopCancel: stopCancel,
		m: m, id: id, policy: policy,
		registered: make(chan struct{}),
		readyCh:    make(chan *process, 1),
		stopCh:     make(chan struct{}),
		done:       make(chan struct{}),
		stopDone:   make(chan struct{}),
		tracker:    restart.NewTracker(m.cfg.Restart, policy, nil),
		logPath:    m.logPathFor(id),
	}
}

func (s *supervisor) halt() {
	s.haltOnce.Do(func() {
		close(s.stopCh)
		s.stopCancel()
	})
}

func (s *supervisor) halted() bool {
	select {
	case <-s.stopCh:
		return true
	default:
		return false
	}
}

func (s *supervisor) current() *process {
	s.launchMu.Lock()
	defer s.launchMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

func (s *supervisor) addr() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.port, s.url
}

func (s *supervisor) tokenHashHex() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenHash
}

// detach halts supervision and lets go of the process without signalling it.
func (s *supervisor) detach() {
	s.launchMu.Lock()
	s.mu.Lock()
	s.detached = true
	p := s.proc
	s.mu.Unlock()
	s.launchMu.Unlock()
	s.halt()
	if p != nil && !p.hasExited() {
		p.release()
	}
}

// releaseHolds returns the reservation and the port.
func (s *supervisor) releaseHolds() {
	s.mu.Lock()
	resv, port := s.resv, s.port
	s.resv = nil
	s.mu.Unlock()
	if resv != nil {
		resv.Release()
	}
	s.m.releasePort(port, s.id)
}

// run supervises the worker until it is stopped, detached or given up on.
// It starts from one of: a process Spawn started (p), a provision to wait
// for (pending), a re-adopted process (p, adopted), or an exit to apply the
// policy to (initial, for a worker a previous hive left that could not be
// re-adopted). The caller added one to the monitor's WaitGroup for it.
func (s *supervisor) run(p *process, adopted bool, pending *provisioner.Provision, initial *restart.Exit, why string) {
	if pending != nil {
		if err := s.awaitProvision(pending); err != nil {
			if !errors.Is(err, errHalted) {
				s.giveUp(nil, err.Error())
			}
			s.finish()
			return
		}
	}
	if initial != nil {
		if !s.afterExit(nil, *initial, why) {
			s.finish()
			return
		}
	}
	s.loop(p, adopted)
}

// loop starts processes and waits for them to be ready until supervision
// ends (finish) or a process is live: its goroutine then returns and the
// live watch (watchLive) goes on from the process's end on another.
func (s *supervisor) loop(p *process, adopted bool) {
	for {
		if p == nil {
			var err error
			p, err = s.launch()
			if errors.Is(err, errHalted) {
				s.finish()
				return
			}
			if err != nil {
				s.m.log.Warn("worker start failed", "worker_id", s.id, "err", err)
				if !s.afterExit(nil, restart.Exit{Kind: restart.ExitStartFailed}, err.Error()) {
					s.finish()
					return
				}
				continue
			}
		}
		why := ""
		ready := adopted
		adopted = false
		if !ready {
			ready, why = s.awaitReady(p)
		}
		if ready {
			s.watchLive(p)
			return
		}
		if !s.afterLife(p, why) {
			s.finish()
			return
		}
		p = nil
	}
}

// afterLife waits for p's end and applies the restart policy to it; false
// when supervision ends.
func (s *supervisor) afterLife(p *process, why string) bool {
	if s.halted() {
		return false
	}
	<-p.exited
	return s.afterExit(p, p.classify(), why)
}

// liveEnded goes on from a live process's end (exit, halt, or killed for
// failed probes): what run did after it, then the loop again.
func (s *supervisor) liveEnded(p *process, why string) {
	if !s.afterLife(p, why) {
		s.finish()
		return
	}
	s.loop(nil, false)
}

// finish ends supervision; the monitor's WaitGroup counted it until here.
func (s *supervisor) finish() {
	close(s.done)
	s.m.wg.Done()
}

func (p *process) classify() restart.Exit {
	if p.startFailed.Load() {
		return restart.Exit{Kind: restart.ExitStartFailed, Code: p.code, Signal: p.signal}
	}
	if !p.known {
		// A re-adopted worker's exit status went to its real parent.
		return restart.Exit{Kind: restart.ExitError, Code: -1}
	}
	return restart.Classify(p.code, p.signal, false, p.unhealthy.Load())
}

func exitRecord(p *process, e restart.Exit, at time.Time) *registry.Exit {
	rec := &registry.Exit{Signal: e.Signal, Reason: string(e.Kind), At: at}
	if p != nil && p.known && p.signal == "" {
		c := p.code
		rec.Code = &c
	}
	return rec
}

// awaitProvision waits for the model of a spawn that had to download it,
// then starts the worker's first process.
func (s *supervisor) awaitProvision(pr *provisioner.Provision) error {
	select {
	case <-pr.Done():
	case <-s.stopCh:
		return errHalted
	}
	model, err := pr.Result()
	if err != nil {
		return err // names the model already
	}
	s.mu.Lock()
	s.modelPath = model.LocalPath
	s.mu.Unlock()
	return nil
}

// launch starts a new process for the worker and records it (state loading).
func (s *supervisor) launch() (*process, error) {
	s.launchMu.Lock()
	defer s.launchMu.Unlock()
	s.mu.Lock()
	if s.stopping || s.detached {
		s.mu.Unlock()
		return nil, errHalted
	}
	if s.token == "" {
		tok, err := newToken()
		if err != nil {
			s.mu.Unlock()
			return nil, err
		}
		s.token, s.tokenHash = tok, hashToken(tok)
	}
	oldPort := s.port
	s.mu.Unlock()
	select { // a ready report of an earlier process is stale
	case <-s.readyCh:
	default:
	}
	// The port was free when it was first taken; someone may have bound it
	// since (while the worker waited out its backoff): then take another.
	port, err := s.m.keepOrReallocPort(s.id, oldPort)
	if err != nil {
		return nil, err
	}
	if port != oldPort {
		s.mu.Lock()
		s.port, s.url = port, "http://127.0.0.1:"+strconv.Itoa(port)
		s.mu.Unlock()
		s.m.log.Info("worker port taken, moving", "worker_id", s.id, "old_port", oldPort, "port", port)
	}
	p, err := s.m.startWorkerProcess(s, false)
	if err != nil {
		return nil, err
	}
	if h := s.m.testHookAfterExec; h != nil && h(s.id, p.pid) {
		p.release()
		return nil, errHalted
	}
	s.mu.Lock()
	s.proc = p
	s.failures = 0
	s.mu.Unlock()
	proc := s.processRecord(p)
	port, url := s.addr()
	_, err = s.m.reg.Update(s.id, func(w *registry.Worker) error {
		w.State = registry.StateLoading
		w.PID = p.pid
		w.Port, w.URL = port, url
		w.ModelPath = s.modelPath
		w.Process = proc
		w.ReadyAt = nil
		return nil
	})
	if err != nil {
		// Stopped meanwhile (state stopping refuses loading): Stop kills it.
		s.m.log.Debug("record restarted worker", "worker_id", s.id, "err", err)
	}
	return p, nil
}

func (s *supervisor) processRecord(p *process) registry.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return registry.Process{PGID: p.pid, StartTime: p.startTime, TokenHash: s.tokenHash, LogPath: s.logPath,
		ReservedBytes: s.reserveBytes}
}

// awaitReady waits for the ready callback, or polls the health path, until
// the process is ready, exits, the ready timeout passes (the process is then
// killed: a failed start) or supervision halts.
func (s *supervisor) awaitReady(p *process) (ready bool, why string) {
	m := s.m
	timeout := time.NewTimer(m.cfg.ReadyTimeout)
	defer timeout.Stop()
	var pollC <-chan time.Time
	var poll *time.Timer
	every := 10 * time.Millisecond
	if m.cfg.Readiness == ReadinessPoll {
		poll = time.NewTimer(0)
		defer poll.Stop()
		pollC = poll.C
	}
	for {
		select {
		case rp := <-s.readyCh:
			if rp == p {
				return true, ""
			}
		case <-p.exited:
			return false, "exited before ready"
		case <-s.stopCh:
			return false, ""
		case <-timeout.C:
			p.startFailed.Store(true)
			p.signalGroup(syscall.SIGKILL)
			return false, fmt.Sprintf("not ready within %s", m.cfg.ReadyTimeout)
		case <-pollC:
			if code, _, err := s.get(p, m.cfg.HealthPath); err == nil && code == http.StatusOK {
				if _, err := s.markReady(p, "", nil); err == nil {
					return true, ""
				}
			}
			// Fast at first so a fast worker is seen within milliseconds,
			// then no more often than every 250ms.
			every = min(every*3/2, 250*time.Millisecond)
			poll.Reset(every)
		}
	}
}

// markReady records that p is ready: loading → idle.
func (s *supervisor) markReady(p *process, url string, vram *int64) (registry.Worker, error) {
	now := time.Now().UTC()
	w, err := s.m.reg.Update(s.id, func(w *registry.Worker) error {
		if w.State != registry.StateLoading || w.PID != p.pid {
			return &registry.TransitionError{WorkerID: w.ID, From: w.State, To: registry.StateIdle}
		}
		w.State = registry.StateIdle
		if url != "" {
			w.URL = url
		}
		if vram != nil {
			w.VRAMBytes = *vram
		}
		w.ReadyAt = &now
		return nil
	})
	if err != nil {
		return registry.Worker{}, fmt.Errorf("ready %s: %w", s.id, err)
	}
	s.mu.Lock()
	s.tracker.Ready(now)
	s.failures = 0
	s.mu.Unlock()
	if p.child {
		s.m.obs.WorkerReady(time.Since(p.startedAt)) // spawn → ready; unknown for re-adopted ones
	}
	select {
	case s.readyCh <- p:
	default:
	}
	return w, nil
}

// watchLive probes p's health until the process exits or supervision halts,
// with no goroutine of its own in between: a timer runs each probe, and
// the process's context (cancelled at its exit) and the supervisor's stop
// context end the watch. A thousand parked goroutines cost their stacks
// (4 KiB at the least each) twice over in the RSS, the GC goal counting
// them. After FailureThreshold failures in a row the worker is unhealthy
// and is killed (SIGTERM, then SIGKILL after TermTimeout); the restart
// policy then decides. Whichever ends the watch goes on as liveEnded.
func (s *supervisor) watchLive(p *process) {
	m := s.m
	l := &liveWatch{s: s, p: p, slot: probeSlot(m.cfg.HealthInterval)}
	// Probes fall on a grid of probeSlots slots per interval: the first at
	// a random slot, so workers started together are spread over the
	// interval, then one interval later each time, kept on the grid. Workers
	// in the same slot are probed on the same wake-up: a hive probing 100
	// workers every second wakes 4 times a second instead of 100, and each
	// wake-up of an idle process costs more than the probe it does.
	first := time.Now().Truncate(l.slot).Add(l.slot * time.Duration(1+rand.Int64N(max(int64(m.cfg.HealthInterval/l.slot), 1))))
	l.mu.Lock() // the callbacks may fire at once: they find the fields set
	defer l.mu.Unlock()
	l.timer = time.AfterFunc(time.Until(first), l.tick)
	l.stopExit = context.AfterFunc(p.ctx, l.end)
	l.stopHalt = context.AfterFunc(s.stopCtx, l.end)
}

// liveWatch is one live process's health watch (see watchLive).
type liveWatch struct {
	s    *supervisor
	p    *process
	slot time.Duration

	mu       sync.Mutex
	ended    bool
	timer    *time.Timer
	stopExit func() bool
	stopHalt func() bool
	probing  sync.WaitGroup // a probe in flight
}

// claim ends the watch; only the first caller gets true.
func (l *liveWatch) claim() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return false
	}
	l.ended = true
	l.timer.Stop()
	l.stopExit()
	l.stopHalt()
	return true
}

// end is the process's exit or the supervisor's halt (on a goroutine of
// the context package's). A probe in flight finishes first, as it did when
// probes ran on the supervisor's goroutine.
func (l *liveWatch) end() {
	if l.claim() {
		l.probing.Wait()
		l.s.liveEnded(l.p, "")
	}
}

// tick runs one probe (on the timer's goroutine) and sets the next.
func (l *liveWatch) tick() {
	s := l.s
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	l.probing.Add(1)
	l.mu.Unlock()
	n := s.probe(l.p)
	if n < s.m.cfg.FailureThreshold {
		l.mu.Lock()
		if !l.ended {
			l.timer.Reset(untilNextProbe(s.m.cfg.HealthInterval, l.slot, time.Now()))
		}
		l.mu.Unlock()
		l.probing.Done()
		return
	}
	claimed := l.claim()
	l.probing.Done()
	if !claimed {
		return // exited or halted meanwhile: that goes on
	}
	why := fmt.Sprintf("%d health probes failed in a row", n)
	s.killUnhealthy(l.p, why)
	s.liveEnded(l.p, why)
}

// probeSlots is how many probe slots one health interval holds.
const probeSlots = 4

// probeSlot is the grid probes are aligned to.
func probeSlot(interval time.Duration) time.Duration {
	return max(interval/probeSlots, time.Millisecond)
}

// untilNextProbe returns the wait from now to the next probe: one interval
// after now, moved to a slot boundary (never less than half an interval, so
// a slow probe does not make the next one come at once).
func untilNextProbe(interval, slot time.Duration, now time.Time) time.Duration {
	at := now.Add(interval).Truncate(slot)
	if d := at.Sub(now); d > interval/2 {
		return d
	}
	return at.Add(slot).Sub(now)
}

// probe runs one health probe and returns the consecutive failures after it.
func (s *supervisor) probe(p *process) int {
	code, body, err := s.get(p, s.m.cfg.HealthPath)
	if p.hasExited() || s.halted() {
		return 0
	}
	now := time.Now().UTC()
	if err != nil || code != http.StatusOK {
		s.m.obs.HealthCheckFailed()
		s.mu.Lock()
		s.failures++
		s.lastProbe = now
		n := s.failures
		s.mu.Unlock()
		s.m.log.Debug("health probe failed", "worker_id", s.id, "status", code, "err", err, "failures", n)
		return n
	}
	s.mu.Lock()
	s.failures = 0
	s.lastProbe = now
	s.mu.Unlock()
	s.applyProbeBody(body)
	return 0
}

// applyProbeBody applies {"state":"idle"|"busy","vram_bytes":N}; it writes
// the registry only when something changed.
func (s *supervisor) applyProbeBody(body []byte) {
	var b struct {
		State     registry.State `json:"state"`
		VRAMBytes *int64         `json:"vram_bytes"`
	}
	if len(body) == 0 || json.Unmarshal(body, &b) != nil {
		return
	}
	if b.State != registry.StateIdle && b.State != registry.StateBusy {
		b.State = ""
	}
	if b.VRAMBytes != nil && *b.VRAMBytes < 0 {
		b.VRAMBytes = nil // advisory and nonsense: keep what the record has
	}
	w, err := s.m.reg.Get(s.id)
	if err != nil {
		return
	}
	live := w.State == registry.StateIdle || w.State == registry.StateBusy
	stateChange := b.State != "" && live && w.State != b.State
	vramChange := b.VRAMBytes != nil && *b.VRAMBytes != w.VRAMBytes
	if !stateChange && !vramChange {
		return
	}
	_, _ = s.m.reg.Update(s.id, func(w *registry.Worker) error {
		if b.State != "" && (w.State == registry.StateIdle || w.State == registry.StateBusy) {
			w.State = b.State
		}
		if b.VRAMBytes != nil {
			w.VRAMBytes = *b.VRAMBytes
		}
		return nil
	})
}

// get GETs path on the worker with the health timeout; the request ends
// early when the process exits.
func (s *supervisor) get(p *process, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(p.ctx, s.m.cfg.HealthTimeout)
	defer cancel()
	_, url := s.addr()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := s.m.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // keep the connection reusable
	return resp.StatusCode, body, err
}

// killUnhealthy marks the worker unhealthy and kills its process group.
func (s *supervisor) killUnhealthy(p *process, why string) {
	p.unhealthy.Store(true)
	_, _ = s.m.reg.Update(s.id, func(w *registry.Worker) error {
		w.State = registry.StateUnhealthy
		w.LastError = why
		return nil
	})
	s.m.log.Warn("worker unhealthy, killing it", "worker_id", s.id, "pid", p.pid, "reason", why)
	p.signalGroup(syscall.SIGTERM)
	t := time.NewTimer(s.m.cfg.TermTimeout)
	defer t.Stop()
	select {
	case <-p.exited:
		return
	case <-s.stopCh:
		return
	case <-t.C:
	}
	p.signalGroup(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-s.stopCh:
	}
}

// afterExit records an exit (p is nil when no process ran) and applies the
// restart policy. It returns true when the worker should start again (after
// the backoff, which a stop cancels), false when supervision ends.
func (s *supervisor) afterExit(p *process, e restart.Exit, why string) bool {
	now := time.Now().UTC()
	s.mu.Lock()
	if s.stopping || s.detached {
		s.mu.Unlock()
		return false
	}
	d := s.tracker.Exited(e, now)
	s.proc = nil
	s.mu.Unlock()
	rec := exitRecord(p, e, now)
	detail := describeExit(e, why)
	if !d.Restart {
		s.giveUp(rec, detail+"; not restarting: "+d.Reason)
		return false
	}
	_, err := s.m.reg.Update(s.id, func(w *registry.Worker) error {
		w.State = registry.StateRestarting
		w.LastExit = rec
		w.LastError = detail
		w.RestartCount++
		w.PID = 0
		return nil
	})
	if err != nil {
		return false // stopping
	}
	s.m.obs.WorkerRestarted(string(e.Kind))
	s.m.log.Info("restarting worker", "worker_id", s.id, "exit", e.Kind, "code", e.Code,
		"signal", e.Signal, "delay", d.Delay, "attempt", d.Attempt)
	t := time.NewTimer(d.Delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stopCh:
		return false
	}
}

func describeExit(e restart.Exit, why string) string {
	var b strings.Builder
	b.WriteString("worker ")
	switch {
	case e.Kind == restart.ExitStartFailed && e.Signal == "" && e.Code == 0:
		b.WriteString("failed to start")
	case e.Signal != "":
		b.WriteString("killed by " + e.Signal)
	case e.Code < 0:
		b.WriteString("exited (status unknown)")
	default:
		b.WriteString("exited with code " + strconv.Itoa(e.Code))
	}
	if why != "" {
		b.WriteString(" (" + why + ")")
	}
	return b.String()
}

// giveUp marks the worker failed and releases its memory and port; the
// record stays until it is shut down.
func (s *supervisor) giveUp(rec *registry.Exit, reason string) {
	// Released first, so whoever sees the failed record sees them free.
	s.releaseHolds()
	_, err := s.m.reg.Update(s.id, func(w *registry.Worker) error {
		w.State = registry.StateFailed
		if rec != nil {
			w.LastExit = rec
		}
		w.LastError = reason
		w.PID = 0
		return nil
	})
	if err != nil {
		return // stopping: Stop releases
	}
	s.m.log.Warn("worker failed", "worker_id", s.id, "reason", reason)
}
