package monitor

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
	"github.com/rbee-hive/rbee-hive/restart"
)

// models is what the monitor needs from the provisioner; the daemon passes a
// *provisioner.Provisioner.
type models interface {
	Resolve(ref string) (provisioner.Ref, error)
	Cached(ref string) (provisioner.Model, bool)
	Start(ref string) (*provisioner.Provision, error)
	Catalog() []provisioner.CatalogEntry
	Touch(ref string)
}

// Monitor supervises workers. Safe for concurrent use.
//
// Every worker has a supervisor: one goroutine that starts its process,
// waits for readiness, probes health and applies the restart policy. One
// exit watcher for all processes waits on their pidfds, so an exit is seen
// the moment it happens, for children and re-adopted workers alike (and
// Detach can let go of a process without waiting for it).
type Monitor struct {
	cfg  Config
	reg  *registry.Registry
	res  *resources.Manager
	prov models
	log  *slog.Logger
	obs  Observer
	hc   *http.Client // probes and shutdown requests: one pool of keep-alive connections

	ctx    context.Context // the monitor's lifetime; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the monitor owns
	forkq  chan func()    // run on the forker thread (see forker)
	exits  *exitWatcher   // sees every process's exit
	touchq chan struct{}  // wakes the toucher (buffer 1)

	logDir    string
	ownLogDir bool

	mu       sync.Mutex
	sups     map[string]*supervisor
	ports    map[int]string
	nextPort int
	toTouch  map[string]struct{} // models started on since the toucher last ran
	closed   bool
	detached bool
	started  bool

	procScans atomic.Int32 // passes over /proc at re-adoption (tests)
	// testHookAfterExec, when set, runs after a worker's process is started
	// and before its pid is recorded; returning true simulates the hive
	// dying there: the process is let go and nothing more happens.
	testHookAfterExec func(id string, pid int) bool
}

// Defaults applied by New to zero Config fields.
const (
	defaultHealthPath   = "/health"
	defaultPortMin      = 8081
	defaultPortMax      = 9000
	defaultReadyTimeout = 5 * time.Minute
	defaultGrace        = 10 * time.Second
	defaultTermTimeout  = 5 * time.Second
	defaultLogMaxBytes  = 10 << 20
	defaultInterval     = 10 * time.Second
	defaultTimeout      = 5 * time.Second
	defaultThreshold    = 3
	logCheckInterval    = time.Second
)

// New creates a monitor over the registry, the device ledger and the
// provisioner. It starts nothing until Start. Zero Config fields take the
// defaults of DESIGN.md.
func New(cfg Config, reg *registry.Registry, res *resources.Manager, prov *provisioner.Provisioner) (*Monitor, error) {
	if prov == nil {
		return nil, errors.New("monitor: nil provisioner")
	}
	return newMonitor(cfg, reg, res, prov)
}

func newMonitor(cfg Config, reg *registry.Registry, res *resources.Manager, prov models) (*Monitor, error) {
	if reg == nil || res == nil {
		return nil, errors.New("monitor: nil registry or resources")
	}
	if err := applyDefaults(&cfg); err != nil {
		return nil, err
	}
	m := &Monitor{
		cfg:      cfg,
		reg:      reg,
		res:      res,
		prov:     prov,
		log:      cfg.Logger,
		obs:      cfg.Observer,
		sups:     make(map[string]*supervisor),
		ports:    make(map[int]string),
		nextPort: cfg.PortMin,
		forkq:    make(chan func()),
		touchq:   make(chan struct{}, 1),
	}
	if m.obs == nil {
		m.obs = nopObserver{}
	}
	m.hc = &http.Client{Transport: &http.Transport{
		Proxy:               nil, // workers are local: never through a proxy
		MaxIdleConns:        0,   // no global cap: one idle connection per worker
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     max(90*time.Second, 3*cfg.HealthInterval),
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}}
	m.logDir = cfg.LogDir
	if m.logDir == "" {
		d, err := os.MkdirTemp("", "rbee-hive-worker-logs-")
		if err != nil {
			return nil, fmt.Errorf("monitor: log dir: %w", err)
		}
		m.logDir, m.ownLogDir = d, true
	} else if err := os.MkdirAll(m.logDir, 0o750); err != nil {
		return nil, fmt.Errorf("monitor: log dir: %w", err)
	}
	if cfg.Readiness == ReadinessCallback && cfg.HiveURL == "" {
		m.log.Warn("worker readiness is callback but no hive URL is set: workers cannot report ready")
	}
	exits, err := newExitWatcher()
	if err != nil {
		if m.ownLogDir {
			_ = os.RemoveAll(m.logDir)
		}
		return nil, fmt.Errorf("monitor: %w", err)
	}
	m.exits = exits
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.wg.Add(3)
	go m.forker()
	go m.toucher()
	go func() {
		defer m.wg.Done()
		m.exits.run()
	}()
	return m, nil
}

