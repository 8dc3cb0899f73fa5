package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The state file. Version 1 holds every record with its Process, which the
// API never serves but re-adoption needs.
const (
	stateFile    = "workers.json"
	fileVersion  = 1
	lazyInterval = time.Second // the longest a heartbeat-only change waits for the disk
)

type stateFileV1 struct {
	Version int               `json:"version"`
	Seq     uint64            `json:"seq"`
	Workers []persistedWorker `json:"workers"`
}

// persistedWorker carries Process, which Worker hides from JSON.
type persistedWorker struct {
	Worker
	Process Process `json:"process"`
}

// store writes the state file.
//
// A lazy flush does its disk work without the registry's commitMu, so
// changes (lazy ones above all: a relaunch, a ready callback, a heartbeat)
// never wait for a background fsync; a write that must be durable before
// its change is committed holds commitMu and fileMu. Lock order: commitMu,
// then fileMu. A write never replaces the file with an older state than it
// holds: each write carries the sequence number of the state it renders.
type store struct {
	dir, path string
	log       *slog.Logger
	lazyEvery time.Duration                        // lazyInterval; tests shorten it
	writeFile func(path string, data []byte) error // writeAtomic; tests hold it up

	// Guarded by the registry's commitMu.
	onTimer func()      // flushes lazily committed changes
	timer   *time.Timer // pending lazy flush, nil when none

	fileMu  sync.Mutex
	enc     map[string]encoded // by worker id; see encode
	written uint64             // seq of the state the file holds
	stale   bool               // a write failed: the file may hold a refused change
	closed  bool               // close has written the file for the last time
}

// encoded is the JSON of one committed record. Committed records are never
// mutated, only replaced, so the encoding is valid while w is the record.
type encoded struct {
	w *Worker
	b []byte
}

// openStore creates dir if needed, removes temp files a crash left behind,
// and loads the state file.
func openStore(dir string, log *slog.Logger) (*store, []*Worker, uint64, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, 0, fmt.Errorf("registry: state dir: %w", err)
	}
	s := &store{dir: dir, path: filepath.Join(dir, stateFile), log: log, enc: make(map[string]encoded), lazyEvery: lazyInterval, writeFile: writeAtomic}
	if stale, err := filepath.Glob(s.path + ".tmp-*"); err == nil {
		for _, p := range stale {
			_ = os.Remove(p) // a write that never reached its rename
		}
	}
	workers, seq, err := s.load()
	if err != nil {
		return nil, nil, 0, err
	}
	s.written = seq
	return s, workers, seq, nil
}

// load reads the state file. A missing file is an empty registry. A file
// that cannot be parsed, or holds records that cannot be right, is moved
// aside and reported as ErrCorrupt; a file from a newer version is left in
// place and reported, so a downgrade never discards it.
func (s *store) load() ([]*Worker, uint64, error) {
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("registry: read %s: %w", s.path, err)
	}
	var f stateFileV1
	problem := json.Unmarshal(data, &f)
	if problem == nil {
		switch {
		case f.Version > fileVersion:
			return nil, 0, fmt.Errorf("registry: %s has version %d; this hive reads version %d", s.path, f.Version, fileVersion)
		case f.Version < 1:
			problem = fmt.Errorf("missing or invalid version %d", f.Version)
		default:
			problem = validate(f.Workers)
		}
	}
	if problem != nil {
		aside := fmt.Sprintf("%s.corrupt-%d", s.path, time.Now().UnixNano())
		if err := os.Rename(s.path, aside); err != nil {
			return nil, 0, fmt.Errorf("%w: %s: %v (moving it aside failed too: %v)", ErrCorrupt, s.path, problem, err)
		}
		return nil, 0, fmt.Errorf("%w: %s: %v; moved aside to %s, no worker was loaded", ErrCorrupt, s.path, problem, aside)
	}
	workers := make([]*Worker, 0, len(f.Workers))
	for _, pw := range f.Workers {
		w := pw.Worker
		w.Process = pw.Process
		workers = append(workers, &w)
	}
	return workers, f.Seq, nil
}

