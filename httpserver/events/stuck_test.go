//go:build unix

package events

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/registry"
)

// A consumer that never reads its socket is dropped while 50 workers churn
// in a real registry; the healthy consumer sees every event on its first
// connection, and the hive never waits.
func TestStuckConsumerDropped(t *testing.T) {
	e := newEnv(t, Config{SubscriberBuffer: 64})
	healthy := e.watch(t, WatchOptions{Buffer: 256})

	// The stuck consumer: a small receive window, a request, and no read.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	stuck, err := d.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stuck.Close() })
	if _, err := stuck.Write([]byte("GET /v1/events HTTP/1.1\r\nHost: " + addr + "\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the stuck consumer subscribed", func() bool { return e.hub.subscribers() == 2 })

	const workers = 50
	var prev uint64
	readRound := func(n int) {
		for range n {
			ev := next(t, healthy)
			if prev != 0 && ev.ID != prev+1 {
				t.Fatalf("healthy consumer: id %d after %d", ev.ID, prev)
			}
			prev = ev.ID
		}
	}
	for i := range workers {
		register(t, e.reg, wid(i))
	}
	readRound(workers)

	// Churn: every round, all 50 workers change state at once.
	state := registry.StateIdle
	churn := func() {
		var wg sync.WaitGroup
		for i := range workers {
			wg.Go(func() {
				if _, err := e.reg.Update(wid(i), func(w *registry.Worker) error { w.State = state; return nil }); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		readRound(workers)
		if state == registry.StateIdle {
			state = registry.StateBusy
		} else {
			state = registry.StateIdle
		}
	}
	rounds := 0
	for e.drops.Load() == 0 {
		if rounds++; rounds > 5000 {
			t.Fatalf("the stuck consumer was not dropped after %d rounds", rounds)
		}
		churn()
	}
	t.Logf("dropped after %d rounds (%d events)", rounds, rounds*workers)

	// The hive closed the stuck connection: reading it drains to EOF.
	_ = stuck.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := io.Copy(io.Discard, stuck); err != nil {
		t.Fatalf("the stuck connection was not closed by the hive: %v", err)
	}
	churn()
	if n := e.drops.Load(); n != 1 {
		t.Fatalf("%d drops, want 1", n)
	}
	if n := e.conns.Load(); n != 2 {
		t.Fatalf("%d connections: the healthy consumer had to reconnect", n)
	}
	if n := e.hub.subscribers(); n != 1 {
		t.Fatalf("%d subscribers left, want the healthy one", n)
	}
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting until %s", what)
		case <-time.After(2 * time.Millisecond):
		}
	}
}