func applyDefaults(cfg *Config) error {
	if len(cfg.Command) == 0 {
		cfg.Command = []string{"llm-worker-rbee", "--worker-id", "{worker_id}", "--model", "{model_path}",
			"--model-ref", "{model_ref}", "--backend", "{backend}", "--device", "{device}",
			"--port", "{port}", "--callback-url", "{callback_url}"}
	}
	switch cfg.Readiness {
	case "":
		cfg.Readiness = ReadinessCallback
	case ReadinessCallback, ReadinessPoll:
	default:
		return fmt.Errorf("monitor: worker.readiness %q: want callback or poll", cfg.Readiness)
	}
	if cfg.HealthPath == "" {
		cfg.HealthPath = defaultHealthPath
	}
	if cfg.PortMin == 0 && cfg.PortMax == 0 {
		cfg.PortMin, cfg.PortMax = defaultPortMin, defaultPortMax
	}
	if cfg.PortMin < 1 || cfg.PortMax > 65535 || cfg.PortMin > cfg.PortMax {
		return fmt.Errorf("monitor: worker.port_range [%d, %d] is invalid", cfg.PortMin, cfg.PortMax)
	}
	setDur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	setDur(&cfg.ReadyTimeout, defaultReadyTimeout)
	setDur(&cfg.Grace, defaultGrace)
	setDur(&cfg.TermTimeout, defaultTermTimeout)
	setDur(&cfg.HealthInterval, defaultInterval)
	setDur(&cfg.HealthTimeout, defaultTimeout)
	if cfg.LogMaxBytes <= 0 {
		cfg.LogMaxBytes = defaultLogMaxBytes
	}
	if cfg.FailureThreshold <= 0 {
		cfg.FailureThreshold = defaultThreshold
	}
	if cfg.DefaultPolicy == "" {
		cfg.DefaultPolicy = restart.OnFailure
	}
	if _, err := restart.ParsePolicy(string(cfg.DefaultPolicy)); err != nil {
		return fmt.Errorf("monitor: restart.policy: %w", err)
	}
	if cfg.Restart == (restart.Config{}) {
		cfg.Restart = restart.DefaultConfig()
	}
	if err := cfg.Restart.Validate(); err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return nil
}

type nopObserver struct{}

func (nopObserver) WorkerRestarted(string)      {}
func (nopObserver) HealthCheckFailed()          {}
func (nopObserver) WorkerReady(d time.Duration) {}

// forker runs process starts on one OS thread, locked for the monitor's
// lifetime. A parent-death signal (Pdeathsig) fires when the thread that
// forked the child exits, not when the process does (Go issue 27505); an
// ordinary Go thread can be retired under a goroutine that exits while
// locked to it, so starts happen here. At Close the thread is unlocked, not
// retired, so workers that outlive Close still die with the hive.
func (m *Monitor) forker() {
	defer m.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		select {
		case f := <-m.forkq:
			f()
		case <-m.ctx.Done():
			return
		}
	}
}

// onForker runs f on the forker thread, or reports ErrClosed.
func (m *Monitor) onForker(f func()) error {
	done := make(chan struct{})
	select {
	case m.forkq <- func() { defer close(done); f() }:
		<-done
		return nil
	case <-m.ctx.Done():
		return ErrClosed
	}
}

// touchLater has the model's last use recorded (provisioner Touch) soon,
// off the spawn's path: Touch rewrites and fsyncs the cache's metadata,
// which took as long as a fast worker's start and held its ready callback
// up. Spawns of one model in a burst share one write.
func (m *Monitor) touchLater(modelRef string) {
	m.mu.Lock()
	if m.toTouch == nil {
		m.toTouch = make(map[string]struct{})
	}
	m.toTouch[modelRef] = struct{}{}
	m.mu.Unlock()
	select {
	case m.touchq <- struct{}{}:
	default: // a wake-up is pending: it takes this model too
	}
}

// toucher records the last use of the models touchLater named; at Close it
// writes what is still pending, then ends.
func (m *Monitor) toucher() {
	defer m.wg.Done()
	for {
		select {
		case <-m.touchq:
			m.touchPending()
		case <-m.ctx.Done():
			m.touchPending()
			return
		}
	}
}

