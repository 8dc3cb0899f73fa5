package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

// checkAppendJSON compares AppendJSON with encoding/json of List for f.
func checkAppendJSON(t *testing.T, r *Registry, f Filter) {
	t.Helper()
	want, err := json.Marshal(r.List(f))
	if err != nil {
		t.Fatal(err)
	}
	got := r.AppendJSON([]byte("prefix"), f)
	if !bytes.HasPrefix(got, []byte("prefix")) {
		t.Fatalf("AppendJSON dropped what dst held: %q", got)
	}
	if got = got[len("prefix"):]; !bytes.Equal(got, want) {
		t.Fatalf("AppendJSON(%+v):\n got %s\nwant %s", f, got, want)
	}
}

func TestAppendJSONMatchesList(t *testing.T) {
	r := openMem(t)
	filters := []Filter{{}, {State: StateIdle}, {State: StateLoading}, {ModelRef: "hf:a/b"}, {State: StateIdle, ModelRef: "hf:c/d"}}
	check := func() {
		t.Helper()
		for _, f := range filters {
			checkAppendJSON(t, r, f)
		}
	}
	check() // empty: [] (not null)
	base := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for i := range 20 {
		ref := "hf:a/b"
		if i%3 == 0 {
			ref = "hf:c/d"
		}
		// Some records share a creation time: the id breaks the tie.
		if _, err := r.Register(Worker{ID: fmt.Sprintf("worker-%02d", 19-i), ModelRef: ref, CreatedAt: base.Add(time.Duration(i/2) * time.Second),
			LastError: `quote " and <html> & unicode ü`}); err != nil {
			t.Fatal(err)
		}
		check()
	}
	// Changes are seen at once: a record's encoding is redone when it changes.
	for i := range 10 {
		id := fmt.Sprintf("worker-%02d", i)
		if _, err := r.Update(id, func(w *Worker) error {
			w.State = StateIdle
			now := base.Add(time.Hour)
			w.ReadyAt, w.LastHeartbeat = &now, &now
			w.URL, w.Port, w.PID = "http://127.0.0.1:9", 9, 1234+i
			code := 3
			w.LastExit = &Exit{Code: &code, Reason: "crashed", At: now}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		check()
	}
	for i := 0; i < 20; i += 4 {
		if _, err := r.Remove(fmt.Sprintf("worker-%02d", i)); err != nil {
			t.Fatal(err)
		}
		check()
	}
	// An Update that changes nothing keeps the cache valid and right.
	if _, err := r.Update("worker-01", func(w *Worker) error { return nil }); err != nil {
		t.Fatal(err)
	}
	check()
}

// Readers racing writers always get a valid array of whole records, and once
// the writers are done, exactly List's answer.
func TestAppendJSONConcurrent(t *testing.T) {
	r := openMem(t)
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for i := range 100 {
				id := fmt.Sprintf("worker-%d-%d", g, i)
				if _, err := r.Register(Worker{ID: id}); err != nil {
					t.Error(err)
					return
				}
				if i%2 == 0 {
					if _, err := r.Update(id, func(w *Worker) error { w.RestartCount++; return nil }); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 3 {
		readers.Go(func() {
			var buf []byte
			for {
				select {
				case <-stop:
					return
				default:
				}
				buf = r.AppendJSON(buf[:0], Filter{})
				var ws []Worker
				if err := json.Unmarshal(buf, &ws); err != nil {
					t.Errorf("invalid list %q: %v", buf, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	checkAppendJSON(t, r, Filter{})
}
