package monitor

import (
	"context"
	"net/http"
	"syscall"
	"time"

	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/restart"
)

// readopt takes over the workers a previous hive persisted. A worker whose
// pid is alive, whose process start time matches the record (so the pid was
// not reused) and whose health probe passes is adopted: its exit is watched
// by pidfd and its token (kept as a hash) still authenticates it. Anything
// else is killed with its whole group (only when the start time matches:
// a reused pid is someone else's) and handed to the restart policy as an
// exit of unknown status. Failed records stay failed; a record left in
// stopping is finished off and removed; a worker whose model was still
// downloading is failed (spawn it again).
func (m *Monitor) readopt(ctx context.Context) error {
	for _, w := range m.reg.List(registry.Filter{}) {
		if err := ctx.Err(); err != nil {
			return err
		}
		m.readoptOne(ctx, w)
	}
	return nil
}

func (m *Monitor) readoptOne(ctx context.Context, w registry.Worker) {
	policy, err := restart.ParsePolicy(w.RestartPolicy)
	if err != nil || w.RestartPolicy == "" {
		policy = m.cfg.DefaultPolicy
	}
	s := m.newSupervisor(w.ID, policy)
	s.backend, s.device, s.modelRef, s.modelPath = w.Backend, w.Device, w.ModelRef, w.ModelPath
	s.port, s.url, s.tokenHash = w.Port, w.URL, w.Process.TokenHash
	if w.Process.LogPath != "" {
		s.logPath = w.Process.LogPath
	}
	close(s.registered)
	log := m.log.With("worker_id", w.ID, "pid", w.PID)

	var p *process
	if w.PID > 0 && w.Process.StartTime != 0 {
		if st, err := procStartTime(w.PID); err == nil && st == w.Process.StartTime {
			if p, err = m.adoptProcess(w.PID, st); err != nil {
				log.Warn("re-adopt: cannot watch process", "err", err)
				p = nil
			}
		}
	}

	switch w.State {
	case registry.StateStopping, registry.StateFailed:
		if p != nil {
			p.signalGroup(syscall.SIGKILL)
			waitFor(ctx, p.exited, 5*time.Second)
		}
		if w.State == registry.StateStopping {
			_, _ = m.reg.Remove(w.ID)
			return
		}
		close(s.done) // failed: kept for the operator, nothing to supervise
		m.track(s)
		return
	}

	if p != nil && m.probeOnce(ctx, w.URL) {
		m.claimPort(w.Port, w.ID)
		m.reserveAgain(s, w)
		s.proc = p
		if !m.track(s) {
			p.release()
			return
		}
		adopted := true
		if w.State == registry.StateLoading || w.State == registry.StateUnhealthy || w.State == registry.StateRestarting {
			// Healthy now: it is ready, whatever the old hive last saw.
			_, _ = m.reg.Update(w.ID, func(w *registry.Worker) error {
				w.State = registry.StateRestarting
				return nil
			})
			_, _ = m.reg.Update(w.ID, func(w *registry.Worker) error {
				w.State = registry.StateLoading
				return nil
			})
			if _, err := s.markReady(p, "", nil); err != nil {
				adopted = false
			}
		}
		log.Info("re-adopted worker")
		m.wg.Add(1)
		go s.run(p, adopted, nil, nil, "")
		return
	}

	why := "process gone when the hive restarted"
	if p != nil {
		why = "health probe failed when the hive restarted"
		p.signalGroup(syscall.SIGKILL)
		waitFor(ctx, p.exited, 5*time.Second)
	}
	log.Info("not re-adopting worker", "reason", why)
	m.claimPort(w.Port, w.ID)
	m.reserveAgain(s, w)
	if !m.track(s) {
		return
	}
	if w.ModelPath == "" {
		close(s.done)
		s.giveUp(nil, "hive restarted while the model was provisioning")
		return
	}
	m.wg.Add(1)
	go s.run(nil, false, nil, &restart.Exit{Kind: restart.ExitError, Code: -1}, why)
}

// reserveAgain takes the worker's memory in this hive's fresh ledger. When it
// does not fit (someone else took it meanwhile) the worker runs unreserved
// and a warning says so.
func (m *Monitor) reserveAgain(s *supervisor, w registry.Worker) {
	var required uint64
	if model, ok := m.prov.Cached(w.ModelRef); ok {
		required = m.requiredBytes(w.ModelRef, model.VRAMBytes, model.SizeBytes)
	} else if w.VRAMBytes > 0 {
		required = uint64(w.VRAMBytes)
	}
	resv, err := m.res.Reserve(w.Backend, w.Device, required, w.ID)
	if err != nil {
		m.log.Warn("re-adopt: cannot reserve device memory", "worker_id", w.ID, "err", err)
		return
	}
	s.mu.Lock()
	s.resv = resv
	s.mu.Unlock()
}

// probeOnce GETs {url}{health_path} once with the health timeout.
func (m *Monitor) probeOnce(ctx context.Context, url string) bool {
	if url == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.HealthTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+m.cfg.HealthPath, nil)
	if err != nil {
		return false
	}
	resp, err := m.hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
