package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// PushConfig configures a Pusher (config queen.url and queen.token). Zero
// values take the defaults named.
type PushConfig struct {
	// URL receives the POSTs, as configured (e.g.
	// http://queen:7833/v1/hives/events). Empty: Run returns at once.
	URL string
	// Token, when set, is sent as Authorization: Bearer.
	Token string
	// HTTPClient sends the batches (default: a plain client; every attempt
	// is bounded by Timeout).
	HTTPClient *http.Client
	// Timeout bounds one POST attempt (default 10s).
	Timeout time.Duration
	// BatchSize and BatchDelay bound a batch: at most BatchSize events
	// (100), sent at most BatchDelay (100ms) after its first event.
	BatchSize  int
	BatchDelay time.Duration
	// MaxBuffer is how many events may wait while queen does not answer
	// (10,000); past it they are discarded and a reset follows.
	MaxBuffer int
	// RetryInitial and RetryMax bound the retry backoff (100ms, 10s).
	RetryInitial, RetryMax time.Duration
	// FlushTimeout bounds the last delivery once the hub has stopped: what
	// the hub emitted last (a drain's shutdown notice and worker removals)
	// is sent for up to this long (2s).
	FlushTimeout time.Duration
	Logger       *slog.Logger
}

// Pusher sends the hub's events to queen-rbee; see the package doc.
type Pusher struct {
	cfg PushConfig
	hub *Hub
	log *slog.Logger

	overflows atomic.Int64 // times the buffer overflowed (tests read it)
}

// NewPusher creates a pusher of h's events; nothing happens until Run.
func NewPusher(cfg PushConfig, h *Hub) *Pusher {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 100
	}
	if cfg.BatchDelay <= 0 {
		cfg.BatchDelay = 100 * time.Millisecond
	}
	if cfg.MaxBuffer <= 0 {
		cfg.MaxBuffer = 10000
	}
	if cfg.RetryInitial <= 0 {
		cfg.RetryInitial = 100 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 10 * time.Second
	}
	if cfg.FlushTimeout <= 0 {
		cfg.FlushTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Pusher{cfg: cfg, hub: h, log: cfg.Logger}
}

// Run pushes until ctx ends or the hub stops, and then returns nil. It
// never blocks the hub: while queen is unreachable events wait in the
// pusher's own bounded queue. Ending ctx stops it at once; the hub stopping
// ends it gracefully: what the hub emitted last is delivered first, for up
// to FlushTimeout. So at shutdown stop the hub, then wait for Run.
func (p *Pusher) Run(ctx context.Context) error {
	if p.cfg.URL == "" {
		return nil
	}
	for {
		res, err := p.hub.subscribe(subscribeRequest{buffer: p.cfg.MaxBuffer})
		if err != nil {
			return nil // the hub stopped
		}
		err = p.pump(ctx, res)
		p.hub.unsubscribe(res.sub)
		if ctx.Err() != nil || errors.Is(err, errHubStopped) {
			return nil
		}
		p.overflows.Add(1)
		p.log.Warn("events: push: more events waited for queen than the buffer holds; they were discarded and a reset follows", "buffer", p.cfg.MaxBuffer)
	}
}

// pump sends a reset and then every event of one subscription, until the
// subscription ends (its error) or ctx does.
func (p *Pusher) pump(ctx context.Context, res subscribeResult) error {
	s := res.sub
	snap, skip := p.hub.snapshot()
	reset, err := encode(&Event{ID: res.pos, Type: TypeReset, Time: time.Now(), Snapshot: &snap}, 0)
	if err != nil {
		return fmt.Errorf("events: push: encoding the reset: %w", err)
	}
	keep := func(e *entry) bool { return e.regSeq == 0 || e.regSeq > skip }
	if err := p.send(ctx, s.done, [][]byte{reset.data}); err != nil {
		if errors.Is(err, errSubscriptionEnded) {
			return p.flush(ctx, s, [][]byte{reset.data}, keep)
		}
		return err
	}
	batch := make([][]byte, 0, p.cfg.BatchSize)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		batch = batch[:0]
		add := func(e *entry) {
			if keep(e) {
				batch = append(batch, e.data)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return p.flush(ctx, s, batch, keep)
		case e := <-s.ch:
			add(e)
		}
		timer.Reset(p.cfg.BatchDelay)
	collect:
		for len(batch) < p.cfg.BatchSize {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-s.done:
				return p.flush(ctx, s, batch, keep)
			case e := <-s.ch:
				add(e)
			case <-timer.C:
				break collect
			}
		}
		timer.Stop()
		if len(batch) == 0 {
			continue
		}
		if err := p.send(ctx, s.done, batch); err != nil {
			if errors.Is(err, errSubscriptionEnded) {
				return p.flush(ctx, s, batch, keep)
			}
			return err
		}
	}
}

// flush ends a subscription. One the hub ended because it stopped still
// holds its last events: they go out in order, for up to FlushTimeout or
// until ctx ends. A subscription dropped for any other reason is not
// flushed (a reset follows).
func (p *Pusher) flush(ctx context.Context, s *subscriber, batch [][]byte, keep func(*entry) bool) error {
	reason := p.hub.reason(s)
	if !errors.Is(reason, errHubStopped) {
		return reason
	}
	for more := true; more; {
		select {
		case e := <-s.ch:
			if keep(e) {
				batch = append(batch, e.data)
			}
		default:
			more = false
		}
	}
	if len(batch) == 0 {
		return reason
	}
	flushCtx, cancel := context.WithTimeout(ctx, p.cfg.FlushTimeout)
	defer cancel()
	for len(batch) > 0 {
		n := min(len(batch), p.cfg.BatchSize)
		if err := p.send(flushCtx, nil, batch[:n]); err != nil {
			p.log.Warn("events: push: the last events did not reach queen before the hive stopped", "events", len(batch), "err", err)
			return reason
		}
		batch = batch[n:]
	}
	return reason
}

// send POSTs one batch until queen takes it, ctx ends or dropped closes
// (the subscription ended: a reset follows; nil for the final flush).
func (p *Pusher) send(ctx context.Context, dropped <-chan struct{}, events [][]byte) error {
	var body bytes.Buffer
	body.WriteString(`{"events":[`)
	for i, e := range events {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(e)
	}
	body.WriteString("]}")

	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = p.cfg.RetryInitial
	bo.MaxInterval = p.cfg.RetryMax
	bo.MaxElapsedTime = 0 // order matters: never skip a batch; overflow ends it
	for attempt := 1; ; attempt++ {
		err := p.post(ctx, body.Bytes())
		if err == nil {
			return nil
		}
		wait := bo.NextBackOff()
		p.log.Warn("events: push to queen failed; retrying", "url", p.cfg.URL, "attempt", attempt, "events", len(events), "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-dropped:
			t.Stop()
			return errSubscriptionEnded
		case <-t.C:
		}
		select {
		case <-dropped: // dropped while waiting: never send a stale batch
			return errSubscriptionEnded
		default:
		}
	}
}

// errSubscriptionEnded is send's answer when its subscription ended while
// a batch waited for a retry; the caller asks the hub why.
var errSubscriptionEnded = errors.New("events: push: subscription ended")

func (p *Pusher) post(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if p.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+p.cfg.Token)
	}
	resp, err := p.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("push: queen answered HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}