func validate(ws []persistedWorker) error {
	seen := make(map[string]bool, len(ws))
	for i, w := range ws {
		switch {
		case w.ID == "":
			return fmt.Errorf("record %d has no worker_id", i)
		case seen[w.ID]:
			return fmt.Errorf("worker %s appears twice", w.ID)
		case !w.State.Valid():
			return fmt.Errorf("worker %s has unknown state %q", w.ID, w.State)
		}
		seen[w.ID] = true
	}
	return nil
}

// write replaces the state file with the committed records plus the staged
// ones (nil: removed), atomically and durably: a temp file in the same
// directory, fsync, rename, fsync of the directory. The caller holds
// commitMu and commits staged to memory if and only if write succeeds. On
// error the file is marked stale, so a later flush rewrites it even if the
// rename went through and only the directory sync failed; the caller
// arranges that flush (markDirty).
func (s *store) write(committed, staged map[string]*Worker, seq uint64) error {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	return s.writeLocked(committed, staged, seq)
}

func (s *store) writeLocked(committed, staged map[string]*Worker, seq uint64) error {
	data, fresh, err := s.encode(committed, staged, seq)
	if err == nil {
		err = s.writeFile(s.path, data)
	}
	if err != nil {
		s.stale = true
		return fmt.Errorf("%w: %s: %w", ErrPersist, s.path, err)
	}
	for id, w := range staged {
		if w == nil {
			delete(s.enc, id)
		}
	}
	maps.Copy(s.enc, fresh)
	s.written, s.stale = seq, false
	return nil
}

// encode renders the state file. Each record's JSON is kept in s.enc with
// the record it encodes, so a write encodes only the records that changed
// since the last one, not every worker. fresh holds the new encodings, for
// the caller to keep once the file is in place. Called with fileMu held.
func (s *store) encode(committed, staged map[string]*Worker, seq uint64) (data []byte, fresh map[string]encoded, err error) {
	records := mergeRecords(committed, staged)
	fresh = make(map[string]encoded, len(staged))
	size := 64
	parts := make([][]byte, len(records))
	for i, w := range records {
		e, ok := s.enc[w.ID]
		if !ok || e.w != w {
			b, err := json.Marshal(persistedWorker{Worker: *w, Process: w.Process})
			if err != nil {
				return nil, nil, fmt.Errorf("encode worker %s: %w", w.ID, err)
			}
			e = encoded{w: w, b: b}
			fresh[w.ID] = e
		}
		parts[i] = e.b
		size += len(e.b) + 1
	}
	// The layout of stateFileV1, written by hand around the cached records.
	data = make([]byte, 0, size)
	data = fmt.Appendf(data, `{"version":%d,"seq":%d,"workers":[`, fileVersion, seq)
	for i, b := range parts {
		if i > 0 {
			data = append(data, ',')
		}
		data = append(data, b...)
	}
	data = append(data, "]}\n"...)
	return data, fresh, nil
}

func writeAtomic(path string, data []byte) (err error) {
	dir, name := filepath.Split(path)
	tmp, err := os.CreateTemp(dir, name+".tmp-*") // mode 0600: the file holds token hashes
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Clean(dir))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// markDirty makes sure a flush is coming for changes committed without a
// write. Called with commitMu held.
func (s *store) markDirty() {
	if s.timer == nil && s.onTimer != nil {
		s.timer = time.AfterFunc(s.lazyEvery, s.onTimer)
	}
}

// flush writes workers, the committed records at seq (a snapshot taken
// under commitMu, which the caller no longer holds), unless the file
// already holds that state or a newer one. A failure is logged and
// reported, for the caller to retry later: no change waits for a lazy
// write.
func (s *store) flush(workers map[string]*Worker, seq uint64) error {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	if s.closed || (seq <= s.written && !s.stale) {
		return nil
	}
	if err := s.writeLocked(workers, nil, seq); err != nil {
		s.log.Error("registry: lazy flush failed; retrying", "err", err)
		return err
	}
	return nil
}

// close stops the lazy timer and writes what it had pending. Called with
// commitMu held.
func (s *store) close(workers map[string]*Worker, seq uint64) error {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.onTimer = nil // no retries after Close
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	s.closed = true
	if seq <= s.written && !s.stale {
		return nil
	}
	if err := s.writeLocked(workers, nil, seq); err != nil {
		return fmt.Errorf("registry: close: %w", err)
	}
	return nil
}
