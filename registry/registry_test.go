package registry

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func openMem(t *testing.T) *Registry {
	t.Helper()
	r, err := Open(Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func mustRegister(t *testing.T, r *Registry, w Worker) Worker {
	t.Helper()
	got, err := r.Register(w)
	if err != nil {
		t.Fatalf("Register %s: %v", w.ID, err)
	}
	return got
}

func mustGet(t *testing.T, r *Registry, id string) Worker {
	t.Helper()
	w, err := r.Get(id)
	if err != nil {
		t.Fatalf("Get %s: %v", id, err)
	}
	return w
}

// fullWorker sets every field, pointers included.
func fullWorker(id string) Worker {
	code := 3
	ready := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	beat := ready.Add(time.Minute)
	return Worker{
		ID: id, PID: 4242, ModelRef: "hf:org/repo/model.gguf", ModelPath: "/cache/model.gguf",
		Backend: "cuda", Device: 1, State: StateIdle, URL: "http://127.0.0.1:8081", Port: 8081,
		VRAMBytes: 1 << 30, RestartPolicy: "on-failure", RestartCount: 2,
		LastExit:  &Exit{Code: &code, Reason: "error", At: ready.Add(-time.Hour)},
		LastError: "boom", CreatedAt: ready.Add(-2 * time.Hour), ReadyAt: &ready, LastHeartbeat: &beat,
		Process: Process{PGID: 4242, StartTime: 123456789, TokenHash: "abcd", LogPath: "/state/logs/" + id + ".log",
			ReservedBytes: 3 << 30},
	}
}

func TestCloneSharesNothing(t *testing.T) {
	orig := fullWorker("w")
	c := orig.Clone()
	if !reflect.DeepEqual(orig, c) {
		t.Fatalf("clone differs: %+v", c)
	}
	*c.LastExit.Code = 99
	c.LastExit.Reason = "signal"
	*c.ReadyAt = time.Time{}
	*c.LastHeartbeat = time.Time{}
	if *orig.LastExit.Code != 3 || orig.LastExit.Reason != "error" || orig.ReadyAt.IsZero() || orig.LastHeartbeat.IsZero() {
		t.Fatalf("changing the clone changed the original: %+v", orig)
	}
	var empty Worker
	if got := empty.Clone(); !reflect.DeepEqual(got, empty) {
		t.Fatalf("clone of a zero worker = %+v", got)
	}
}

func TestRegisterDefaultsAndErrors(t *testing.T) {
	now := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	r, err := Open(Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	got := mustRegister(t, r, Worker{ID: "a"})
	if got.State != StateLoading || !got.CreatedAt.Equal(now) {
		t.Fatalf("defaults: state %q created %v", got.State, got.CreatedAt)
	}
	if _, err := r.Register(Worker{ID: "a"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: err = %v, want ErrExists", err)
	}
	if _, err := r.Register(Worker{}); err == nil {
		t.Fatal("empty id accepted")
	}
	if _, err := r.Register(Worker{ID: "b", State: "sleeping"}); err == nil || !strings.Contains(err.Error(), "sleeping") {
		t.Fatalf("unknown state: err = %v", err)
	}
	if r.Len() != 1 {
		t.Fatalf("Len = %d after failed registrations", r.Len())
	}
}

func TestReturnedRecordsAreCopies(t *testing.T) {
	r := openMem(t)
	in := fullWorker("w")
	got := mustRegister(t, r, in)
	*in.LastExit.Code = 7 // the caller's record after Register
	*got.ReadyAt = time.Time{}
	g := mustGet(t, r, "w")
	*g.LastHeartbeat = time.Time{}
	l := r.List(Filter{})
	l[0].LastExit.Reason = "changed"

	stored := mustGet(t, r, "w")
	if *stored.LastExit.Code != 3 || stored.ReadyAt.IsZero() || stored.LastHeartbeat.IsZero() || stored.LastExit.Reason != "error" {
		t.Fatalf("a caller changed the stored record: %+v", stored)
	}
	u, err := r.Update("w", func(w *Worker) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	*u.LastExit.Code = 8
	if *mustGet(t, r, "w").LastExit.Code != 3 {
		t.Fatal("Update's result shares memory with the registry")
	}
}

func TestGetRemoveNotFound(t *testing.T) {
	r := openMem(t)
	if _, err := r.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get: %v", err)
	}
	if _, err := r.Remove("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := r.Update("nope", func(*Worker) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Update: %v", err)
	}
}

func TestRemoveFromEveryState(t *testing.T) {
	for _, s := range States() {
		r := openMem(t)
		mustRegister(t, r, Worker{ID: "w", State: s, ModelRef: "m"})
		got, err := r.Remove("w")
		if err != nil || got.State != s || got.ModelRef != "m" {
			t.Fatalf("%s: Remove = %+v, %v", s, got, err)
		}
		if _, err := r.Get("w"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: still there after Remove", s)
		}
	}
}

func TestListFiltersAndOrder(t *testing.T) {
	r := openMem(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, w := range []Worker{
		{ID: "c", ModelRef: "m1", State: StateIdle, CreatedAt: base},
		{ID: "b", ModelRef: "m2", State: StateIdle, CreatedAt: base},
		{ID: "a", ModelRef: "m1", State: StateBusy, CreatedAt: base.Add(time.Second)},
		{ID: "d", ModelRef: "m1", State: StateIdle, CreatedAt: base.Add(-time.Second)},
	} {
		mustRegister(t, r, w)
	}
	ids := func(ws []Worker) string {
		var s []string
		for _, w := range ws {
			s = append(s, w.ID)
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		f    Filter
		want string
	}{
		{Filter{}, "d,b,c,a"},
		{Filter{State: StateIdle}, "d,b,c"},
		{Filter{ModelRef: "m1"}, "d,c,a"},
		{Filter{State: StateIdle, ModelRef: "m1"}, "d,c"},
		{Filter{State: StateFailed}, ""},
		{Filter{ModelRef: "none"}, ""},
	} {
		if got := ids(r.List(tc.f)); got != tc.want {
			t.Errorf("List(%+v) = %q, want %q", tc.f, got, tc.want)
		}
	}
}

func TestCountsEveryState(t *testing.T) {
	r := openMem(t)
	counts := r.Counts()
	if len(counts) != len(States()) {
		t.Fatalf("Counts has %d states, want %d", len(counts), len(States()))
	}
	for _, s := range States() {
		if n, ok := counts[s]; !ok || n != 0 {
			t.Fatalf("empty registry: Counts[%s] = %d, %v", s, n, ok)
		}
	}
	mustRegister(t, r, Worker{ID: "1", State: StateIdle})
	mustRegister(t, r, Worker{ID: "2", State: StateIdle})
	mustRegister(t, r, Worker{ID: "3", State: StateFailed})
	counts = r.Counts()
	want := map[State]int{StateLoading: 0, StateIdle: 2, StateBusy: 0, StateUnhealthy: 0, StateRestarting: 0, StateStopping: 0, StateFailed: 1}
	if !reflect.DeepEqual(counts, want) {
		t.Fatalf("Counts = %v, want %v", counts, want)
	}
	if r.Len() != 3 {
		t.Fatalf("Len = %d", r.Len())
	}
}

func TestUpdateFnErrorChangesNothing(t *testing.T) {
	r := openMem(t)
	mustRegister(t, r, Worker{ID: "w", State: StateIdle, RestartCount: 1})
	seq := r.Seq()
	sub := r.Watch(8)
	defer sub.Close()
	sentinel := errors.New("no thanks")
	_, err := r.Update("w", func(w *Worker) error {
		w.State = StateBusy
		w.RestartCount = 9
		return sentinel
	})
	if err != sentinel {
		t.Fatalf("err = %v, want fn's own error unchanged", err)
	}
	if w := mustGet(t, r, "w"); w.State != StateIdle || w.RestartCount != 1 {
		t.Fatalf("record changed: %+v", w)
	}
	if r.Seq() != seq {
		t.Fatal("Seq moved")
	}
	select {
	case ev := <-sub.C():
		t.Fatalf("event for a failed update: %+v", ev)
	default:
	}
}

func TestUpdateCannotChangeID(t *testing.T) {
	r := openMem(t)
	mustRegister(t, r, Worker{ID: "w"})
	if _, err := r.Update("w", func(w *Worker) error { w.ID = "other"; return nil }); err == nil {
		t.Fatal("id change accepted")
	}
	if _, err := r.Get("other"); !errors.Is(err, ErrNotFound) || r.Len() != 1 {
		t.Fatal("id change took effect")
	}
}

func TestUpdateNoChangeIsNoEvent(t *testing.T) {
	r := openMem(t)
	mustRegister(t, r, fullWorker("w"))
	seq := r.Seq()
	if _, err := r.Update("w", func(w *Worker) error { w.State = StateIdle; return nil }); err != nil {
		t.Fatal(err)
	}
	if r.Seq() != seq {
		t.Fatal("an update that changed nothing was committed")
	}
}

func TestUpdatePanicReachesCaller(t *testing.T) {
	r := openMem(t)
	mustRegister(t, r, Worker{ID: "w"})
	func() {
		defer func() {
			if p := recover(); p != "fn exploded" {
				t.Fatalf("recovered %v", p)
			}
		}()
		r.Update("w", func(w *Worker) error { w.State = StateIdle; panic("fn exploded") })
		t.Fatal("Update returned after fn panicked")
	}()
	// The registry is still usable and unchanged.
	if w, err := r.Update("w", func(w *Worker) error { w.State = StateIdle; return nil }); err != nil || w.State != StateIdle {
		t.Fatalf("after a panic: %+v, %v", w, err)
	}
}

func TestClose(t *testing.T) {
	r, err := Open(Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, r, Worker{ID: "w"})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for name, err := range map[string]error{
		"Register": func() error { _, err := r.Register(Worker{ID: "x"}); return err }(),
		"Update":   func() error { _, err := r.Update("w", func(*Worker) error { return nil }); return err }(),
		"Remove":   func() error { _, err := r.Remove("w"); return err }(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if mustGet(t, r, "w").ID != "w" || r.Len() != 1 {
		t.Fatal("reads stopped working after Close")
	}
}

// TestHammer runs 100 goroutines registering, updating, listing and removing
// at once, with three watchers reading, under -race, in memory and on disk.
func TestHammer(t *testing.T) {
	for _, mode := range []string{"memory", "persistent"} {
		t.Run(mode, func(t *testing.T) {
			opts := Options{}
			rounds := 20
			if mode == "persistent" {
				opts.StateDir = t.TempDir()
				rounds = 5
			}
			r, err := Open(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			hammer(t, r, 100, rounds)
		})
	}
}

func hammer(t *testing.T, r *Registry, goroutines, rounds int) {
	// Watchers check commit order; they may be dropped when they fall
	// behind, and then re-subscribe, as a real one would.
	var watchers sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 3; i++ {
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			for {
				sub := r.Watch(64)
				var last uint64
				for ev := range sub.C() {
					if last != 0 && ev.Seq <= last {
						t.Errorf("watcher: seq %d after %d", ev.Seq, last)
					}
					last = ev.Seq
				}
				if sub.Err() == nil { // closed by the registry: done
					return
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}

	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				id := fmt.Sprintf("w-%d-%d", g, i)
				if _, err := r.Register(Worker{ID: id, ModelRef: fmt.Sprintf("m%d", g%3)}); err != nil {
					t.Errorf("Register: %v", err)
					return
				}
				for _, s := range []State{StateIdle, StateBusy, StateIdle} {
					if _, err := r.Update(id, func(w *Worker) error {
						w.State = s
						w.RestartCount++
						return nil
					}); err != nil {
						t.Errorf("Update: %v", err)
						return
					}
				}
				r.List(Filter{State: StateIdle})
				r.Counts()
				if i%2 == 0 {
					if _, err := r.Remove(id); err != nil {
						t.Errorf("Remove: %v", err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)

	wantLen := goroutines * (rounds / 2)
	if got := r.Len(); got != wantLen {
		t.Errorf("Len = %d, want %d", got, wantLen)
	}
	for _, w := range r.List(Filter{}) {
		if w.State != StateIdle || w.RestartCount != 3 {
			t.Errorf("%s ended as %s with %d updates", w.ID, w.State, w.RestartCount)
		}
	}
	// register + 3 updates per worker, + a removal for half of them
	wantSeq := uint64(goroutines*rounds*4 + goroutines*((rounds+1)/2))
	if got := r.Seq(); got != wantSeq {
		t.Errorf("Seq = %d, want %d", got, wantSeq)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	watchers.Wait()
}
