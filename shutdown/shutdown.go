package shutdown

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultTimeout is used when Config.Timeout is not positive.
const DefaultTimeout = 30 * time.Second

// Config configures a Coordinator.
type Config struct {
	// Timeout bounds the whole drain: hooks and worker stop.
	Timeout time.Duration
	// LeaveWorkers detaches from the workers instead of stopping them, for
	// the next hive to re-adopt (upgrade without downtime).
	LeaveWorkers bool
	Logger       *slog.Logger
	// Signals that request a shutdown; nil means SIGTERM and SIGINT. A
	// second one during the drain cuts it short.
	Signals []os.Signal
}

// WorkerStopper stops or abandons every worker; *monitor.Monitor satisfies
// it. StopAll must return when ctx ends, having escalated as far as it can.
type WorkerStopper interface {
	StopAll(ctx context.Context)
	Detach()
}

// Errors Run returns.
var (
	// ErrAlreadyRunning: Run was called twice.
	ErrAlreadyRunning = errors.New("shutdown: Run already called")
	// ErrInterrupted: a second signal cut the drain short.
	ErrInterrupted = errors.New("shutdown: drain interrupted by a second signal")
)

// Coordinator turns a shutdown request into one ordered drain. Safe for
// concurrent use.
type Coordinator struct {
	cfg     Config
	log     *slog.Logger
	workers WorkerStopper
	hooks   []func()

	once      sync.Once
	requested chan struct{}
	shutting  atomic.Bool
	reason    atomic.Pointer[string]
	running   atomic.Bool
	sigs      chan os.Signal
}

// New creates a coordinator. workers may be nil (nothing to stop), a typed
// nil pointer included. beforeStop hooks run in order
// once the drain starts, before the workers are stopped: cancel downloads,
// publish "shutting down".
func New(cfg Config, workers WorkerStopper, beforeStop ...func()) *Coordinator {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if len(cfg.Signals) == 0 {
		cfg.Signals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	}
	if v := reflect.ValueOf(workers); workers != nil && v.Kind() == reflect.Pointer && v.IsNil() {
		workers = nil
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Coordinator{
		cfg:       cfg,
		log:       log.With("component", "shutdown"),
		workers:   workers,
		hooks:     beforeStop,
		requested: make(chan struct{}),
		sigs:      make(chan os.Signal, 2),
	}
	// Caught from here on, so a signal between New and Run (while the
	// daemon finishes starting) is not the default action of killing it.
	signal.Notify(c.sigs, cfg.Signals...)
	return c
}

// RequestShutdown starts the shutdown. Only the first call counts; it never
// blocks.
func (c *Coordinator) RequestShutdown(reason string) {
	c.once.Do(func() {
		c.reason.Store(&reason)
		c.shutting.Store(true)
		close(c.requested)
		c.log.Info("shutdown requested", "reason", reason)
	})
}

// ShuttingDown reports whether a shutdown was requested.
func (c *Coordinator) ShuttingDown() bool { return c.shutting.Load() }

// Requested is closed when a shutdown is requested.
func (c *Coordinator) Requested() <-chan struct{} { return c.requested }

// Reason returns what requested the shutdown ("" before one was).
func (c *Coordinator) Reason() string {
	if r := c.reason.Load(); r != nil {
		return *r
	}
	return ""
}

// Run waits for RequestShutdown or one of the signals, then drains: the
// beforeStop hooks in order, then every worker stopped (or detached with
// LeaveWorkers), all within Config.Timeout. It returns nil when the drain
// finished in time, an error matching context.DeadlineExceeded when it did
// not, ErrInterrupted when a second signal cut it short, and ctx.Err() when
// ctx ended before any request (nothing drained). The signals are caught
// from New until Run returns; call Run once, soon after New.
func (c *Coordinator) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	sigs := c.sigs
	defer signal.Stop(sigs)

	select {
	case <-ctx.Done():
		return ctx.Err()
	case s := <-sigs:
		c.RequestShutdown("signal " + s.String())
	case <-c.requested:
	}

	drainCtx, cancel := context.WithTimeoutCause(ctx, c.cfg.Timeout,
		fmt.Errorf("shutdown.timeout %s passed", c.cfg.Timeout))
	defer cancel()
	interrupted := make(chan struct{})
	watchDone := make(chan struct{})
	go func() { // a second signal cuts the drain short
		defer close(watchDone)
		select {
		case s := <-sigs:
			c.log.Warn("second signal: cutting the drain short", "signal", s.String())
			close(interrupted)
			cancel()
		case <-drainCtx.Done():
		}
	}()
	defer func() { cancel(); <-watchDone }()

	start := time.Now()
	c.log.Info("draining", "timeout", c.cfg.Timeout, "leave_workers", c.cfg.LeaveWorkers)
	hooksDone := c.runHooks(drainCtx)
	if c.workers != nil {
		if c.cfg.LeaveWorkers {
			c.workers.Detach()
			c.log.Info("workers left running for the next hive")
		} else {
			c.workers.StopAll(drainCtx)
		}
	}
	// A hook still running when StopAll returns gets what is left.
	select {
	case <-hooksDone:
	case <-drainCtx.Done():
	}

	select {
	case <-interrupted:
		return ErrInterrupted
	default:
	}
	if err := drainCtx.Err(); err != nil {
		c.log.Error("drain did not finish in time", "elapsed", time.Since(start), "cause", context.Cause(drainCtx))
		return fmt.Errorf("shutdown: %w (%v)", err, context.Cause(drainCtx))
	}
	c.log.Info("drained", "elapsed", time.Since(start))
	return nil
}

// runHooks runs the hooks in order in one goroutine and waits for them until
// ctx ends; the returned channel is closed when they have all returned. A
// hook that overruns the deadline must not keep the workers running, so the
// drain goes on without it.
func (c *Coordinator) runHooks(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i, h := range c.hooks {
			func() {
				defer func() {
					if p := recover(); p != nil {
						c.log.Error("shutdown hook panicked", "hook", i, "panic", p)
					}
				}()
				h()
			}()
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
		c.log.Warn("shutdown hooks did not finish before the deadline; stopping workers anyway")
	}
	return done
}