func (m *Monitor) touchPending() {
	m.mu.Lock()
	refs := m.toTouch
	m.toTouch = nil
	m.mu.Unlock()
	for ref := range refs {
		m.prov.Touch(ref)
	}
}

// Start re-adopts persisted workers (or cleans them up) and starts the log
// size check. It returns when re-adoption is done.
func (m *Monitor) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	if m.started {
		m.mu.Unlock()
		return nil
	}
	m.started = true
	m.mu.Unlock()
	m.wg.Add(1)
	go m.logChecker()
	return m.readopt(ctx)
}

func (m *Monitor) logChecker() {
	defer m.wg.Done()
	t := time.NewTicker(logCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			for _, s := range m.supervisors() {
				capLog(s.logPath, m.cfg.LogMaxBytes, m.log)
			}
		case <-m.ctx.Done():
			return
		}
	}
}

func (m *Monitor) supervisors() []*supervisor {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Collect(maps.Values(m.sups))
}

func (m *Monitor) sup(id string) *supervisor {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sups[id]
}

// Close stops the health loop and waits for every goroutine the monitor
// owns. It does not stop workers: call StopAll or Detach first; without
// either, live workers are let go as by Detach.
func (m *Monitor) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.Detach()
	m.cancel()
	m.exits.close()
	m.wg.Wait()
	m.hc.CloseIdleConnections()
	if m.ownLogDir && m.reg.Len() == 0 {
		_ = os.RemoveAll(m.logDir)
	}
	return nil
}

