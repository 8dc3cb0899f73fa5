package monitor

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
	"github.com/rbee-hive/rbee-hive/restart"
)

// Spawn validates, provisions, reserves, starts and registers a worker in
// state loading, and returns at once. Every failure releases what it took: a
// failed Spawn leaves no record, reservation, port or process.
//
// The steps: the backend must be cpu or cuda (*FieldError "backend"), the
// device >= 0 ("device"), the restart policy known ("restart_policy"), the
// model reference valid (provisioner.Resolve; "model_ref", wrapping the
// *provisioner.RefError); the backend available (a resources error). The
// memory required is the model's (catalog) vram_bytes, else its size × 1.2.
//
// A cached model: the memory is reserved (a *resources.InsufficientMemoryError
// when it does not fit), a port allocated, the process started, the record
// registered (loading), and a supervisor waits for ready.
//
// A model not cached: its provision starts (or is joined) and Spawn waits,
// bounded by ctx, until its size is known or it fails (its typed error:
// not found, access denied, upstream, storage). Then the memory is reserved,
// so a model too big is refused before gigabytes are downloaded, the record
// registered (loading, pid 0), and the supervisor starts the process once the
// download is done (failing the worker, with last_error, if it fails).
func (m *Monitor) Spawn(ctx context.Context, req SpawnRequest) (registry.Worker, error) {
	if m.isClosed() {
		return registry.Worker{}, ErrClosed
	}
	switch req.Backend {
	case resources.CPU, resources.CUDA:
	default:
		return registry.Worker{}, &FieldError{Field: "backend", Reason: fmt.Sprintf("%q is not cpu or cuda", req.Backend)}
	}
	dev := -1
	if req.Device != nil {
		if *req.Device < 0 {
			return registry.Worker{}, &FieldError{Field: "device", Reason: "must be >= 0"}
		}
		dev = *req.Device
	}
	policy := m.cfg.DefaultPolicy
	if req.RestartPolicy != "" {
		p, err := restart.ParsePolicy(req.RestartPolicy)
		if err != nil {
			return registry.Worker{}, &FieldError{Field: "restart_policy", Reason: err.Error(), Err: err}
		}
		policy = p
	}
	ref, err := m.prov.Resolve(req.ModelRef)
	if err != nil {
		return registry.Worker{}, &FieldError{Field: "model_ref", Reason: err.Error(), Err: err}
	}
	canonical := ref.String()
	if err := m.res.Backend(req.Backend); err != nil {
		return registry.Worker{}, fmt.Errorf("spawn: %w", err)
	}

	// A catalog name brings its own vram_bytes: two names may share one
	// model_ref with different needs (a longer context, say), while the
	// model's record knows only one of them.
	var namedVRAM int64
	for _, e := range m.prov.Catalog() {
		if e.Name == req.ModelRef {
			namedVRAM = e.VRAMBytes
			break
		}
	}

	id := "worker-" + uuid.NewString()
	var pending *provisioner.Provision
	model, cached := m.prov.Cached(canonical)
	var required uint64
	if cached {
		required = m.requiredBytes(canonical, cmp.Or(namedVRAM, model.VRAMBytes), model.SizeBytes)
	} else {
		pr, err := m.prov.Start(canonical)
		if err != nil {
			return registry.Worker{}, fmt.Errorf("spawn: %w", err)
		}
		st, err := awaitSize(ctx, pr)
		if err != nil {
			return registry.Worker{}, fmt.Errorf("spawn: %w", err)
		}
		required = m.requiredBytes(canonical, namedVRAM, st.BytesTotal)
		if st.State == provisioner.StateReady {
			if model, err = pr.Result(); err != nil {
				return registry.Worker{}, fmt.Errorf("spawn: %w", err)
			}
			required = m.requiredBytes(canonical, cmp.Or(namedVRAM, model.VRAMBytes), model.SizeBytes)
		} else {
			pending = pr
		}
	}

	resv, err := m.res.Reserve(req.Backend, dev, required, id)
	if err != nil {
		return registry.Worker{}, fmt.Errorf("spawn: %w", err)
	}
	port, err := m.allocPort(id)
	if err != nil {
		resv.Release()
		return registry.Worker{}, fmt.Errorf("spawn: %w", err)
	}
	token, err := newToken()
	if err != nil {
		resv.Release()
		m.releasePort(port, id)
		return registry.Worker{}, fmt.Errorf("spawn: %w", err)
	}
	s := m.newSupervisor(id, policy)
	s.backend, s.device, s.modelRef = req.Backend, resv.Device(), canonical
	s.port, s.url = port, "http://127.0.0.1:"+strconv.Itoa(port)
	s.corrID = req.CorrelationID
	s.token, s.tokenHash, s.resv, s.reserveBytes = token, hashToken(token), resv, resv.Bytes()
	if pending == nil {
		s.modelPath = model.LocalPath
	}
	undo := func() {
		m.forget(s)
		s.releaseHolds()
		close(s.registered)
		close(s.done)
	}
	if !m.track(s) {
		s.releaseHolds()
		return registry.Worker{}, ErrClosed
	}

	var p *process
	unlock := func() {}
	w := registry.Worker{
		ID: id, ModelRef: canonical, ModelPath: s.modelPath, Backend: req.Backend,
		Device: s.device, State: registry.StateLoading, URL: s.url, Port: port,
		RestartPolicy: string(policy),
		Process:       registry.Process{TokenHash: s.tokenHash, LogPath: s.logPath, ReservedBytes: s.reserveBytes},
	}
	marked := false // a spawn marker names the process until the record does (orphans.go)
	if pending == nil {
		s.launchMu.Lock()
		marked = m.cfg.Persistent
		p, err = m.startWorkerProcess(s, marked)
		if err != nil {
			s.launchMu.Unlock()
			undo()
			if marked {
				m.removeMarker(id)
			}
			return registry.Worker{}, fmt.Errorf("spawn: %w", err)
		}
		if h := m.testHookAfterExec; h != nil && h(id, p.pid) {
			p.release()
			s.launchMu.Unlock()
			undo()
			return registry.Worker{}, errSimulatedCrash
		}
		s.proc = p
		w.PID = p.pid
		w.Process = s.processRecord(p)
		unlock = s.launchMu.Unlock
	}
	w, err = m.reg.Register(w)
	if err != nil {
		if p != nil {
			p.signalGroup(syscall.SIGKILL)
			<-p.exited
		}
		undo()
		unlock()
		if marked {
			m.removeMarker(id)
		}
		return registry.Worker{}, fmt.Errorf("spawn: %w", err)
	}
	close(s.registered)
	// The record exists: a ready callback (waiting in current) may go on.
	unlock()
	if marked {
		m.removeMarker(id) // the record names the process now
	}
	m.touchLater(canonical)
	m.wg.Add(1)
	go s.run(p, false, pending, nil, "")
	m.log.Info("worker spawned", "worker_id", id, "pid", w.PID, "model_ref", canonical,
		"backend", req.Backend, "device", s.device, "port", port, "correlation_id", req.CorrelationID)
	return w, nil
}

