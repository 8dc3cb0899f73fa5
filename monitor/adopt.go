package monitor

import (
	"context"
	"net/http"

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
// downloading has it provisioned again and starts once it is there.
//
// A record whose process is unknown (pid 0, gone or reused), and a spawn
// marker without a record, may still have a process the previous hive
// started but did not record: those are looked for in /proc (see
// orphans.go) and adopted or killed.
func (m *Monitor) readopt(ctx context.Context) error {
	ws := m.reg.List(registry.Filter{})
	known := make(map[string]*process, len(ws))
	want := make(map[string]bool)
	for _, w := range ws {
		if p := m.recordedProcess(w); p != nil {
			known[w.ID] = p
		} else if w.State != registry.StateFailed {
			// Failed records are written once their process has ended.
			want[w.ID] = true
		}
	}
	var unrecorded []string
	if m.cfg.Persistent {
		for _, id := range m.spawnMarkers() {
			if _, err := m.reg.Get(id); err != nil {
				want[id] = true
				unrecorded = append(unrecorded, id)
			} else {
				m.removeMarker(id) // recorded: the record is enough
			}
		}
	}
	var found map[string][]foundProc
	if len(want) > 0 {
		m.procScans.Add(1)
		found = scanWorkerProcesses(want)
	}
	for _, id := range unrecorded {
		if f := found[id]; len(f) > 0 {
			m.log.Warn("killing the process of a spawn the previous hive did not record", "worker_id", id, "pid", f[0].pid)
			m.killFound(f)
		}
		m.removeMarker(id)
	}
	for i, w := range ws {
		if err := ctx.Err(); err != nil {
			for _, w := range ws[i:] {
				if p := known[w.ID]; p != nil {
					p.release()
				}
			}
			return err
		}
		m.readoptOne(ctx, w, known[w.ID], found[w.ID])
	}
	return nil
}

// recordedProcess watches the process the record names, if it is alive and
// its start time matches; else nil.
func (m *Monitor) recordedProcess(w registry.Worker) *process {
	if w.PID <= 0 || w.Process.StartTime == 0 {
		return nil
	}
	p, err := m.adoptProcess(w.PID, w.Process.StartTime)
	if err != nil {
		return nil // gone, or the pid is someone else's now
	}
	return p
}

// readoptOne takes over one record: p is its recorded process (nil when
// unknown), found the processes carrying its id when p is unknown.
func (m *Monitor) readoptOne(ctx context.Context, w registry.Worker, p *process, found []foundProc) {
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

	var unrecorded *foundProc // p was found in /proc, not in the record
	if p == nil && len(found) > 0 {
		live := w.State != registry.StateStopping && w.State != registry.StateFailed
		if l := leader(found); l != nil && live {
			if q, err := m.adoptProcess(l.pid, l.startTime); err == nil {
				p, unrecorded = q, l
				log.Info("found the worker's unrecorded process", "found_pid", l.pid)
			}
		}
		// Whatever else carries its id, neither in the group taken over nor
		// below its leader, is left from an earlier process: nobody
		// supervises it.
		var rest []foundProc
		for _, f := range found {
			if p == nil || (f.pgid != p.pid && !descendantOf(f.pid, p.pid)) {
				rest = append(rest, f)
			}
		}
		if len(rest) > 0 {
			log.Warn("killing unrecorded processes of the worker", "count", len(rest))
			m.killFound(rest)
		}
	}

	switch w.State {
	case registry.StateStopping, registry.StateFailed:
		if p != nil {
			p.kill()
			waitFor(ctx, p.exited, orphanKillWait)
		}
		if w.State == registry.StateStopping {
			_, _ = m.reg.Remove(w.ID)
			return
		}
		close(s.done) // failed: kept for the operator, nothing to supervise
		m.track(s)
		return
	}

	if p != nil && m.probeOnce(ctx, w.URL) && (unrecorded == nil || m.recordFound(s, &w, p, unrecorded.tokenHash)) {
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
		p.kill()
		waitFor(ctx, p.exited, orphanKillWait)
	}
	m.claimPort(w.Port, w.ID)
	m.reserveAgain(s, w)
	if !m.track(s) {
		return
	}
	if w.ModelPath == "" {
		// Its model was still provisioning: provision it again (the
		// provisioner resumes a partial download) and go on as a fresh
		// spawn would, its memory reserved again above.
		pr, err := m.prov.Start(w.ModelRef)
		if err != nil {
			close(s.done)
			s.giveUp(nil, "hive restarted while the model was provisioning; provisioning it again failed: "+err.Error())
			return
		}
		log.Info("hive restarted while the worker's model was provisioning: provisioning it again")
		m.touchLater(w.ModelRef)
		m.wg.Add(1)
		go s.run(nil, false, pr, nil, "")
		return
	}
	log.Info("not re-adopting worker", "reason", why)
	m.wg.Add(1)
	go s.run(nil, false, nil, &restart.Exit{Kind: restart.ExitError, Code: -1}, why)
}

// recordFound records p, a live process found by its worker id that the
// record does not name, as the worker's process: its pid and identity, and
// its token's hash (from its environment) when known. False when the record
// cannot be written: the process is then not adopted.
func (m *Monitor) recordFound(s *supervisor, w *registry.Worker, p *process, tokenHash string) bool {
	modelPath := w.ModelPath
	if modelPath == "" {
		// It was started, so its model was there; the record missed it.
		if model, ok := m.prov.Cached(w.ModelRef); ok {
			modelPath = model.LocalPath
		}
	}
	next, err := m.reg.Update(w.ID, func(x *registry.Worker) error {
		x.PID = p.pid
		x.Process.PGID, x.Process.StartTime = p.pid, p.startTime
		if tokenHash != "" {
			x.Process.TokenHash = tokenHash
		}
		x.ModelPath = modelPath
		return nil
	})
	if err != nil {
		m.log.Warn("re-adopt: cannot record the found process", "worker_id", w.ID, "err", err)
		return false
	}
	*w = next
	s.mu.Lock()
	s.tokenHash, s.modelPath = next.Process.TokenHash, next.ModelPath
	s.mu.Unlock()
	return true
}

// reserveAgain takes the worker's memory in this hive's fresh ledger: what
// the record says was reserved, or, for a record from before that was
// recorded, what the model's record or the catalog says it needs. When it
// does not fit (someone else took it meanwhile) the worker runs unreserved
// and a warning says so.
func (m *Monitor) reserveAgain(s *supervisor, w registry.Worker) {
	required := w.Process.ReservedBytes
	if required == 0 {
		if model, ok := m.prov.Cached(w.ModelRef); ok {
			required = m.requiredBytes(w.ModelRef, model.VRAMBytes, model.SizeBytes)
		} else if w.VRAMBytes > 0 {
			required = uint64(w.VRAMBytes)
		}
	}
	s.mu.Lock()
	s.reserveBytes = required
	s.mu.Unlock()
	resv, err := m.res.Reserve(w.Backend, w.Device, required, w.ID)
	if err != nil {
		m.log.Warn("re-adopt: cannot reserve device memory", "worker_id", w.ID, "bytes", required, "err", err)
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
