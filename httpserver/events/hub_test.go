package events

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
)

func TestStreamOrderAndContent(t *testing.T) {
	e := newEnv(t, Config{})
	s := e.watch(t, WatchOptions{})

	register(t, e.reg, "worker-a")
	setState(t, e.reg, "worker-a", registry.StateIdle, func(w *registry.Worker) { w.URL = "http://127.0.0.1:9000" })
	// A heartbeat only: no event.
	setState(t, e.reg, "worker-a", registry.StateIdle, func(w *registry.Worker) { now := time.Now(); w.LastHeartbeat = &now })
	setState(t, e.reg, "worker-a", registry.StateUnhealthy, func(w *registry.Worker) { w.LastError = "3 health probes failed" })
	code := 1
	setState(t, e.reg, "worker-a", registry.StateRestarting, func(w *registry.Worker) {
		w.RestartCount = 2
		w.LastExit = &registry.Exit{Code: &code, Reason: "error", At: time.Now()}
	})
	setState(t, e.reg, "worker-a", registry.StateLoading)
	setState(t, e.reg, "worker-a", registry.StateFailed, func(w *registry.Worker) { w.LastError = "ready timeout" })
	setState(t, e.reg, "worker-a", registry.StateStopping)
	if _, err := e.reg.Remove("worker-a"); err != nil {
		t.Fatal(err)
	}

	type want struct {
		typ, from, to, reason string
		attempt               int
	}
	wants := []want{
		{typ: TypeWorkerRegistered},
		{typ: TypeWorkerStateChanged, from: "loading", to: "idle"},
		{typ: TypeWorkerStateChanged, from: "idle", to: "unhealthy", reason: "3 health probes failed"},
		{typ: TypeWorkerStateChanged, from: "unhealthy", to: "restarting", reason: "error"},
		{typ: TypeWorkerRestarted, attempt: 2},
		{typ: TypeWorkerStateChanged, from: "restarting", to: "loading"},
		{typ: TypeWorkerStateChanged, from: "loading", to: "failed", reason: "ready timeout"},
		{typ: TypeWorkerStateChanged, from: "failed", to: "stopping"},
		{typ: TypeWorkerRemoved, from: "stopping"},
	}
	var prev uint64
	for i, w := range wants {
		ev := next(t, s)
		if ev.Type != w.typ || string(ev.From) != w.from || string(ev.To) != w.to || ev.Reason != w.reason || ev.Attempt != w.attempt {
			t.Fatalf("event %d = %+v, want %+v", i, ev, w)
		}
		if i > 0 && ev.ID != prev+1 {
			t.Fatalf("event %d id %d after %d: ids must increase by one", i, ev.ID, prev)
		}
		prev = ev.ID
		if ev.Time.IsZero() || ev.Worker == nil || ev.Worker.ID != "worker-a" || ev.Worker.ModelRef != "hf:org/m" {
			t.Fatalf("event %d lacks its time or full record: %+v", i, ev)
		}
		switch ev.Type {
		case TypeWorkerRestarted:
			if ev.LastExit == nil || ev.LastExit.Reason != "error" || ev.LastExit.Code == nil || *ev.LastExit.Code != 1 {
				t.Fatalf("restarted without its last exit: %+v", ev.LastExit)
			}
		case TypeWorkerStateChanged:
			if ev.Worker.State != ev.To {
				t.Fatalf("record state %s, to %s", ev.Worker.State, ev.To)
			}
		}
	}
}

func TestWireFormat(t *testing.T) {
	e := newEnv(t, Config{})
	code, rs := rawGet(t, e.srv.URL, "/v1/events")
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	// The first block names the position and carries no event.
	pos := rs.frame(t)
	if len(pos) != 1 || field(pos, "id") == "" {
		t.Fatalf("first block %q, want only an id", pos)
	}
	p, _ := strconv.ParseUint(field(pos, "id"), 10, 64)

	register(t, e.reg, "worker-a")
	f := rs.frame(t)
	if len(f) != 3 || field(f, "id") != strconv.FormatUint(p+1, 10) || field(f, "event") != TypeWorkerRegistered {
		t.Fatalf("frame %q", f)
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(field(f, "data")), &ev); err != nil {
		t.Fatal(err)
	}
	if ev["type"] != TypeWorkerRegistered || ev["id"].(float64) != float64(p+1) {
		t.Fatalf("data %v", ev)
	}
	if _, err := time.Parse(time.RFC3339Nano, ev["time"].(string)); err != nil {
		t.Fatalf("time: %v", err)
	}
	w := ev["worker"].(map[string]any)
	if w["worker_id"] != "worker-a" || w["state"] != "loading" {
		t.Fatalf("worker %v", w)
	}
	for _, k := range []string{"from", "to", "reason", "attempt", "provision", "model", "snapshot"} {
		if _, ok := ev[k]; ok {
			t.Fatalf("empty field %q not omitted: %v", k, ev)
		}
	}
}