// errSimulatedCrash is what a spawn returns when testHookAfterExec stopped it.
var errSimulatedCrash = errors.New("simulated hive crash after exec")

// awaitSize waits until the provision knows the model's size, is ready, or
// failed (its typed error).
func awaitSize(ctx context.Context, pr *provisioner.Provision) (provisioner.Status, error) {
	updates, cancel := pr.Subscribe()
	defer cancel()
	check := func(st provisioner.Status) (bool, error) {
		switch st.State {
		case provisioner.StateFailed:
			if st.Err != nil {
				return true, st.Err
			}
			return true, errors.New(st.Error)
		case provisioner.StateReady:
			return true, nil
		case provisioner.StateDownloading, provisioner.StateVerifying:
			return st.BytesTotal > 0, nil
		}
		return false, nil
	}
	st := pr.Status()
	if done, err := check(st); done {
		return st, err
	}
	for {
		select {
		case s, ok := <-updates:
			if !ok {
				st = pr.Status()
				_, err := check(st)
				return st, err
			}
			st = s
			if done, err := check(st); done {
				return st, err
			}
		case <-ctx.Done():
			return st, ctx.Err()
		}
	}
}

// requiredBytes is the catalog's or the model's vram_bytes when known, else
// the size × 1.2.
func (m *Monitor) requiredBytes(canonical string, vram, size int64) uint64 {
	if vram <= 0 {
		for _, e := range m.prov.Catalog() {
			if e.ModelRef == canonical || e.Name == canonical {
				vram = e.VRAMBytes
				break
			}
		}
	}
	if vram > 0 {
		return uint64(vram)
	}
	if size <= 0 {
		return 0
	}
	return uint64(size) * 6 / 5
}

