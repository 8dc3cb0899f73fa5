package events

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rbee-hive/rbee-hive/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor bounds every wait of the tests; it is a hang guard, not a timing
// assertion.
const waitFor = 20 * time.Second

type env struct {
	reg   *registry.Registry
	hub   *Hub
	srv   *httptest.Server
	drops atomic.Int64
	conns atomic.Int64 // connections the server accepted

	stopHub func() // stops the hub and waits for Run; safe to call twice
}

// newEnv starts a real registry, a hub and an HTTP server on 127.0.0.1.
// Everything stops in cleanup.
func newEnv(t testing.TB, cfg Config, prepare ...func(*Hub)) *env {
	t.Helper()
	e := &env{}
	reg, err := registry.Open(registry.Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	e.reg = reg
	cfg.Registry = reg
	if cfg.OnDrop == nil {
		cfg.OnDrop = func() { e.drops.Add(1) }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e.hub = New(cfg)
	for _, p := range prepare {
		p(e.hub)
	}
	e.srv = httptest.NewUnstartedServer(e.hub)
	e.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			e.conns.Add(1)
		}
	}
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.hub.Run(ctx) }()
	var stopOnce sync.Once
	e.stopHub = func() {
		stopOnce.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		e.stopHub()
		reg.Close()
	})
	return e
}

// watch opens a Watch stream, closed in cleanup.
func (e *env) watch(t testing.TB, opts WatchOptions) *Stream {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RetryInitial == 0 {
		opts.RetryInitial = 5 * time.Millisecond
		opts.RetryMax = 50 * time.Millisecond
	}
	hc := &http.Client{Transport: &http.Transport{}}
	s, err := Watch(context.Background(), e.srv.URL, "", hc, opts)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	t.Cleanup(func() {
		s.Close()
		hc.CloseIdleConnections()
	})
	return s
}

func next(t testing.TB, s *Stream) Event {
	t.Helper()
	select {
	case ev, ok := <-s.Events():
		if !ok {
			t.Fatalf("stream ended: %v", s.Err())
		}
		return ev
	case <-time.After(waitFor):
		t.Fatal("no event")
	}
	panic("unreachable")
}

func register(t testing.TB, reg *registry.Registry, id string) registry.Worker {
	t.Helper()
	w, err := reg.Register(registry.Worker{ID: id, ModelRef: "hf:org/m", Backend: "cpu", Port: 9000})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func setState(t testing.TB, reg *registry.Registry, id string, st registry.State, fn ...func(*registry.Worker)) {
	t.Helper()
	if _, err := reg.Update(id, func(w *registry.Worker) error {
		w.State = st
		for _, f := range fn {
			f(w)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// rawStream is an SSE response read line by line, for the wire format.
type rawStream struct {
	conn net.Conn
	br   *bufio.Reader
}

// rawGet sends GET path with extra header lines over a plain TCP
// connection and returns the status line's code and the stream.
func rawGet(t testing.TB, srvURL, path string, header ...string) (int, *rawStream) {
	t.Helper()
	addr := strings.TrimPrefix(srvURL, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	for _, h := range header {
		req += h + "\r\n"
	}
	if _, err := conn.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	rs := &rawStream{conn: conn, br: bufio.NewReader(resp.Body)}
	return resp.StatusCode, rs
}

// frame reads one SSE block (lines up to a blank line), comments included.
func (r *rawStream) frame(t testing.TB) []string {
	t.Helper()
	var lines []string
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v (so far %q)", err, lines)
		}
		line = strings.TrimRight(line, "\n")
		if line == "" {
			return lines
		}
		lines = append(lines, line)
	}
}

func field(lines []string, name string) string {
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, name+": "); ok {
			return v
		}
	}
	return ""
}

func wid(i int) string { return fmt.Sprintf("worker-%03d", i) }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }
