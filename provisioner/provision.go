package provisioner

import (
	"sync"
	"sync/atomic"
	"time"
)

// publishEvery spaces progress statuses to subscribers; notifyEvery spaces
// progress events to Config.Notify.
const (
	publishEvery = 100 * time.Millisecond
	notifyEvery  = 250 * time.Millisecond
)

// Provision is one download in flight or finished.
type Provision struct {
	id   string
	ref  string
	p    *Provisioner
	done chan struct{}

	bytesDone  atomic.Int64
	bytesTotal atomic.Int64

	mu         sync.Mutex
	state      State
	model      Model
	err        error
	finished   time.Time
	subs       map[*subscriber]struct{}
	lastPub    time.Time
	lastNotify time.Time
}

type subscriber struct{ ch chan Status }

// ID returns the provision id ("prov-<uuid>").
func (pr *Provision) ID() string { return pr.id }

// Status returns the current status.
func (pr *Provision) Status() Status {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.statusLocked()
}

func (pr *Provision) statusLocked() Status {
	st := Status{
		ID: pr.id, ModelRef: pr.ref, State: pr.state,
		BytesDone: pr.bytesDone.Load(), BytesTotal: pr.bytesTotal.Load(), Err: pr.err,
	}
	if pr.err != nil {
		st.Error = pr.err.Error()
	}
	return st
}

// Done is closed when the provision is ready or failed.
func (pr *Provision) Done() <-chan struct{} { return pr.done }

// Result returns the model or the error once Done is closed.
func (pr *Provision) Result() (Model, error) {
	<-pr.done
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.model, pr.err
}

// Subscribe delivers statuses; a slow subscriber skips intermediate ones but
// always receives the final one, after which the channel is closed. cancel
// ends the subscription early.
func (pr *Provision) Subscribe() (updates <-chan Status, cancel func()) {
	s := &subscriber{ch: make(chan Status, 1)}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	s.ch <- pr.statusLocked()
	if pr.subs == nil { // finished
		close(s.ch)
		return s.ch, func() {}
	}
	pr.subs[s] = struct{}{}
	return s.ch, func() {
		pr.mu.Lock()
		defer pr.mu.Unlock()
		if _, ok := pr.subs[s]; ok {
			delete(pr.subs, s)
			close(s.ch)
		}
	}
}

// publishLocked hands st to every subscriber, replacing a status it has not
// read yet: the sender never blocks (it is the only sender, under pr.mu).
func (pr *Provision) publishLocked(st Status) {
	for s := range pr.subs {
		select {
		case <-s.ch:
		default:
		}
		s.ch <- st
	}
}

func (pr *Provision) setState(s State) {
	pr.mu.Lock()
	pr.state = s
	st := pr.statusLocked()
	pr.publishLocked(st)
	pr.mu.Unlock()
}

// progress records a byte delta; statuses and events go out rate-limited.
func (pr *Provision) progress(delta int64) {
	pr.bytesDone.Add(delta)
	now := time.Now()
	pr.mu.Lock()
	if now.Sub(pr.lastPub) < publishEvery {
		pr.mu.Unlock()
		return
	}
	pr.lastPub = now
	st := pr.statusLocked()
	pr.publishLocked(st)
	notify := now.Sub(pr.lastNotify) >= notifyEvery
	if notify {
		pr.lastNotify = now
	}
	pr.mu.Unlock()
	if notify {
		pr.p.notify(Event{Kind: EventProvisionProgress, Status: st, At: now})
	}
}

// complete records the result and delivers the final status; close then
// ends the subscriptions and Done, so that whoever waits on Done also finds
// the final event already sent.
func (pr *Provision) complete(m Model, err error) Status {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.model, pr.err = m, err
	pr.finished = time.Now()
	if err != nil {
		pr.state = StateFailed
	} else {
		pr.state = StateReady
		pr.bytesDone.Store(m.SizeBytes)
		pr.bytesTotal.Store(m.SizeBytes)
	}
	st := pr.statusLocked()
	pr.publishLocked(st)
	return st
}

func (pr *Provision) close() {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for s := range pr.subs {
		close(s.ch)
	}
	pr.subs = nil
	close(pr.done)
}

// finish is complete then close.
func (pr *Provision) finish(m Model, err error) Status {
	st := pr.complete(m, err)
	pr.close()
	return st
}
