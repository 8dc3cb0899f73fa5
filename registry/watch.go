package registry

// Subscription is one Watch.
type Subscription struct {
	r  *Registry
	ch chan *Event // pointers: a 4,096-slot buffer of Events (Worker by value) was 1.4 MB

	// Guarded by r.subMu.
	closed bool
	err    error
}

// Watch subscribes to changes from now on, buffered up to buffer events
// (at least 1). A subscriber that lets its buffer fill is dropped: its
// channel is closed and Err reports ErrSlowSubscriber; it may re-subscribe
// and re-List (ListAndWatch does both at once). Writers never wait for a
// subscriber.
func (r *Registry) Watch(buffer int) *Subscription {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.subscribeLocked(buffer)
}

// ListAndWatch returns the matching records, the Seq they reflect, and a
// subscription that delivers exactly the changes after that Seq: nothing is
// missed or seen twice between the list and the watch.
func (r *Registry) ListAndWatch(f Filter, buffer int) ([]Worker, uint64, *Subscription) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.listLocked(f), r.seq, r.subscribeLocked(buffer)
}

// subscribeLocked adds a subscription; r.mu must be held (read or write),
// so no commit publishes between the caller's view and the subscription.
func (r *Registry) subscribeLocked(buffer int) *Subscription {
	if buffer < 1 {
		buffer = 1
	}
	s := &Subscription{r: r, ch: make(chan *Event, buffer)}
	r.subMu.Lock()
	defer r.subMu.Unlock()
	if r.subsClosed {
		s.closed, s.err = true, ErrClosed
		close(s.ch)
		return s
	}
	r.subs[s] = struct{}{}
	return s
}

// publish hands ev to every subscriber without blocking, dropping those
// whose buffer is full. Called with r.mu held for writing, in commit order.
func (r *Registry) publish(ev Event) {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	for s := range r.subs {
		e := ev
		e.Worker = ev.Worker.Clone() // no two subscribers share memory
		select {
		case s.ch <- &e:
		default:
			r.log.Warn("registry: dropping a watcher that fell behind", "buffer", cap(s.ch), "seq", ev.Seq)
			s.endLocked(ErrSlowSubscriber)
		}
	}
}

// closeSubs ends every subscription (registry Close).
func (r *Registry) closeSubs() {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	r.subsClosed = true
	for s := range r.subs {
		s.endLocked(nil)
	}
}

// endLocked closes the channel once and forgets s; r.subMu must be held.
func (s *Subscription) endLocked(err error) {
	if s.closed {
		return
	}
	s.closed = true
	s.err = err
	close(s.ch)
	delete(s.r.subs, s)
}

// C delivers events in commit order, each the subscriber's own (no two
// subscribers share one); it is closed on Close, on registry Close, or when
// the subscriber fell behind.
func (s *Subscription) C() <-chan *Event { return s.ch }

// Err reports why C was closed: ErrSlowSubscriber when it fell behind,
// ErrClosed when it was opened on a closed registry, nil otherwise.
func (s *Subscription) Err() error {
	s.r.subMu.Lock()
	defer s.r.subMu.Unlock()
	return s.err
}

// Close ends the subscription. Safe to call more than once.
func (s *Subscription) Close() {
	s.r.subMu.Lock()
	defer s.r.subMu.Unlock()
	s.endLocked(nil)
}
