package events

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// endless is "data: " followed by bytes that never end the line (or,
// with lines, data lines that never end the event), counting what was
// read.
type endless struct {
	n     int64
	lines bool
}

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		switch {
		case e.n < 6:
			p[i] = "data: "[e.n]
		case e.lines && e.n%64 == 63:
			p[i] = '\n'
		case e.lines && e.n%64 < 6:
			p[i] = "data: "[e.n%64]
		default:
			p[i] = 'x'
		}
		e.n++
	}
	return len(p), nil
}

// TestWatchBoundsAnEvent: a peer that sends a data line, or an event, that
// never ends does not make the client buffer without limit: the stream
// fails (and Watch reconnects) once an event exceeds the limit
// (maxEventBytes; 1 MiB here to keep the test fast).
func TestWatchBoundsAnEvent(t *testing.T) {
	for _, lines := range []bool{false, true} {
		src := &endless{lines: lines}
		s := &Stream{events: make(chan Event, 1), done: make(chan struct{})}
		const limit = 1 << 20
		w := &watcher{s: s, maxEvent: limit, opts: WatchOptions{IdleTimeout: time.Hour, Logger: slog.New(slog.DiscardHandler)}}
		st := &stream{body: io.NopCloser(src), cancel: func() {}, idle: time.AfterFunc(time.Hour, func() {})}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := w.read(ctx, st)
		cancel()
		st.idle.Stop()
		if !errors.Is(err, errEventTooLarge) {
			t.Fatalf("lines %v: read = %v after %d bytes, want errEventTooLarge", lines, err, src.n)
		}
		if src.n > 2*limit+64<<10 {
			t.Fatalf("lines %v: read %d bytes before giving up; the limit is %d", lines, src.n, limit)
		}
		if !strings.Contains(err.Error(), "event") {
			t.Fatalf("error %q", err)
		}
	}
}
