package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/httpserver/events"
	"github.com/rbee-hive/rbee-hive/tools/harness"
)

// queen is a stand-in queen-rbee: it records the event batches the hive
// pushes, refusing the first few with 503.
type queen struct {
	mu      sync.Mutex
	refuse  int
	auth    []string
	batches [][]events.Event
}

func (q *queen) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.auth = append(q.auth, r.Header.Get("Authorization"))
	if q.refuse > 0 {
		q.refuse--
		http.Error(w, "not yet", http.StatusServiceUnavailable)
		return
	}
	var body struct {
		Events []events.Event `json:"events"`
	}
	if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&body) != nil {
		http.Error(w, "bad batch", http.StatusBadRequest)
		return
	}
	q.batches = append(q.batches, body.Events)
}

func (q *queen) events() []events.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []events.Event
	for _, b := range q.batches {
		out = append(out, b...)
	}
	return out
}

// TestQueenPush: with queen.url set the hive pushes its events with
// queen.token, retries while queen answers 503, starts with a reset, and
// delivers a worker's life, its own shutdown and the worker's removal by
// the drain, in order, each id once.
func TestQueenPush(t *testing.T) {
	t.Parallel()
	e := harness.New(t)
	q := &queen{refuse: 2}
	srv := httptest.NewServer(q)
	t.Cleanup(srv.Close)
	d := e.StartDaemon(harness.DaemonOptions{Config: map[string]any{
		"queen": map[string]any{"url": srv.URL + "/v1/hives/events", "token": "queen-secret"},
	}})
	w := spawnReady(t, d.Client(), client.SpawnRequest{ModelRef: writeModel(t, e, "m.gguf", 1024)})
	// Queen has the worker ready before the hive stops (the pusher is in
	// its retry backoff at first).
	if !harness.Poll(20*time.Second, 10*time.Millisecond, func() bool {
		for _, ev := range q.events() {
			if ev.WorkerID() == w.ID && ev.To == "idle" {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("queen never got the worker's ready state: %d events", len(q.events()))
	}
	if st := d.Stop(30 * time.Second); !st.Success() {
		t.Fatalf("exit %s", st)
	}
	evs := q.events()
	if len(evs) == 0 || evs[0].Type != events.TypeReset {
		t.Fatalf("queen got %d events, want a reset first", len(evs))
	}
	seen := map[uint64]bool{}
	var life []string
	for _, ev := range evs {
		if seen[ev.ID] && ev.Type != events.TypeReset {
			t.Errorf("event id %d delivered twice", ev.ID)
		}
		seen[ev.ID] = true
		if ev.WorkerID() == w.ID || ev.Type == events.TypeHiveShuttingDown {
			life = append(life, ev.Type)
		}
	}
	// The last ones (the shutdown notice, then the worker's removal by the
	// drain) come from the pusher's flush as the hub stops.
	want := []string{events.TypeWorkerRegistered, events.TypeWorkerStateChanged, events.TypeHiveShuttingDown, events.TypeWorkerRemoved}
	i := 0
	for _, typ := range life {
		if i < len(want) && typ == want[i] {
			i++
		}
	}
	if i != len(want) {
		t.Errorf("queen saw %v for the worker and the hive, want %v in order", life, want)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, a := range q.auth {
		if a != "Bearer queen-secret" {
			t.Fatalf("push with Authorization %q", a)
		}
	}
	if len(q.auth) < 3 {
		t.Errorf("%d pushes, want the two refused ones retried", len(q.auth))
	}
}
