package registry

import (
	"bytes"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func openDir(t *testing.T, dir string) *Registry {
	t.Helper()
	r, err := Open(Options{StateDir: dir})
	if err != nil {
		t.Fatalf("Open %s: %v", dir, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestPersistRoundTrip(t *testing.T) {
	dir := t.TempDir()
	r := openDir(t, dir)
	a := mustRegister(t, r, fullWorker("a"))
	mustRegister(t, r, Worker{ID: "gone"})
	b := mustRegister(t, r, Worker{ID: "b", State: StateRestarting, Process: Process{PGID: 7, LogPath: "/l"}})
	if _, err := r.Remove("gone"); err != nil {
		t.Fatal(err)
	}
	b, err := r.Update("b", func(w *Worker) error { w.State = StateLoading; w.Process.StartTime = 99; return nil })
	if err != nil {
		t.Fatal(err)
	}
	seq := r.Seq()

	// No Close: every change above must already be on disk.
	r2 := openDir(t, dir)
	if r2.Seq() != seq {
		t.Fatalf("Seq after reload = %d, want %d", r2.Seq(), seq)
	}
	for _, want := range []Worker{a, b} {
		got := mustGet(t, r2, want.ID)
		if !sameWorker(got, want) {
			t.Fatalf("reloaded %s:\n got %+v\nwant %+v", want.ID, got, want)
		}
	}
	if got := mustGet(t, r2, "a").Process; got != fullWorker("a").Process {
		t.Fatalf("Process not persisted: %+v", got)
	}
	if _, err := r2.Get("gone"); !errors.Is(err, ErrNotFound) {
		t.Fatal("a removed worker came back")
	}
	if r2.Len() != 2 {
		t.Fatalf("Len = %d", r2.Len())
	}

	info, err := os.Stat(filepath.Join(dir, "workers.json"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Fatalf("state file mode %o, want 600 (it holds token hashes)", perm)
	}
	// The API's JSON never carries Process.
	if data, _ := os.ReadFile(filepath.Join(dir, "workers.json")); !strings.Contains(string(data), `"token_hash":"abcd"`) || !strings.Contains(string(data), `"version":1`) {
		t.Fatalf("state file lacks process data or version: %s", data)
	}
}

// TestFileWithoutReservedBytesLoads: a state file written before
// Process.ReservedBytes existed loads, the field 0 (not known).
func TestFileWithoutReservedBytesLoads(t *testing.T) {
	dir := t.TempDir()
	writeState(t, dir, `{"version":1,"seq":4,"workers":[{"worker_id":"old","pid":77,"model_ref":"file:/m",`+
		`"model_path":"/m","backend":"cpu","device":0,"state":"idle","url":"http://127.0.0.1:9000","port":9000,`+
		`"vram_bytes":0,"restart_policy":"on-failure","restart_count":0,"last_exit":null,"last_error":"",`+
		`"created_at":"2026-01-02T03:04:05Z","ready_at":null,"last_heartbeat":null,`+
		`"process":{"pgid":77,"start_time":5,"token_hash":"ab","log_path":"/l"}}]}`)
	r := openDir(t, dir)
	w := mustGet(t, r, "old")
	if w.Process != (Process{PGID: 77, StartTime: 5, TokenHash: "ab", LogPath: "/l"}) || w.PID != 77 || w.Port != 9000 {
		t.Fatalf("old record loaded as %+v", w)
	}
	if r.Seq() != 4 {
		t.Fatalf("Seq = %d", r.Seq())
	}
}

// sameWorker compares records the way JSON keeps them (instants, not
// monotonic readings or locations).
func sameWorker(a, b Worker) bool {
	norm := func(w Worker) Worker {
		w = w.Clone()
		w.CreatedAt = w.CreatedAt.UTC()
		for _, p := range []*time.Time{w.ReadyAt, w.LastHeartbeat} {
			if p != nil {
				*p = p.UTC()
			}
		}
		if w.LastExit != nil {
			w.LastExit.At = w.LastExit.At.UTC()
		}
		return w
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

func writeState(t *testing.T, dir, content string) string {
	t.Helper()
	p := filepath.Join(dir, "workers.json")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTruncatedFileIsErrorAndKeptAside(t *testing.T) {
	dir := t.TempDir()
	r := openDir(t, dir)
	mustRegister(t, r, fullWorker("a"))
	mustRegister(t, r, fullWorker("b"))
	r.Close()

	path := filepath.Join(dir, "workers.json")
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	truncated := full[:len(full)/2]
	if err := os.WriteFile(path, truncated, 0o600); err != nil {
		t.Fatal(err)
	}

	r2, err := Open(Options{StateDir: dir})
	if err == nil {
		r2.Close()
		t.Fatal("Open accepted a truncated state file")
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want ErrCorrupt naming %s", err, path)
	}
	aside, _ := filepath.Glob(path + ".corrupt-*")
	if len(aside) != 1 || !strings.Contains(err.Error(), aside[0]) {
		t.Fatalf("kept aside: %v; err %v", aside, err)
	}
	kept, err := os.ReadFile(aside[0])
	if err != nil || string(kept) != string(truncated) {
		t.Fatalf("the bad file was not kept as it was: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the bad file is still in place: %v", err)
	}
	// The next start is not blocked.
	r3 := openDir(t, dir)
	if r3.Len() != 0 {
		t.Fatalf("Len = %d", r3.Len())
	}
}

func TestBadStateFiles(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		corrupt       bool // moved aside; otherwise left in place
	}{
		{"empty", "", true},
		{"garbage", "\x00\x01not json", true},
		{"trailing data", `{"version":1,"workers":[]} {}`, true},
		{"no version", `{"workers":[]}`, true},
		{"wrong type", `{"version":1,"workers":{"a":1}}`, true},
		{"no id", `{"version":1,"workers":[{"state":"idle"}]}`, true},
		{"duplicate id", `{"version":1,"workers":[{"worker_id":"a","state":"idle"},{"worker_id":"a","state":"busy"}]}`, true},
		{"unknown state", `{"version":1,"workers":[{"worker_id":"a","state":"zombie"}]}`, true},
		{"newer version", `{"version":2,"workers":[]}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := writeState(t, dir, tc.content)
			r, err := Open(Options{StateDir: dir})
			if err == nil {
				r.Close()
				t.Fatal("Open accepted it")
			}
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error does not name the file: %v", err)
			}
			aside, _ := filepath.Glob(path + ".corrupt-*")
			_, statErr := os.Stat(path)
			if tc.corrupt {
				if !errors.Is(err, ErrCorrupt) || len(aside) != 1 || statErr == nil {
					t.Fatalf("err %v, aside %v, still in place: %v", err, aside, statErr == nil)
				}
			} else if errors.Is(err, ErrCorrupt) || len(aside) != 0 || statErr != nil {
				t.Fatalf("a newer file must stay in place: err %v, aside %v", err, aside)
			}
		})
	}
}

func TestMissingFileIsEmpty(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not", "yet")
	r := openDir(t, dir)
	if r.Len() != 0 || r.Seq() != 0 {
		t.Fatal("not empty")
	}
	mustRegister(t, r, Worker{ID: "w"})
	if _, err := os.Stat(filepath.Join(dir, "workers.json")); err != nil {
		t.Fatal(err)
	}
}

func TestStaleTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "workers.json.tmp-12345")
	if err := os.WriteFile(stale, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	openDir(t, dir)
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temp file left: %v", err)
	}
}

// TestWriteFailureChangesNothing takes the state directory away under a
// running registry: every change must fail with ErrPersist and leave memory,
// watchers and Seq as they were; once the directory is back, changes work
// and the file holds them all.
func TestWriteFailureChangesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	r := openDir(t, dir)
	mustRegister(t, r, Worker{ID: "keep", State: StateIdle})
	seq := r.Seq()
	sub := r.Watch(8)
	defer sub.Close()

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	changes := map[string]func() error{
		"register": func() error { _, err := r.Register(Worker{ID: "new"}); return err },
		"update": func() error {
			_, err := r.Update("keep", func(w *Worker) error { w.State = StateUnhealthy; return nil }) // written at once
			return err
		},
		"remove": func() error { _, err := r.Remove("keep"); return err },
	}
	for name, change := range changes {
		if err := change(); !errors.Is(err, ErrPersist) {
			t.Fatalf("%s without a state dir: err = %v, want ErrPersist", name, err)
		}
	}
	if r.Seq() != seq || r.Len() != 1 || mustGet(t, r, "keep").State != StateIdle {
		t.Fatalf("a failed write changed memory: seq %d len %d %+v", r.Seq(), r.Len(), r.List(Filter{}))
	}
	select {
	case ev := <-sub.C():
		t.Fatalf("event for an unwritten change: %+v", ev)
	default:
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	mustRegister(t, r, Worker{ID: "new"})
	r2 := openDir(t, dir)
	if r2.Len() != 2 || mustGet(t, r2, "keep").State != StateIdle {
		t.Fatalf("file after recovery: %+v", r2.List(Filter{}))
	}
}

func TestHeartbeatPersistedLazily(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, r, Worker{ID: "w", State: StateIdle})
	beat := time.Date(2026, 3, 3, 3, 3, 3, 0, time.UTC)
	if _, err := r.Update("w", func(w *Worker) error { w.LastHeartbeat = &beat; return nil }); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, r, "w").LastHeartbeat; got == nil || !got.Equal(beat) {
		t.Fatal("heartbeat not committed to memory")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2 := openDir(t, dir)
	if got := mustGet(t, r2, "w").LastHeartbeat; got == nil || !got.Equal(beat) {
		t.Fatalf("Close did not flush the heartbeat: %v", got)
	}
}

func TestLazyFlushWithoutClose(t *testing.T) {
	dir := t.TempDir()
	r := openDir(t, dir)
	r.st.lazyEvery = 10 * time.Millisecond // before any change: no race
	mustRegister(t, r, Worker{ID: "w", State: StateIdle})
	beat := time.Date(2026, 4, 4, 4, 4, 4, 0, time.UTC)
	if _, err := r.Update("w", func(w *Worker) error { w.LastHeartbeat = &beat; return nil }); err != nil {
		t.Fatal(err)
	}
	// Wait for the background flush: the bound is generous, this is not a
	// timing assertion.
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(filepath.Join(dir, "workers.json"))
		if err == nil && strings.Contains(string(data), "2026-04-04T04:04:04Z") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("heartbeat never reached the disk: %s", data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWhatIsWrittenAtOnce: changes re-adoption relies on are on disk when
// Update returns; changes a restart finds out again by probing (live-state
// moves, ready_at, vram_bytes, heartbeats) wait for the lazy flush.
func TestWhatIsWrittenAtOnce(t *testing.T) {
	now := time.Now().UTC().Round(0)
	cases := []struct {
		name  string
		from  State
		fn    func(*Worker)
		eager bool
	}{
		{"heartbeat", StateIdle, func(w *Worker) { w.LastHeartbeat = &now }, false},
		{"ready", StateLoading, func(w *Worker) { w.State = StateIdle; w.ReadyAt = &now; w.VRAMBytes = 7 }, false},
		{"busy", StateIdle, func(w *Worker) { w.State = StateBusy; w.LastHeartbeat = &now }, false},
		{"idle again", StateBusy, func(w *Worker) { w.State = StateIdle }, false},
		{"unhealthy", StateIdle, func(w *Worker) { w.State = StateUnhealthy }, true},
		{"restarting", StateIdle, func(w *Worker) { w.State = StateRestarting; w.RestartCount = 1 }, true},
		// The process ended: the file keeps naming it until the lazy flush,
		// and re-adoption finds it gone.
		{"process ended", StateIdle, func(w *Worker) {
			w.State, w.PID, w.RestartCount, w.LastError = StateRestarting, 0, 1, "worker exited with code 1"
			w.LastExit = &Exit{Reason: "error", At: now}
		}, false},
		{"unhealthy process ended", StateUnhealthy, func(w *Worker) { w.State, w.PID, w.RestartCount = StateRestarting, 0, 1 }, false},
		{"start failed again", StateRestarting, func(w *Worker) { w.PID, w.RestartCount, w.LastError = 0, 2, "worker failed to start" }, false},
		{"process ended, port moved", StateIdle, func(w *Worker) { w.State, w.PID, w.Port = StateRestarting, 0, 8082 }, true},
		{"stopping process ended", StateStopping, func(w *Worker) { w.PID = 0 }, true},
		{"stopping", StateIdle, func(w *Worker) { w.State = StateStopping }, true},
		{"failed", StateLoading, func(w *Worker) { w.State = StateFailed; w.LastError = "gave up" }, true},
		{"new pid", StateLoading, func(w *Worker) { w.PID = 4242; w.Process.StartTime = 99 }, true},
		{"ready at another url", StateLoading, func(w *Worker) { w.State = StateIdle; w.URL = "http://127.0.0.1:9999" }, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			r := openDir(t, dir)
			mustRegister(t, r, Worker{ID: "w", State: c.from, PID: 1, URL: "http://127.0.0.1:8081"})
			want, err := r.Update("w", func(w *Worker) error { c.fn(w); return nil })
			if err != nil {
				t.Fatal(err)
			}
			// Read the file as it is now, before any lazy flush or Close.
			r2 := openDir(t, dir)
			got := mustGet(t, r2, "w")
			written := reflect.DeepEqual(got, want)
			if written != c.eager {
				t.Fatalf("written at once = %v, want %v: file has %+v, memory %+v", written, c.eager, got, want)
			}
			if err := r.Close(); err != nil { // flushes what was lazy
				t.Fatal(err)
			}
			if got := mustGet(t, openDir(t, dir), "w"); !reflect.DeepEqual(got, want) {
				t.Fatalf("after Close the file has %+v, want %+v", got, want)
			}
		})
	}
}

// A lazily committed heartbeat must ride along with the next durable write
// of any worker (the per-record encoding cache must not serve a stale copy).
func TestLazyChangeRidesNextWrite(t *testing.T) {
	dir := t.TempDir()
	r := openDir(t, dir)
	mustRegister(t, r, Worker{ID: "a", State: StateIdle})
	mustRegister(t, r, Worker{ID: "b", State: StateIdle})
	beat := time.Date(2026, 6, 6, 6, 6, 6, 0, time.UTC)
	if _, err := r.Update("a", func(w *Worker) error { w.LastHeartbeat = &beat; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Update("b", func(w *Worker) error { w.State = StateUnhealthy; return nil }); err != nil { // written at once
		t.Fatal(err)
	}
	r2 := openDir(t, dir)
	if got := mustGet(t, r2, "a").LastHeartbeat; got == nil || !got.Equal(beat) {
		t.Fatalf("a's heartbeat missing from the next write: %v", got)
	}
	if mustGet(t, r2, "b").State != StateUnhealthy {
		t.Fatal("b's change missing")
	}
}

// TestChangesDoNotWaitForALazyFlush: while a lazy flush is writing the
// file (held up here), lazy changes commit; a change that must be durable
// is written after it, and the file ends with the newest state.
func TestChangesDoNotWaitForALazyFlush(t *testing.T) {
	dir := t.TempDir()
	r := openDir(t, dir)
	r.st.lazyEvery = time.Hour // flushed by hand below
	mustRegister(t, r, Worker{ID: "w", State: StateIdle})
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r.st.writeFile = func(path string, data []byte) error {
		once.Do(func() { close(entered); <-release })
		return writeAtomic(path, data)
	}
	beat := func(d int) func(*Worker) error {
		return func(w *Worker) error {
			at := time.Date(2026, 8, d, 8, 8, 8, 0, time.UTC)
			w.LastHeartbeat = &at
			return nil
		}
	}
	if _, err := r.Update("w", beat(1)); err != nil {
		t.Fatal(err)
	}
	flushed := make(chan struct{})
	go func() { defer close(flushed); r.flushLazy() }()
	<-entered

	lazy := make(chan error, 1)
	go func() { _, err := r.Update("w", beat(2)); lazy <- err }()
	select {
	case err := <-lazy:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second): // a bound for a hang, not a timing assertion
		close(release)
		t.Fatal("a lazy change waited for the lazy flush's write")
	}
	eager := make(chan error, 1)
	go func() {
		_, err := r.Update("w", func(w *Worker) error { w.State = StateUnhealthy; return nil })
		eager <- err
	}()
	close(release)
	<-flushed
	if err := <-eager; err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, openDir(t, dir), "w")
	if got.State != StateUnhealthy || got.LastHeartbeat == nil || got.LastHeartbeat.Day() != 2 {
		t.Fatalf("file after the flush and the durable change: %+v", got)
	}
}

// TestFlushNeverWritesAnOlderState: a flush of a snapshot taken before a
// durable write that reached the file first leaves the file alone.
func TestFlushNeverWritesAnOlderState(t *testing.T) {
	dir := t.TempDir()
	r := openDir(t, dir)
	mustRegister(t, r, Worker{ID: "w", State: StateIdle})
	r.commitMu.Lock()
	snap, seq := maps.Clone(r.workers), r.seq
	r.commitMu.Unlock()
	if _, err := r.Update("w", func(w *Worker) error { w.State = StateUnhealthy; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := r.st.flush(snap, seq); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, openDir(t, dir), "w"); got.State != StateUnhealthy {
		t.Fatalf("an older snapshot replaced the file: %+v", got)
	}
}

// syncBuffer collects log output written from the flush timer's goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls cond with a generous bound; it is not a timing assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLazyFlushFailureRetries: a background flush that cannot write is
// logged and retried until the directory is back.
func TestLazyFlushFailureRetries(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	logs := &syncBuffer{}
	r, err := Open(Options{StateDir: dir, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.st.lazyEvery = 10 * time.Millisecond
	mustRegister(t, r, Worker{ID: "w", State: StateIdle})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	beat := time.Date(2026, 7, 7, 7, 7, 7, 0, time.UTC)
	if _, err := r.Update("w", func(w *Worker) error { w.LastHeartbeat = &beat; return nil }); err != nil {
		t.Fatalf("a lazy update must not wait for the disk: %v", err)
	}
	waitFor(t, "the failed flush to be logged", func() bool { return strings.Contains(logs.String(), "lazy flush failed") })

	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the retried flush", func() bool {
		data, err := os.ReadFile(filepath.Join(dir, "workers.json"))
		return err == nil && strings.Contains(string(data), "2026-07-07T07:07:07Z")
	})
}

func TestCloseReportsFailedFlush(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	r, err := Open(Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, r, Worker{ID: "w", State: StateIdle})
	beat := time.Now()
	if _, err := r.Update("w", func(w *Worker) error { w.LastHeartbeat = &beat; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); !errors.Is(err, ErrPersist) {
		t.Fatalf("Close = %v, want ErrPersist", err)
	}
}

func TestUnreadableStateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "workers.json")
	if err := os.Mkdir(path, 0o700); err != nil { // a directory where the file should be
		t.Fatal(err)
	}
	r, err := Open(Options{StateDir: dir})
	if err == nil {
		r.Close()
		t.Fatal("Open accepted an unreadable state file")
	}
	if errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v: want a read error naming %s", err, path)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal("an unreadable file must stay where it is")
	}
}
