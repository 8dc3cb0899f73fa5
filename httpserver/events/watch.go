package events

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// WatchOptions configure Watch. Zero values are sensible.
type WatchOptions struct {
	// Types and WorkerIDs filter the stream (see the package doc).
	Types     []string
	WorkerIDs []string
	// LastEventID resumes after this id. Zero (with Snapshot false) starts
	// with the events after the moment of connecting.
	LastEventID uint64
	// Snapshot, with LastEventID 0, starts the stream with a reset event
	// carrying the full state.
	Snapshot bool
	// Buffer is the capacity of the Events channel (default 64).
	Buffer int
	// IdleTimeout reconnects when nothing, not even a heartbeat, arrived
	// for this long (default 45s: three of the hub's default heartbeats).
	IdleTimeout time.Duration
	// RetryInitial and RetryMax bound the reconnect backoff (default 100ms
	// and 5s).
	RetryInitial, RetryMax time.Duration
	Logger                 *slog.Logger
}

// Stream is a watch in progress. Read Events until it is closed, then Err
// says why.
type Stream struct {
	events chan Event
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	err    error
	closed bool
	lastID uint64
}

// Events delivers events in order, each id once (a reset may repeat an id:
// it summarises everything up to it). It is closed when the stream ends.
func (s *Stream) Events() <-chan Event { return s.events }

// Err says why Events was closed: the context's error, a *StatusError the
// hive answered that retrying cannot fix (401, 400, ...), or nil after
// Close.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// LastEventID returns the id of the last event delivered (or the position
// the stream started at).
func (s *Stream) LastEventID() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastID
}

// Close ends the stream and waits for its goroutine.
func (s *Stream) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	<-s.done
}

// StatusError is a non-200 answer to the stream request.
type StatusError struct {
	Status int
	Body   string // the start of the body (the error envelope)
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("events: GET /v1/events: HTTP %d: %s", e.Status, e.Body)
}

