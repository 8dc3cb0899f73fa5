package events

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"
)

// The server's read and write timeouts (set for ordinary requests) must not
// end a stream.
func TestStreamOutlivesServerTimeouts(t *testing.T) {
	h := New(Config{Heartbeat: 20 * time.Millisecond, Logger: quiet()})
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ReadTimeout = 100 * time.Millisecond
	srv.Config.WriteTimeout = 100 * time.Millisecond
	srv.Start()
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() { cancel(); <-done }()

	_, rs := rawGet(t, srv.URL, "/v1/events")
	rs.frame(t)
	start := time.Now()
	pings := 0
	for time.Since(start) < 400*time.Millisecond {
		if f := rs.frame(t); len(f) == 1 && f[0] == ": ping" {
			pings++
		}
	}
	if pings < 2 {
		t.Fatalf("%d pings", pings)
	}
}
