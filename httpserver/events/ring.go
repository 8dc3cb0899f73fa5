package events

// ring keeps the latest events, oldest first. Their ids are consecutive:
// the hub rings every event it numbers.
type ring struct {
	buf  []*entry
	head int // index of the oldest
	n    int
}

func newRing(size int) *ring { return &ring{buf: make([]*entry, size)} }

func (r *ring) push(e *entry) {
	if r.n < len(r.buf) {
		r.buf[(r.head+r.n)%len(r.buf)] = e
		r.n++
		return
	}
	r.buf[r.head] = e
	r.head = (r.head + 1) % len(r.buf)
}

// oldest returns the id of the oldest event held, false when empty.
func (r *ring) oldest() (uint64, bool) {
	if r.n == 0 {
		return 0, false
	}
	return r.buf[r.head].id, true
}

// after returns the events with an id above id, oldest first; the caller
// checks that id is within the ring (oldest-1 ≤ id).
func (r *ring) after(id uint64) []*entry {
	first, ok := r.oldest()
	if !ok || id+1 < first {
		return nil
	}
	skip := int(id + 1 - first)
	if skip >= r.n {
		return nil
	}
	out := make([]*entry, 0, r.n-skip)
	for i := skip; i < r.n; i++ {
		out = append(out, r.buf[(r.head+i)%len(r.buf)])
	}
	return out
}