func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("worker token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func (m *Monitor) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed || m.detached
}

// track adds s to the supervised workers unless the monitor is closing.
func (m *Monitor) track(s *supervisor) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.detached {
		return false
	}
	m.sups[s.id] = s
	return true
}

func (m *Monitor) forget(s *supervisor) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sups[s.id] == s {
		delete(m.sups, s.id)
	}
}

// allocPort takes a free port from the range: not held by another worker
// and bindable on 127.0.0.1 now. A cursor walks the range so a port just
// released is the last to be reused.
func (m *Monitor) allocPort(id string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.cfg.PortMax - m.cfg.PortMin + 1
	for range n {
		port := m.nextPort
		m.nextPort++
		if m.nextPort > m.cfg.PortMax {
			m.nextPort = m.cfg.PortMin
		}
		if _, taken := m.ports[port]; taken || !portFree(port) {
			continue
		}
		m.ports[port] = id
		return port, nil
	}
	return 0, fmt.Errorf("%w: no free port in [%d, %d]", ErrSpawnFailed, m.cfg.PortMin, m.cfg.PortMax)
}

// keepOrReallocPort returns port when it is still bindable, else a new
// free port (the old one is released).
func (m *Monitor) keepOrReallocPort(id string, port int) (int, error) {
	if portFree(port) {
		return port, nil
	}
	next, err := m.allocPort(id)
	if err != nil {
		return 0, err
	}
	m.releasePort(port, id)
	return next, nil
}

// portFree reports whether a worker could listen on 127.0.0.1:port now. It
// does what net.Listen does (SO_REUSEADDR, bind, listen), in plain system
// calls: no registration with the runtime's poller, half the cost on every
// spawn and relaunch.
func portFree(port int) bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return false
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return false
	}
	return unix.Listen(fd, 1) == nil
}

func (m *Monitor) claimPort(port int, id string) {
	if port <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ports[port] = id
}

func (m *Monitor) releasePort(port int, id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ports[port] == id {
		delete(m.ports, port)
	}
}

// startWorkerProcess builds the command and environment from the template
// and starts the worker's process, its output appended to its log file.
// With mark, the worker's spawn marker is made before the exec.
func (m *Monitor) startWorkerProcess(s *supervisor, mark bool) (*process, error) {
	s.mu.Lock()
	token, modelPath, port := s.token, s.modelPath, s.port
	s.mu.Unlock()
	r := strings.NewReplacer(
		"{worker_id}", s.id,
		"{model_path}", modelPath,
		"{model_ref}", s.modelRef,
		"{backend}", s.backend,
		"{device}", strconv.Itoa(s.device),
		"{port}", strconv.Itoa(port),
		"{callback_url}", strings.TrimRight(m.cfg.HiveURL, "/")+"/v1/workers/ready",
	)
	argv := make([]string, len(m.cfg.Command))
	for i, a := range m.cfg.Command {
		argv[i] = r.Replace(a)
	}
	cuda := "" // a cpu worker holds no GPU memory in the ledger: hide the GPUs
	if s.backend == resources.CUDA {
		cuda = strconv.Itoa(s.device)
	}
	env := workerEnv(os.Environ(), m.cfg.Env,
		"RBEE_WORKER_ID="+s.id,
		"RBEE_WORKER_TOKEN="+token,
		"RBEE_HIVE_URL="+m.cfg.HiveURL,
		"RBEE_CORRELATION_ID="+s.corrID,
		"CUDA_VISIBLE_DEVICES="+cuda,
		// NVML numbers devices in PCI bus order; CUDA's default order is
		// fastest first. Without this, device 1 of the ledger can be another
		// GPU to the worker.
		"CUDA_DEVICE_ORDER=PCI_BUS_ID",
	)
	logf, err := openLog(s.logPath)
	if err != nil {
		return nil, fmt.Errorf("%w: worker log: %v", ErrSpawnFailed, err)
	}
	defer logf.Close() // the child has its own descriptor
	if mark {
		if err := m.writeMarker(s.id, s.logPath); err != nil {
			return nil, fmt.Errorf("%w: spawn marker: %v", ErrSpawnFailed, err)
		}
	}
	p, err := m.startProcess(argv, env, logf)
	if err != nil {
		return nil, err
	}
	m.log.Debug("worker process started", "worker_id", s.id, "pid", p.pid, "argv", argv)
	return p, nil
}

