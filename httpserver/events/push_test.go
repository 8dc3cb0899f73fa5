package events

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// queen is a test receiver of pushed batches on 127.0.0.1.
type queen struct {
	srv *httptest.Server

	mu       sync.Mutex
	failing  int  // fail this many more POSTs
	down     bool // fail every POST
	attempts int
	auth     []string
	batches  [][]Event // accepted, in order
	arrived  chan struct{}
}

func newQueen(t *testing.T, failFirst int) *queen {
	q := &queen{failing: failFirst, arrived: make(chan struct{}, 1000)}
	q.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		q.mu.Lock()
		defer q.mu.Unlock()
		q.attempts++
		q.auth = append(q.auth, r.Header.Get("Authorization"))
		if q.down || q.failing > 0 {
			if q.failing > 0 {
				q.failing--
			}
			http.Error(w, "queen is busy", http.StatusServiceUnavailable)
			return
		}
		var b struct {
			Events []Event `json:"events"`
		}
		if err := json.Unmarshal(body, &b); err != nil || len(b.Events) == 0 {
			t.Errorf("batch %s: %v", body, err)
			http.Error(w, "bad batch", http.StatusBadRequest)
			return
		}
		q.batches = append(q.batches, b.Events)
		q.arrived <- struct{}{}
	}))
	t.Cleanup(q.srv.Close)
	return q
}

func (q *queen) attemptCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.attempts
}

// events returns every accepted event, in order.
func (q *queen) events() []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Event
	for _, b := range q.batches {
		out = append(out, b...)
	}
	return out
}

// waitID waits until the event id arrived and returns every event so far.
func (q *queen) waitID(t *testing.T, id uint64) []Event {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		evs := q.events()
		if len(evs) > 0 && evs[len(evs)-1].ID >= id {
			return evs
		}
		select {
		case <-q.arrived:
		case <-deadline:
			t.Fatalf("queen got %d events, not id %d", len(evs), id)
		}
	}
}

func startPusher(t *testing.T, e *env, cfg PushConfig) *Pusher {
	cfg.Logger = quiet()
	if cfg.RetryInitial == 0 {
		cfg.RetryInitial, cfg.RetryMax = time.Millisecond, 10*time.Millisecond
	}
	if cfg.BatchDelay == 0 {
		cfg.BatchDelay = 5 * time.Millisecond
	}
	hc := &http.Client{Transport: &http.Transport{}}
	cfg.HTTPClient = hc
	p := NewPusher(cfg, e.hub)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("pusher Run: %v", err)
		}
		hc.CloseIdleConnections()
	})
	return p
}

