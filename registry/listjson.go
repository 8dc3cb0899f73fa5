package registry

import (
	"encoding/json"
	"slices"
	"strings"
)

// listCache is what AppendJSON keeps between calls: the committed records
// of one seq in List order, each with its JSON encoding. Committed records
// are never mutated in place (a change replaces the pointer), so an encoding
// stays valid for as long as its pointer is in the map; a new seq re-sorts
// the pointers and encodes only the records that changed. A published
// listCache is never modified.
type listCache struct {
	seq   uint64
	order []*Worker
	enc   [][]byte // enc[i] is the encoding of order[i]
}

// AppendJSON appends to dst the JSON array of the records List(f) returns,
// byte for byte what encoding/json makes of that slice, and returns the
// extended buffer. Each record's encoding is kept until the record changes,
// so listing a thousand workers of which a few changed costs a few
// encodings and a copy (GET /v1/workers/list of a fleet).
func (r *Registry) AppendJSON(dst []byte, f Filter) []byte {
	c := r.listJSON()
	dst = append(dst, '[')
	n := 0
	for i, w := range c.order {
		if !f.matches(w) {
			continue
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, c.enc[i]...)
		n++
	}
	return append(dst, ']')
}

// listJSON returns the cache for the current seq, building it if needed.
func (r *Registry) listJSON() *listCache {
	r.mu.RLock()
	seq := r.seq
	if c := r.lists.Load(); c != nil && c.seq == seq {
		r.mu.RUnlock()
		return c
	}
	order := make([]*Worker, 0, len(r.workers))
	for _, w := range r.workers {
		order = append(order, w)
	}
	r.mu.RUnlock()

	slices.SortFunc(order, func(a, b *Worker) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	var prev map[*Worker][]byte
	if old := r.lists.Load(); old != nil {
		prev = make(map[*Worker][]byte, len(old.order))
		for i, w := range old.order {
			prev[w] = old.enc[i]
		}
	}
	c := &listCache{seq: seq, order: order, enc: make([][]byte, len(order))}
	for i, w := range order {
		if b, ok := prev[w]; ok {
			c.enc[i] = b
			continue
		}
		b, err := json.Marshal(w)
		if err != nil {
			// A Worker always encodes (strings, numbers, times); should it
			// ever not, the record is served as null rather than dropped.
			b = []byte("null")
		}
		c.enc[i] = b
	}
	// Publish unless a concurrent caller already published a newer seq.
	for {
		old := r.lists.Load()
		if old != nil && old.seq >= seq {
			return c
		}
		if r.lists.CompareAndSwap(old, c) {
			return c
		}
	}
}