// workerEnv is the hive's environment without its own settings
// (RBEE_HIVE_*, among them the admin token) or another worker's identity
// (RBEE_WORKER_*), then the configured extra environment, then the worker's
// own variables, which win.
func workerEnv(inherited, extra []string, own ...string) []string {
	env := make([]string, 0, len(inherited)+len(extra)+len(own))
	for _, kv := range inherited {
		if strings.HasPrefix(kv, "RBEE_HIVE_") || strings.HasPrefix(kv, "RBEE_WORKER_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, extra...)
	return append(env, own...)
}

// Stop stops a worker by the stop sequence (timeout overrides the grace
// period when > 0), never restarts it, and removes it from the registry:
// POST {url}/v1/shutdown (any answer, or none, is fine) → wait for exit up
// to the grace period → SIGTERM to the process group → wait TermTimeout →
// SIGKILL to the group. The process is always reaped and what is left of
// its group killed; its memory and port are released. When ctx ends, the
// waits are cut short and the group is killed. A worker that is not running
// (restarting, failed, provisioning) is just removed, with outcome graceful.
// Concurrent stops of one worker share the first one's outcome.
func (m *Monitor) Stop(ctx context.Context, id string, timeout time.Duration) (Outcome, error) {
	if m.isClosed() {
		return "", fmt.Errorf("stop %s: %w", id, ErrClosed) // detached: the processes are not ours to wait for
	}
	s := m.sup(id)
	if s == nil {
		if _, err := m.reg.Remove(id); err != nil {
			return "", fmt.Errorf("stop: %w", err)
		}
		return OutcomeGraceful, nil
	}
	s.launchMu.Lock()
	s.mu.Lock()
	first := !s.stopping
	s.stopping = true
	p := s.proc
	s.mu.Unlock()
	s.launchMu.Unlock()
	if !first {
		select {
		case <-s.stopDone:
			return s.outcome, nil
		case <-ctx.Done():
			return "", fmt.Errorf("stop %s: %w", id, ctx.Err())
		}
	}
	s.halt()
	_, _ = m.reg.Update(id, func(w *registry.Worker) error {
		w.State = registry.StateStopping
		return nil
	})
	outcome := OutcomeGraceful
	if p != nil && !p.hasExited() {
		grace := m.cfg.Grace
		if timeout > 0 {
			grace = timeout
		}
		outcome = m.stopProcess(ctx, s, p, grace)
	}
	<-s.done
	if _, err := m.reg.Remove(id); err != nil && !errors.Is(err, registry.ErrNotFound) {
		m.log.Warn("remove stopped worker", "worker_id", id, "err", err)
	}
	s.releaseHolds()
	m.forget(s)
	s.outcome = outcome
	close(s.stopDone)
	m.log.Info("worker stopped", "worker_id", id, "outcome", outcome)
	return outcome, nil
}

func (m *Monitor) stopProcess(ctx context.Context, s *supervisor, p *process, grace time.Duration) Outcome {
	postCtx, cancelPost := context.WithCancel(ctx)
	posted := make(chan struct{})
	// declined closes when the worker answers the shutdown request with
	// anything but 2xx, or cannot be reached: nobody is shutting it down,
	// so waiting out the grace period would only delay the stop (servers
	// such as llama-server have no /v1/shutdown and answer 404).
	declined := make(chan struct{})
	go func() {
		defer close(posted)
		_, url := s.addr()
		req, err := newShutdownRequest(postCtx, url)
		if err != nil {
			close(declined)
			return
		}
		resp, err := m.hc.Do(req)
		if err != nil {
			if postCtx.Err() == nil {
				close(declined)
			}
			return
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			close(declined)
		}
	}()
	defer func() {
		cancelPost()
		<-posted
	}()
	graceCtx, cancelGrace := context.WithCancel(ctx)
	defer cancelGrace()
	go func() {
		select {
		case <-declined:
			cancelGrace()
		case <-graceCtx.Done():
		}
	}()
	if waitFor(graceCtx, p.exited, grace) {
		return OutcomeGraceful
	}
	p.signalGroup(syscall.SIGTERM)
	if waitFor(ctx, p.exited, m.cfg.TermTimeout) {
		return OutcomeTerminated
	}
	p.signalGroup(syscall.SIGKILL)
	<-p.exited
	return OutcomeKilled
}

// waitFor waits up to d for ch to close; false when d passed or ctx ended.
func waitFor(ctx context.Context, ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
}

func newShutdownRequest(ctx context.Context, baseURL string) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/shutdown", nil)
}
