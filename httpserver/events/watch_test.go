package events

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// A scripted hive (a test double of the far end of the wire) checks what the
// client does with repeats, an id going down after a reset, a silent
// connection and a refusal.
func TestWatchResumesDedupesAndStops(t *testing.T) {
	frame := func(id uint64, typ string) string {
		return fmt.Sprintf("id: %d\nevent: %s\ndata: {\"id\":%d,\"type\":%q,\"time\":\"2026-01-02T03:04:05.123456789Z\"}\n\n", id, typ, id, typ)
	}
	var mu sync.Mutex
	var lastIDs []string
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n := len(lastIDs)
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		if n == 4 {
			http.Error(w, `{"error":{"code":"UNAUTHORIZED"}}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		switch n {
		case 0:
			io.WriteString(w, "id: 10\n\n: ping\n\n"+frame(11, TypeWorkerRegistered)+"event: junk\ndata: {not json\n\n"+frame(12, TypeWorkerRemoved)+frame(13, TypeWorkerRegistered))
		case 1:
			// 12 and 13 again, then a hive that restarted with lower ids.
			io.WriteString(w, frame(12, TypeWorkerRemoved)+frame(13, TypeWorkerRegistered)+frame(14, TypeWorkerRemoved)+frame(5, TypeReset)+frame(6, TypeWorkerRegistered))
		case 2:
			// Headers, then silence: the client's idle timeout must fire.
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-release:
			}
		case 3:
			io.WriteString(w, frame(7, TypeHiveShuttingDown))
		}
	}))
	defer srv.Close()
	defer close(release)

	hc := &http.Client{Transport: &http.Transport{}, Timeout: time.Millisecond} // Timeout must not apply to the stream
	defer hc.CloseIdleConnections()
	s, err := Watch(t.Context(), srv.URL+"/", "tok", hc, WatchOptions{
		IdleTimeout: 100 * time.Millisecond, RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []string
	for ev := range s.Events() {
		got = append(got, fmt.Sprintf("%d %s", ev.ID, ev.Type))
	}
	want := []string{"11 worker_registered", "12 worker_removed", "13 worker_registered", "14 worker_removed", "5 reset", "6 worker_registered", "7 hive_shutting_down"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("delivered %v\nwant      %v", got, want)
	}
	var se *StatusError
	if !errors.As(s.Err(), &se) || se.Status != http.StatusUnauthorized {
		t.Fatalf("Err = %v, want the 401", s.Err())
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(lastIDs) != fmt.Sprint([]string{"", "13", "6", "6", "7"}) {
		t.Fatalf("Last-Event-ID sent: %q", lastIDs)
	}
	if s.LastEventID() != 7 {
		t.Fatalf("LastEventID %d", s.LastEventID())
	}
}

func TestWatchFirstConnectErrors(t *testing.T) {
	e := newEnv(t, Config{})
	if _, err := Watch(t.Context(), "http://127.0.0.1:1", "", nil, WatchOptions{}); err == nil {
		t.Fatal("Watch of a closed port succeeded")
	}
	if _, err := Watch(t.Context(), "://bad", "", nil, WatchOptions{}); err == nil {
		t.Fatal("Watch of a bad URL succeeded")
	}
	// Cancelling the context ends the stream with the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	s, err := Watch(ctx, e.srv.URL, "", hc, WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	for range s.Events() {
	}
	if !errors.Is(s.Err(), context.Canceled) {
		t.Fatalf("Err after cancel: %v", s.Err())
	}
	s.Close()
}

func TestHubStopEndsStreams(t *testing.T) {
	h := New(Config{Logger: quiet()})
	srv := httptest.NewServer(h)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	waitUntil(t, "Run started", h.running.Load)
	if err := h.Run(ctx); err == nil {
		t.Fatal("a second Run succeeded")
	}
	_, rs := rawGet(t, srv.URL, "/v1/events")
	rs.frame(t)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := rs.br.ReadString('\n'); err != io.EOF {
		t.Fatalf("stream after the hub stopped: %v", err)
	}
	resp, err := http.Get(srv.URL + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"SHUTTING_DOWN"`) {
		t.Fatalf("after stop: %d %s", resp.StatusCode, body)
	}
	http.DefaultClient.CloseIdleConnections()
}
