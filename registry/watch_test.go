package registry

import (
	"errors"
	"testing"
)

func recv(t *testing.T, sub *Subscription) Event {
	t.Helper()
	return *recvPtr(t, sub)
}

// recvPtr returns the buffered event as delivered.
func recvPtr(t *testing.T, sub *Subscription) *Event {
	t.Helper()
	select {
	case ev, ok := <-sub.C():
		if !ok {
			t.Fatalf("channel closed: %v", sub.Err())
		}
		return ev
	default:
		t.Fatal("no event buffered")
		return nil
	}
}

func TestWatchEventsInCommitOrder(t *testing.T) {
	r := openMem(t)
	mustRegister(t, r, Worker{ID: "before"}) // not seen: Watch starts from now
	sub := r.Watch(16)
	defer sub.Close()

	mustRegister(t, r, Worker{ID: "w"})
	if _, err := r.Update("w", func(w *Worker) error { w.State = StateIdle; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Update("w", func(w *Worker) error { w.State = StateBusy; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Remove("w"); err != nil {
		t.Fatal(err)
	}

	want := []struct {
		kind      EventKind
		from, now State
	}{
		{EventRegistered, "", StateLoading},
		{EventUpdated, StateLoading, StateIdle},
		{EventUpdated, StateIdle, StateBusy},
		{EventRemoved, StateBusy, StateBusy},
	}
	seq := uint64(1) // "before" took 1
	for i, w := range want {
		ev := recv(t, sub)
		seq++
		if ev.Seq != seq || ev.Kind != w.kind || ev.From != w.from || ev.Worker.State != w.now || ev.Worker.ID != "w" || ev.At.IsZero() {
			t.Fatalf("event %d = %+v, want seq %d %s %s->%s", i, ev, seq, w.kind, w.from, w.now)
		}
	}
	if r.Seq() != seq {
		t.Fatalf("Seq = %d, want %d", r.Seq(), seq)
	}
}

func TestSlowWatcherDroppedWritersProceed(t *testing.T) {
	r := openMem(t)
	slow := r.Watch(2) // never read
	fast := r.Watch(1000)
	defer fast.Close()

	// If a writer waited for the slow watcher, this would never finish.
	for i := 0; i < 100; i++ {
		if _, err := r.Register(Worker{ID: string(rune('a'+i%26)) + string(rune('0'+i/26))}); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for range slow.C() { // the two it had room for, then closed
		n++
	}
	if n != 2 {
		t.Fatalf("slow watcher got %d events before being dropped, want 2", n)
	}
	if !errors.Is(slow.Err(), ErrSlowSubscriber) {
		t.Fatalf("slow Err = %v, want ErrSlowSubscriber", slow.Err())
	}
	slow.Close() // after a drop: harmless
	for i := 0; i < 100; i++ {
		if ev := recv(t, fast); ev.Seq != uint64(i+1) {
			t.Fatalf("fast watcher: event %d has seq %d", i, ev.Seq)
		}
	}
	if fast.Err() != nil {
		t.Fatalf("fast watcher: %v", fast.Err())
	}
}

func TestSubscriptionClose(t *testing.T) {
	r := openMem(t)
	sub := r.Watch(4)
	sub.Close()
	sub.Close()
	if _, ok := <-sub.C(); ok {
		t.Fatal("channel open after Close")
	}
	if sub.Err() != nil {
		t.Fatalf("Err after Close = %v", sub.Err())
	}
	mustRegister(t, r, Worker{ID: "w"}) // publishing skips it without panicking
}

func TestRegistryCloseEndsWatches(t *testing.T) {
	r, err := Open(Options{})
	if err != nil {
		t.Fatal(err)
	}
	subs := []*Subscription{r.Watch(1), r.Watch(1), r.Watch(0)}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for i, s := range subs {
		if _, ok := <-s.C(); ok || s.Err() != nil {
			t.Fatalf("sub %d: open %v, err %v after registry Close", i, ok, s.Err())
		}
		s.Close()
	}
	late := r.Watch(1)
	if _, ok := <-late.C(); ok || !errors.Is(late.Err(), ErrClosed) {
		t.Fatalf("watch after Close: open %v, err %v", ok, late.Err())
	}
}

func TestEventsShareNoMemory(t *testing.T) {
	r := openMem(t)
	a, b := r.Watch(1), r.Watch(1)
	defer a.Close()
	defer b.Close()
	mustRegister(t, r, fullWorker("w"))
	ea, eb := recvPtr(t, a), recvPtr(t, b)
	if ea == eb {
		t.Fatal("two subscribers were handed the same *Event")
	}
	ea.Worker.State, ea.Seq = StateFailed, 1000
	if eb.Worker.State == StateFailed || eb.Seq == 1000 {
		t.Fatal("two subscribers share an event")
	}
	*ea.Worker.LastExit.Code = 100
	*ea.Worker.ReadyAt = ea.Worker.ReadyAt.AddDate(1, 0, 0)
	if *eb.Worker.LastExit.Code != 3 || !eb.Worker.ReadyAt.Equal(*mustGet(t, r, "w").ReadyAt) {
		t.Fatal("two subscribers, or a subscriber and the registry, share memory")
	}
	if *mustGet(t, r, "w").LastExit.Code != 3 {
		t.Fatal("a subscriber changed the stored record")
	}
}

func TestListAndWatchHasNoGap(t *testing.T) {
	r := openMem(t)
	mustRegister(t, r, Worker{ID: "a", ModelRef: "m"})
	mustRegister(t, r, Worker{ID: "b", ModelRef: "other"})
	list, seq, sub := r.ListAndWatch(Filter{ModelRef: "m"}, 4)
	defer sub.Close()
	if len(list) != 1 || list[0].ID != "a" || seq != 2 {
		t.Fatalf("ListAndWatch = %+v at %d", list, seq)
	}
	mustRegister(t, r, Worker{ID: "c"})
	if ev := recv(t, sub); ev.Seq != seq+1 || ev.Worker.ID != "c" {
		t.Fatalf("first event after the list: %+v", ev)
	}
}