// retryable reports whether reconnecting may help.
func (e *StatusError) retryable() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// Watch connects to baseURL's GET /v1/events (with the bearer token, when
// not empty) and returns once the hive accepted the stream; an error from
// that first attempt is returned as it is. After that it reconnects with
// backoff whenever the stream breaks, resuming after the last event
// delivered, until ctx ends or Close. hc may be nil; its Timeout is ignored
// (a stream has no end), IdleTimeout guards against a silent peer instead.
func Watch(ctx context.Context, baseURL, token string, hc *http.Client, opts WatchOptions) (*Stream, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	c := *hc
	c.Timeout = 0
	if opts.Buffer <= 0 {
		opts.Buffer = 64
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 45 * time.Second
	}
	if opts.RetryInitial <= 0 {
		opts.RetryInitial = 100 * time.Millisecond
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	u, err := url.Parse(strings.TrimRight(baseURL, "/") + "/v1/events")
	if err != nil {
		return nil, fmt.Errorf("events: watch: base URL: %w", err)
	}
	q := u.Query()
	if len(opts.Types) > 0 {
		q.Set("type", strings.Join(opts.Types, ","))
	}
	if len(opts.WorkerIDs) > 0 {
		q.Set("worker_id", strings.Join(opts.WorkerIDs, ","))
	}
	u.RawQuery = q.Encode()

	ctx, cancel := context.WithCancel(ctx)
	w := &watcher{
		hc: &c, url: u.String(), token: token, opts: opts,
		resume: opts.LastEventID != 0 || opts.Snapshot, lastID: opts.LastEventID,
	}
	s := &Stream{events: make(chan Event, opts.Buffer), cancel: cancel, done: make(chan struct{}), lastID: opts.LastEventID}
	w.s = s

	body, err := w.connect(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	go w.run(ctx, body)
	return s, nil
}

type watcher struct {
	hc     *http.Client
	url    string
	token  string
	opts   WatchOptions
	s      *Stream
	resume bool   // send lastID
	lastID uint64 // last id delivered or named by the server
	// maxEvent overrides maxEventBytes (tests); 0 means maxEventBytes.
	maxEvent int
}

// connect opens one stream; the returned body is cancelled with its
// context.
func (w *watcher) connect(ctx context.Context) (*stream, error) {
	sctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, w.url, nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("events: watch: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if w.token != "" {
		req.Header.Set("Authorization", "Bearer "+w.token)
	}
	if w.resume {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(w.lastID, 10))
	}
	resp, err := w.hc.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("events: watch: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		cancel()
		return nil, &StatusError{Status: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	st := &stream{body: resp.Body, cancel: cancel, idle: time.AfterFunc(w.opts.IdleTimeout, cancel)}
	return st, nil
}

// stream is one open response.
type stream struct {
	body   io.ReadCloser
	cancel context.CancelFunc
	idle   *time.Timer // cancels the request when the peer goes silent
}

func (st *stream) close() {
	st.idle.Stop()
	st.cancel()
	st.body.Close()
}

func (w *watcher) run(ctx context.Context, st *stream) {
	defer close(w.s.done)
	defer close(w.s.events)
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = w.opts.RetryInitial
	bo.MaxInterval = w.opts.RetryMax
	bo.MaxElapsedTime = 0 // retry until ctx ends
	for {
		err := w.read(ctx, st)
		st.close()
		if ctx.Err() != nil {
			w.finish(ctx)
			return
		}
		w.opts.Logger.Debug("events: watch: stream broke; reconnecting", "err", err, "last_event_id", w.lastID)
		if err == errGotEvents {
			bo.Reset()
		}
		for {
			select {
			case <-ctx.Done():
				w.finish(ctx)
				return
			case <-time.After(bo.NextBackOff()):
			}
			st, err = w.connect(ctx)
			if err == nil {
				break
			}
			var se *StatusError
			if errors.As(err, &se) && !se.retryable() {
				w.s.mu.Lock()
				w.s.err = err
				w.s.mu.Unlock()
				return
			}
			w.opts.Logger.Debug("events: watch: reconnect failed", "err", err)
		}
	}
}

// finish records why the stream ended: nil after Close, else ctx's error.
func (w *watcher) finish(ctx context.Context) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if !w.s.closed {
		w.s.err = ctx.Err()
	}
}

// maxEventBytes bounds one event on the wire: a reset snapshot of
// thousands of workers fits many times over, and a peer that never ends a
// line or an event costs a bounded read, then a reconnect, instead of
// memory without end.
const maxEventBytes = 32 << 20

var errEventTooLarge = fmt.Errorf("events: watch: an event exceeds %d MiB", maxEventBytes>>20)

// errGotEvents says a stream delivered something before it broke (the
// backoff starts over).
var errGotEvents = errors.New("stream ended after delivering")

// read parses SSE from one response and delivers its events.
func (w *watcher) read(ctx context.Context, st *stream) error {
	limit := w.maxEvent
	if limit <= 0 {
		limit = maxEventBytes
	}
	br := bufio.NewReaderSize(st.body, 64<<10)
	var id, typ string
	var data bytes.Buffer
	got := false
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A long data line: gather it whole (copy first: the next read
			// reuses the buffer line points into), up to maxEventBytes.
			long := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				if len(long) > limit {
					return errEventTooLarge
				}
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil {
			if got {
				return errGotEvents
			}
			return err
		}
		st.idle.Reset(w.opts.IdleTimeout)
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			// Dispatch.
			if id != "" {
				n, perr := strconv.ParseUint(id, 10, 64)
				if perr == nil && data.Len() == 0 {
					// A position without an event: resume from there.
					w.setLast(n)
				}
			}
			if data.Len() > 0 {
				if err := w.deliver(ctx, typ, data.Bytes()); err != nil {
					return err
				}
				got = true
			}
			id, typ = "", ""
			data.Reset()
			continue
		}
		if line[0] == ':' {
			continue // comment: heartbeat
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "id":
			id = string(value)
		case "event":
			typ = string(value)
		case "data":
			if data.Len()+len(value) > limit {
				return errEventTooLarge
			}
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.Write(value)
		}
	}
}

func (w *watcher) setLast(id uint64) {
	w.lastID = id
	w.resume = true
	w.s.mu.Lock()
	w.s.lastID = id
	w.s.mu.Unlock()
}

// deliver decodes one event and hands it on unless it is a repeat.
func (w *watcher) deliver(ctx context.Context, typ string, data []byte) error {
	var ev Event
	if err := json.Unmarshal(data, &ev); err != nil {
		// Skip it rather than fail on it again after every reconnect.
		w.opts.Logger.Warn("events: watch: skipping an event that does not decode", "type", typ, "err", err)
		return nil
	}
	if ev.Type != TypeReset && w.resume && ev.ID <= w.lastID {
		return nil // seen already
	}
	select {
	case w.s.events <- ev:
	case <-ctx.Done():
		return ctx.Err()
	}
	w.setLast(ev.ID)
	return nil
}