func TestResponseHeaders(t *testing.T) {
	e := newEnv(t, Config{})
	resp, err := http.Get(e.srv.URL + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Fatalf("cache control %q", cc)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestHeartbeat(t *testing.T) {
	e := newEnv(t, Config{Heartbeat: 10 * time.Millisecond})
	_, rs := rawGet(t, e.srv.URL, "/v1/events")
	rs.frame(t) // position
	f := rs.frame(t)
	if len(f) != 1 || f[0] != ": ping" {
		t.Fatalf("want a ping comment, got %q", f)
	}
}

func TestFilters(t *testing.T) {
	e := newEnv(t, Config{})
	byType := e.watch(t, WatchOptions{Types: []string{TypeWorkerRemoved, TypeWorkerRegistered}})
	byWorker := e.watch(t, WatchOptions{WorkerIDs: []string{"worker-b"}})

	register(t, e.reg, "worker-a")
	register(t, e.reg, "worker-b")
	setState(t, e.reg, "worker-a", registry.StateIdle)
	setState(t, e.reg, "worker-b", registry.StateIdle)
	e.hub.PublishProvisioner(provisioner.Event{Kind: provisioner.EventProvisionStarted, Status: provisioner.Status{ID: "prov-1", ModelRef: "hf:org/m", State: provisioner.StateQueued}})
	if _, err := e.reg.Remove("worker-a"); err != nil {
		t.Fatal(err)
	}

	for _, want := range []string{"registered worker-a", "registered worker-b", "removed worker-a"} {
		ev := next(t, byType)
		if got := ev.Type[len("worker_"):] + " " + ev.WorkerID(); got != want {
			t.Fatalf("type filter: got %q, want %q", got, want)
		}
	}
	// Registry changes and the shutdown come from different sources: publish
	// it once the registry's changes are through.
	e.hub.PublishShutdown()
	for _, want := range []string{TypeWorkerRegistered, TypeWorkerStateChanged, TypeHiveShuttingDown} {
		ev := next(t, byWorker)
		if ev.Type != want || (want != TypeHiveShuttingDown && ev.WorkerID() != "worker-b") {
			t.Fatalf("worker filter: got %s %s, want %s", ev.Type, ev.WorkerID(), want)
		}
	}
}

func TestInvalidRequests(t *testing.T) {
	e := newEnv(t, Config{})
	for _, tc := range []struct{ query, header, field string }{
		{query: "?type=worker_registered,bogus", field: "type"},
		{query: "?last_event_id=abc", field: "last_event_id"},
		{header: "Last-Event-ID: -1", field: "last_event_id"},
	} {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/events"+tc.query, nil)
		if tc.header != "" {
			req.Header.Set("Last-Event-ID", "-1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var env struct {
			Error struct {
				Code    string         `json:"code"`
				Message string         `json:"message"`
				Details map[string]any `json:"details"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			t.Fatalf("%s: body %s: %v", tc.query, body, err)
		}
		if resp.StatusCode != http.StatusBadRequest || env.Error.Code != "INVALID_REQUEST" || env.Error.Details["field"] != tc.field || env.Error.Message == "" {
			t.Fatalf("%s%s: %d %s", tc.query, tc.header, resp.StatusCode, body)
		}
	}
	// The typed client returns the hive's answer as it is.
	_, err := Watch(t.Context(), e.srv.URL, "", nil, WatchOptions{Types: []string{"bogus"}})
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusBadRequest {
		t.Fatalf("Watch with a bad type: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestProvisionerEvents(t *testing.T) {
	e := newEnv(t, Config{ProgressInterval: time.Hour})
	s := e.watch(t, WatchOptions{})
	st := provisioner.Status{ID: "prov-1", ModelRef: "hf:org/m", State: provisioner.StateDownloading, BytesTotal: 100}
	e.hub.PublishProvisioner(provisioner.Event{Kind: provisioner.EventProvisionStarted, Status: st})
	for i := range 10 {
		st.BytesDone = int64(i * 10)
		e.hub.PublishProvisioner(provisioner.Event{Kind: provisioner.EventProvisionProgress, Status: st})
	}
	other := provisioner.Status{ID: "prov-2", ModelRef: "hf:org/n", State: provisioner.StateDownloading}
	e.hub.PublishProvisioner(provisioner.Event{Kind: provisioner.EventProvisionProgress, Status: other})
	m := &provisioner.Model{Ref: "hf:org/m", LocalPath: "/cache/m", SizeBytes: 100}
	st.State, st.BytesDone = provisioner.StateReady, 100
	e.hub.PublishProvisioner(provisioner.Event{Kind: provisioner.EventProvisionDone, Status: st, Model: m})
	other.State, other.Error = provisioner.StateFailed, "upstream error"
	e.hub.PublishProvisioner(provisioner.Event{Kind: provisioner.EventProvisionFailed, Status: other})
	e.hub.PublishProvisioner(provisioner.Event{Kind: provisioner.EventModelEvicted, Model: m})

	type want struct {
		typ, id string
		done    int64
	}
	for i, w := range []want{
		{TypeProvisionStarted, "prov-1", 0},
		{TypeProvisionProgress, "prov-1", 0}, // the other nine fall within the interval
		{TypeProvisionProgress, "prov-2", 0},
		{TypeProvisionDone, "prov-1", 100},
		{TypeProvisionFailed, "prov-2", 0},
	} {
		ev := next(t, s)
		if ev.Type != w.typ || ev.Provision == nil || ev.Provision.ID != w.id || ev.Provision.BytesDone != w.done {
			t.Fatalf("event %d: %+v, want %+v", i, ev, w)
		}
		if ev.Type == TypeProvisionDone && (ev.Model == nil || ev.Model.LocalPath != "/cache/m") {
			t.Fatalf("done without its model: %+v", ev)
		}
		if ev.Type == TypeProvisionFailed && ev.Provision.Error != "upstream error" {
			t.Fatalf("failed without its error: %+v", ev.Provision)
		}
	}
	ev := next(t, s)
	if ev.Type != TypeModelEvicted || ev.Model == nil || ev.Model.Ref != "hf:org/m" || ev.Provision != nil {
		t.Fatalf("evicted: %+v", ev)
	}
}

func TestShutdownEventOnce(t *testing.T) {
	e := newEnv(t, Config{})
	s := e.watch(t, WatchOptions{})
	e.hub.PublishShutdown()
	e.hub.PublishShutdown()
	register(t, e.reg, "worker-a")
	// Two sources: either order.
	got := map[string]bool{next(t, s).Type: true, next(t, s).Type: true}
	if !got[TypeHiveShuttingDown] || !got[TypeWorkerRegistered] {
		t.Fatalf("got %v", got)
	}
	register(t, e.reg, "worker-b")
	if ev := next(t, s); ev.Type != TypeWorkerRegistered || ev.WorkerID() != "worker-b" {
		t.Fatalf("a second shutdown event, or %s", ev.Type)
	}
}

// The provisioner's events overflow the hub's inbox before Run: what fit is
// emitted, then a reset replaces what was lost.
func TestProvisionerOverflowGivesReset(t *testing.T) {
	reg, err := registry.Open(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	h := New(Config{Buffer: 2, Registry: reg, Logger: quiet()})
	register(t, reg, "worker-a")
	for i := range 5 {
		h.PublishProvisioner(provisioner.Event{Kind: provisioner.EventProvisionStarted, Status: provisioner.Status{ID: "prov-" + strconv.Itoa(i)}})
	}
	res, err := h.subscribe(subscribeRequest{buffer: 16})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); <-done }()

	var got []string
	var reset Event
	for reset.Type == "" {
		select {
		case en := <-res.sub.ch:
			got = append(got, en.typ)
			if en.typ == TypeReset {
				if err := json.Unmarshal(en.data, &reset); err != nil {
					t.Fatal(err)
				}
			}
		case <-time.After(waitFor):
			t.Fatalf("no reset; got %v", got)
		}
	}
	// The two provisions that fit come before the reset; the registration
	// comes before it or is skipped because the snapshot holds it.
	n := 0
	for _, typ := range got {
		if typ == TypeProvisionStarted {
			n++
		}
	}
	if n != 2 || len(reset.Snapshot.Workers) != 1 || reset.Snapshot.Workers[0].ID != "worker-a" {
		t.Fatalf("events %v, snapshot %+v", got, reset.Snapshot)
	}
	register(t, reg, "worker-b")
	select {
	case en := <-res.sub.ch:
		if en.typ != TypeWorkerRegistered || en.workerID != "worker-b" {
			t.Fatalf("after the reset: %s %s", en.typ, en.workerID)
		}
	case <-time.After(waitFor):
		t.Fatal("nothing after the reset")
	}
}