// Detach stops supervising without stopping workers, for the next hive to
// re-adopt (shutdown.leave_workers). Records stay in the registry as they
// are; supervision goroutines end; processes keep running.
func (m *Monitor) Detach() {
	m.mu.Lock()
	m.detached = true
	sups := slices.Collect(maps.Values(m.sups))
	m.mu.Unlock()
	for _, s := range sups {
		s.detach()
	}
	for _, s := range sups {
		<-s.done
	}
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// AuthenticateWorker reports, in constant time, whether token is the one the
// worker was given. The monitor keeps only the token's sha256, so the
// comparison is of two digests of fixed length.
func (m *Monitor) AuthenticateWorker(workerID, token string) bool {
	got := sha256.Sum256([]byte(token))
	want := make([]byte, sha256.Size)
	ok := false
	if s := m.sup(workerID); s != nil {
		if b, err := hex.DecodeString(s.tokenHashHex()); err == nil && len(b) == sha256.Size {
			want, ok = b, true
		}
	}
	return subtle.ConstantTimeCompare(got[:], want) == 1 && ok
}

// Ready handles a worker's ready callback: loading → idle. It sets the URL
// (when given), ReadyAt and VRAMBytes. An unknown worker matches
// registry.ErrNotFound; a worker not loading (or not yet started) gives a
// *registry.TransitionError.
func (m *Monitor) Ready(r ReadyReport) (registry.Worker, error) {
	s := m.sup(r.WorkerID)
	if s == nil {
		return registry.Worker{}, fmt.Errorf("ready %s: %w", r.WorkerID, registry.ErrNotFound)
	}
	<-s.registered
	p := s.current()
	if p == nil {
		w, err := m.reg.Get(r.WorkerID)
		if err != nil {
			return registry.Worker{}, fmt.Errorf("ready: %w", err)
		}
		return registry.Worker{}, &registry.TransitionError{WorkerID: r.WorkerID, From: w.State, To: registry.StateIdle}
	}
	return s.markReady(p, r.URL, r.VRAMBytes)
}

// Heartbeat handles a worker's heartbeat: it sets LastHeartbeat, applies
// the state (idle or busy) when the worker is idle or busy, and VRAMBytes.
func (m *Monitor) Heartbeat(h Heartbeat) (registry.Worker, error) {
	switch h.State {
	case "", registry.StateIdle, registry.StateBusy:
	default:
		return registry.Worker{}, &FieldError{Field: "state", Reason: fmt.Sprintf("%q is not idle or busy", h.State)}
	}
	if m.sup(h.WorkerID) == nil {
		return registry.Worker{}, fmt.Errorf("heartbeat %s: %w", h.WorkerID, registry.ErrNotFound)
	}
	now := time.Now().UTC()
	w, err := m.reg.Update(h.WorkerID, func(w *registry.Worker) error {
		w.LastHeartbeat = &now
		if h.State != "" && (w.State == registry.StateIdle || w.State == registry.StateBusy) {
			w.State = h.State
		}
		if h.VRAMBytes != nil {
			w.VRAMBytes = *h.VRAMBytes
		}
		return nil
	})
	if err != nil {
		return registry.Worker{}, fmt.Errorf("heartbeat: %w", err)
	}
	return w, nil
}

// WaitReady blocks until the worker is ready (idle/busy), failed or removed,
// or ctx ends. A failed worker is returned with an error matching
// ErrSpawnFailed; a removed one with registry.ErrNotFound.
func (m *Monitor) WaitReady(ctx context.Context, id string) (registry.Worker, error) {
	for {
		sub := m.reg.Watch(64)
		w, err := m.reg.Get(id)
		if err != nil {
			sub.Close()
			return registry.Worker{}, fmt.Errorf("wait ready: %w", err)
		}
		if done, w, err := readyOutcome(w); done {
			sub.Close()
			return w, err
		}
		for again := false; !again; {
			select {
			case ev, ok := <-sub.C():
				if !ok {
					if sub.Err() == nil {
						return registry.Worker{}, fmt.Errorf("wait ready %s: %w", id, registry.ErrClosed)
					}
					again = true // fell behind: look again
					continue
				}
				if ev.Worker.ID != id {
					continue
				}
				if ev.Kind == registry.EventRemoved {
					sub.Close()
					return ev.Worker, fmt.Errorf("wait ready %s: removed: %w", id, registry.ErrNotFound)
				}
				if done, w, err := readyOutcome(ev.Worker); done {
					sub.Close()
					return w, err
				}
			case <-ctx.Done():
				sub.Close()
				return registry.Worker{}, fmt.Errorf("wait ready %s: %w", id, ctx.Err())
			}
		}
		sub.Close()
	}
}

func readyOutcome(w registry.Worker) (bool, registry.Worker, error) {
	switch w.State {
	case registry.StateIdle, registry.StateBusy:
		return true, w, nil
	case registry.StateFailed:
		return true, w, fmt.Errorf("worker %s: %w: %s", w.ID, ErrSpawnFailed, w.LastError)
	}
	return false, w, nil
}

// Health returns probe state for one worker ("" for all, oldest first).
func (m *Monitor) Health(id string) ([]Health, error) {
	var ws []registry.Worker
	if id != "" {
		w, err := m.reg.Get(id)
		if err != nil {
			return nil, fmt.Errorf("health: %w", err)
		}
		ws = []registry.Worker{w}
	} else {
		ws = m.reg.List(registry.Filter{})
	}
	out := make([]Health, 0, len(ws))
	for _, w := range ws {
		h := Health{WorkerID: w.ID, State: w.State, LastHeartbeat: w.LastHeartbeat,
			RestartCount: w.RestartCount, LastExit: w.LastExit}
		if s := m.sup(w.ID); s != nil {
			s.mu.Lock()
			h.ConsecutiveFailures = s.failures
			if !s.lastProbe.IsZero() {
				t := s.lastProbe
				h.LastProbeAt = &t
			}
			s.mu.Unlock()
		}
		switch w.State {
		case registry.StateIdle, registry.StateBusy:
			h.Healthy = h.ConsecutiveFailures == 0
		}
		out = append(out, h)
	}
	return out, nil
}

// Logs returns the last n lines (n <= 0: all it keeps) of a worker's stdout
// and stderr, across the rotated file and the current one.
func (m *Monitor) Logs(id string, n int) ([]byte, error) {
	path := ""
	if s := m.sup(id); s != nil {
		path = s.logPath
	} else if w, err := m.reg.Get(id); err == nil {
		path = w.Process.LogPath
	} else {
		return nil, fmt.Errorf("logs: %w", err)
	}
	if path == "" {
		return nil, nil
	}
	capLog(path, m.cfg.LogMaxBytes, m.log)
	return tailLines(path, n)
}

// InUse reports whether any worker uses the model (canonical reference).
func (m *Monitor) InUse(modelRef string) bool {
	return len(m.reg.List(registry.Filter{ModelRef: modelRef})) > 0
}

// UsersOf returns the ids of workers that use the model.
func (m *Monitor) UsersOf(modelRef string) []string {
	ws := m.reg.List(registry.Filter{ModelRef: modelRef})
	ids := make([]string, len(ws))
	for i, w := range ws {
		ids[i] = w.ID
	}
	return ids
}

// StopAll stops every worker in parallel; ctx bounds the whole (when it
// ends, what is left is killed at once).
func (m *Monitor) StopAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, w := range m.reg.List(registry.Filter{}) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.Stop(ctx, w.ID, 0); err != nil && !errors.Is(err, registry.ErrNotFound) {
				m.log.Warn("stop worker", "worker_id", w.ID, "err", err)
			}
		}()
	}
	wg.Wait()
}
