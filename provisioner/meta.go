package provisioner

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// metaEntry is what we remember about one cached model beyond the cache
// layout itself.
type metaEntry struct {
	Model
	// file: refs: the size and mtime the recorded hash belongs to.
	FileSize  int64 `json:"file_size,omitempty"`
	FileMtime int64 `json:"file_mtime_ns,omitempty"`
}

// metaStore is MetaDir/models.json, rewritten atomically on every change.
type metaStore struct {
	path    string
	mu      sync.Mutex
	entries map[string]*metaEntry // by canonical ref
}

func loadMeta(dir string) (*metaStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("metadata dir: %w", err)
	}
	m := &metaStore{path: filepath.Join(dir, "models.json"), entries: map[string]*metaEntry{}}
	b, err := os.ReadFile(m.path)
	if os.IsNotExist(err) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read metadata: %w", err)
	}
	var doc struct {
		Models []*metaEntry `json:"models"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parse %s: %w", m.path, err)
	}
	for _, e := range doc.Models {
		if e != nil && e.Ref != "" {
			m.entries[e.Ref] = e
		}
	}
	return m, nil
}

func (m *metaStore) get(ref string) (metaEntry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[ref]
	if !ok {
		return metaEntry{}, false
	}
	return *e, true
}

func (m *metaStore) all() []metaEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]metaEntry, 0, len(m.entries))
	for _, e := range m.entries {
		out = append(out, *e)
	}
	return out
}

// update changes entries under the lock and saves when fn says so.
func (m *metaStore) update(fn func(entries map[string]*metaEntry) bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !fn(m.entries) {
		return nil
	}
	return m.saveLocked()
}

func (m *metaStore) saveLocked() error {
	doc := struct {
		Models []*metaEntry `json:"models"`
	}{Models: make([]*metaEntry, 0, len(m.entries))}
	for _, e := range m.entries {
		doc.Models = append(doc.Models, e)
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(m.path), ".models-*.json")
	if err != nil {
		return fmt.Errorf("save metadata: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save metadata: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save metadata: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save metadata: %w", err)
	}
	if err := os.Rename(tmp.Name(), m.path); err != nil {
		return fmt.Errorf("save metadata: %w", err)
	}
	if d, err := os.Open(filepath.Dir(m.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