func TestPushRetriesInOrder(t *testing.T) {
	e := newEnv(t, Config{})
	q := newQueen(t, 3)
	s := e.watch(t, WatchOptions{})
	startPusher(t, e, PushConfig{URL: q.srv.URL + "/v1/hives/events", Token: "queen-secret", BatchSize: 7})

	var want []uint64
	for i := range 15 {
		register(t, e.reg, wid(i))
		want = append(want, next(t, s).ID)
	}
	q.waitID(t, want[len(want)-1])
	// Queen fails again, now in the middle of the live events.
	q.mu.Lock()
	q.failing = 3
	q.mu.Unlock()
	for i := 15; i < 30; i++ {
		register(t, e.reg, wid(i))
		want = append(want, next(t, s).ID)
	}
	got := q.waitID(t, want[len(want)-1])
	if got[0].Type != TypeReset || got[0].Snapshot == nil {
		t.Fatalf("first pushed event %+v: want a reset before the live events", got[0])
	}
	// Live events after the reset; those its snapshot holds are skipped.
	live := got[1:]
	skipped := len(want) - len(live)
	if len(got[0].Snapshot.Workers) != skipped {
		t.Fatalf("the reset holds %d workers, but %d events are missing after it", len(got[0].Snapshot.Workers), skipped)
	}
	for i, ev := range live {
		if ev.ID != want[skipped+i] {
			t.Fatalf("pushed event %d has id %d, want %d (lost, duplicated or out of order)", i, ev.ID, want[skipped+i])
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.attempts != 6+len(q.batches) {
		t.Fatalf("%d attempts for %d batches: the 6 failures were not retried once each", q.attempts, len(q.batches))
	}
	for _, b := range q.batches {
		if len(b) > 7 {
			t.Fatalf("a batch of %d events, limit 7", len(b))
		}
	}
	for _, a := range q.auth {
		if a != "Bearer queen-secret" {
			t.Fatalf("Authorization %q", a)
		}
	}
}

// Queen is down longer than the buffer lasts: the buffer is dropped, and
// when queen answers again it gets a reset with the current state first.
func TestPushOverflowThenReset(t *testing.T) {
	e := newEnv(t, Config{})
	q := newQueen(t, 0)
	q.down = true
	s := e.watch(t, WatchOptions{})
	p := startPusher(t, e, PushConfig{URL: q.srv.URL, MaxBuffer: 10})
	waitUntil(t, "the pusher subscribed", func() bool { return e.hub.subscribers() == 2 })

	for i := range 40 {
		register(t, e.reg, wid(i))
	}
	for range 40 {
		next(t, s) // the hub has fanned them out: the pusher overflowed
	}
	if p.overflows.Load() == 0 {
		t.Fatal("40 events while queen was down did not overflow a buffer of 10")
	}
	q.mu.Lock()
	q.down = false
	q.mu.Unlock()

	register(t, e.reg, "worker-after")
	last := next(t, s)
	got := q.waitID(t, last.ID)
	// A reset comes first, then the live events after it: together they
	// hold every worker exactly once. (A batch in flight when the buffer
	// overflowed may still land; the reset after it replaces it.)
	if got[0].Type != TypeReset {
		t.Fatalf("first event after queen returned: %s", got[0].Type)
	}
	lastReset := 0
	for i, ev := range got {
		if ev.Type == TypeReset {
			lastReset = i
		}
	}
	got = got[lastReset:]
	seen := map[string]int{}
	for _, w := range got[0].Snapshot.Workers {
		seen[w.ID]++
	}
	for i, ev := range got[1:] {
		if ev.Type != TypeWorkerRegistered || (i > 0 && ev.ID <= got[i].ID) {
			t.Fatalf("live event %d after the reset: %d %s", i, ev.ID, ev.Type)
		}
		seen[ev.WorkerID()]++
	}
	if len(seen) != 41 {
		t.Fatalf("queen knows %d workers, want 41", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("worker %s reported %d times", id, n)
		}
	}
	if len(got) > 11 {
		t.Fatalf("%d events after the reset: more than the buffer of 10 (and the new one) survived", len(got)-1)
	}
}

func TestPushDisabledWithoutURL(t *testing.T) {
	e := newEnv(t, Config{})
	if err := NewPusher(PushConfig{}, e.hub).Run(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// runPusherAgainstDownQueen starts a pusher of e's hub whose queen answers
// every POST with 503 until q.down is cleared; done reports Run's return.
func runPusherAgainstDownQueen(t *testing.T, e *env, flush time.Duration) (q *queen, done <-chan error) {
	t.Helper()
	q = newQueen(t, 0)
	q.mu.Lock()
	q.down = true
	q.mu.Unlock()
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	p := NewPusher(PushConfig{URL: q.srv.URL, Logger: quiet(), HTTPClient: hc, BatchDelay: time.Millisecond,
		RetryInitial: time.Millisecond, RetryMax: 10 * time.Millisecond, FlushTimeout: flush}, e.hub)
	ch := make(chan error, 1)
	go func() { ch <- p.Run(context.Background()) }()
	return q, ch
}

// TestPushFlushesWhenTheHubStops: queen is down while the hive drains; the
// hub stops while the pusher is still retrying. Once queen answers again,
// within FlushTimeout, it gets the reset, the worker and the shutdown
// notice, in order: nothing the hub emitted last is lost at shutdown.
func TestPushFlushesWhenTheHubStops(t *testing.T) {
	e := newEnv(t, Config{})
	q, done := runPusherAgainstDownQueen(t, e, 30*time.Second)

	// The pusher has subscribed: it is retrying its first reset.
	deadline := time.Now().Add(waitFor)
	for q.attemptCount() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the pusher never tried to reach queen")
		}
		time.Sleep(time.Millisecond)
	}
	s := e.watch(t, WatchOptions{})
	register(t, e.reg, wid(1))
	e.hub.PublishShutdown()
	next(t, s)
	last := next(t, s) // the shutdown notice: the hub has emitted both
	if last.Type != TypeHiveShuttingDown {
		t.Fatalf("second event %s, want %s", last.Type, TypeHiveShuttingDown)
	}
	e.stopHub()
	time.Sleep(20 * time.Millisecond) // a few failed retries after the stop
	q.mu.Lock()
	q.down = false
	q.mu.Unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("the pusher did not return after its flush")
	}
	var types []string
	for _, ev := range q.events() {
		types = append(types, ev.Type)
	}
	want := []string{TypeReset, TypeWorkerRegistered, TypeHiveShuttingDown}
	if strings.Join(types, " ") != strings.Join(want, " ") {
		t.Fatalf("queen got %v, want %v", types, want)
	}
}

// TestPushFlushIsBounded: queen never answers again; the pusher gives up
// after FlushTimeout instead of holding the hive's exit.
func TestPushFlushIsBounded(t *testing.T) {
	e := newEnv(t, Config{})
	q, done := runPusherAgainstDownQueen(t, e, 50*time.Millisecond)
	register(t, e.reg, wid(1))
	e.stopHub()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("the pusher's flush did not give up")
	}
	if n := len(q.events()); n != 0 {
		t.Fatalf("queen accepted %d events while down", n)
	}
}
