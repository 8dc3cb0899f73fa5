// Package restart owns restart policy: what a worker's exit means, whether it
// should run again, and after how long. It is pure mechanism-free policy in
// the manner of Nomad's restart tracker: no goroutines, no processes, the clock
// passed in. Another Go service can use it alone.
//
// A supervisor keeps one Tracker per supervised process. It calls Ready when
// the process has become ready and Exited when it has ended; Exited returns a
// Decision: restart after Delay, or give up and why. Delays grow exponentially
// (cenkalti/backoff/v4) with jitter; more than MaxRestarts restarts within
// Window gives up; a process that stayed ready for StableAfter starts over
// with the initial delay and an empty window.
package restart

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Policy says when an exited worker runs again.
type Policy string

const (
	Always    Policy = "always"     // after any exit the hive did not ask for
	OnFailure Policy = "on-failure" // after a non-clean exit (the default)
	Never     Policy = "never"      // never
)

// ErrUnknownPolicy is returned by ParsePolicy.
var ErrUnknownPolicy = errors.New("unknown restart policy")

// ParsePolicy parses "always", "on-failure" or "never" ("" is on-failure).
func ParsePolicy(s string) (Policy, error) {
	switch Policy(s) {
	case "":
		return OnFailure, nil
	case Always, OnFailure, Never:
		return Policy(s), nil
	}
	return "", fmt.Errorf("%w %q (want always, on-failure or never)", ErrUnknownPolicy, s)
}

// ExitKind classifies how a worker ended.
type ExitKind string

const (
	ExitClean       ExitKind = "clean"        // exit status 0, not asked to stop
	ExitError       ExitKind = "error"        // non-zero exit status
	ExitSignal      ExitKind = "signal"       // killed by a signal the hive did not send
	ExitStopped     ExitKind = "stopped"      // the hive stopped it on purpose
	ExitUnhealthy   ExitKind = "unhealthy"    // the hive killed it after failed health probes
	ExitStartFailed ExitKind = "start_failed" // never became ready (timeout, exec error)
)

// Exit is one classified exit.
type Exit struct {
	Kind   ExitKind
	Code   int    // exit status when Kind is ExitClean or ExitError
	Signal string // signal name when killed by a signal
}

// Classify turns a process outcome into an Exit. stopped means the hive asked
// for the stop, which wins over everything else; unhealthy means the hive
// killed it for failing health probes.
//
// code and signal are kept in the Exit whatever its kind, so the record of a
// stopped or unhealthy worker still says how the process ended. A start that
// never became ready is not visible in a process outcome; callers build
// Exit{Kind: ExitStartFailed} themselves.
func Classify(code int, signal string, stopped, unhealthy bool) Exit {
	e := Exit{Code: code, Signal: signal}
	switch {
	case stopped:
		e.Kind = ExitStopped
	case unhealthy:
		e.Kind = ExitUnhealthy
	case signal != "":
		e.Kind = ExitSignal
	case code == 0:
		e.Kind = ExitClean
	default:
		e.Kind = ExitError
	}
	return e
}

// ShouldRestart reports whether policy p restarts after exit e. attempt is
// the number of restarts already made in the current window; it does not
// enforce the budget (Tracker does) but is part of the signature so policies
// that cap attempts stay expressible.
//
// A stop the hive asked for is never restarted, whatever the policy. An
// unknown policy or exit kind never restarts: doing nothing is the safe
// answer to something this package does not understand.
func ShouldRestart(p Policy, e Exit, attempt int) bool {
	_ = attempt // no built-in policy caps attempts; see Tracker for the budget
	switch e.Kind {
	case ExitStopped:
		return false
	case ExitClean:
		return p == Always
	case ExitError, ExitSignal, ExitUnhealthy, ExitStartFailed:
		return p == Always || p == OnFailure
	}
	return false
}

// Backoff configures the delay between restarts. Max caps the nominal delay
// and jitter is applied after it, as in backoff/v4, so with the defaults the
// longest delay is 72s.
type Backoff struct {
	Initial    time.Duration // 1s
	Max        time.Duration // 60s
	Multiplier float64       // 2
	Jitter     float64       // 0.2: each delay is within ±20% of the nominal one
}

// Config is a whole restart configuration.
type Config struct {
	Backoff     Backoff
	MaxRestarts int           // more than this many restarts within Window gives up (5)
	Window      time.Duration // 10m
	StableAfter time.Duration // ready this long resets the backoff and the count (5m)
}

// DefaultConfig returns the defaults of DESIGN.md.
func DefaultConfig() Config {
	return Config{
		Backoff: Backoff{
			Initial:    time.Second,
			Max:        60 * time.Second,
			Multiplier: 2,
			Jitter:     0.2,
		},
		MaxRestarts: 5,
		Window:      10 * time.Minute,
		StableAfter: 5 * time.Minute,
	}
}

// ErrInvalidConfig is matched (errors.Is) by every error Validate returns.
var ErrInvalidConfig = errors.New("invalid restart config")

// ConfigError names the config key of an invalid field, so a caller can
// point the operator at the exact line to fix.
type ConfigError struct {
	Key     string // e.g. "restart.backoff.multiplier"
	Problem string // e.g. "must be >= 1"
}

func (e *ConfigError) Error() string { return e.Key + " " + e.Problem }

// Is makes every ConfigError match ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Validate reports the first invalid field by its config key name.
func (c Config) Validate() error {
	bad := func(key, problem string) error { return &ConfigError{Key: key, Problem: problem} }
	b := c.Backoff
	switch {
	case b.Initial <= 0:
		return bad("restart.backoff.initial", "must be > 0")
	case b.Max < b.Initial:
		return bad("restart.backoff.max", "must be >= restart.backoff.initial")
	case !(b.Multiplier >= 1): // also rejects NaN
		return bad("restart.backoff.multiplier", "must be >= 1")
	case !(b.Jitter >= 0 && b.Jitter < 1):
		return bad("restart.backoff.jitter", "must be in [0, 1)")
	case c.MaxRestarts < 0:
		return bad("restart.max_restarts", "must be >= 0")
	case c.Window <= 0:
		return bad("restart.window", "must be > 0")
	case c.StableAfter <= 0:
		return bad("restart.stable_after", "must be > 0")
	}
	return nil
}

// Decision is what a Tracker says after an exit.
type Decision struct {
	Restart bool
	Delay   time.Duration // how long to wait before starting again
	Attempt int           // 1 for the first restart in the window
	Reason  string        // why: "policy never", "restart budget exhausted: 6 restarts in 10m0s", ...
}

// Tracker keeps one worker's restart history. It is not safe for concurrent
// use; the caller owns it (one per supervised worker).
type Tracker struct {
	cfg    Config
	policy Policy
	rand   func() float64

	// nominal yields the un-jittered delays. Its RandomizationFactor is 0
	// because backoff/v4 draws its jitter from the global math/rand, which a
	// test cannot control; the jitter is applied here with t.rand instead.
	nominal *backoff.ExponentialBackOff
	clock   *fixedClock

	restarts []time.Time // allowed restarts still inside the window, oldest first
	total    int
	readyAt  time.Time // zero when not ready since the last exit
}

// fixedClock feeds backoff/v4 the caller's time, so the tracker never reads
// the wall clock.
type fixedClock struct{ now time.Time }

func (c *fixedClock) Now() time.Time { return c.now }

// NewTracker starts a history for one worker. rand supplies jitter in [0,1);
// nil means math/rand/v2. An empty policy is OnFailure. cfg should have
// passed Validate.
func NewTracker(cfg Config, p Policy, rand func() float64) *Tracker {
	if p == "" {
		p = OnFailure
	}
	if rand == nil {
		rand = randFloat64
	}
	clock := &fixedClock{}
	nominal := &backoff.ExponentialBackOff{
		InitialInterval:     cfg.Backoff.Initial,
		RandomizationFactor: 0,
		Multiplier:          cfg.Backoff.Multiplier,
		MaxInterval:         cfg.Backoff.Max,
		MaxElapsedTime:      0, // never stop; the budget decides when to give up
		Stop:                backoff.Stop,
		Clock:               clock,
	}
	nominal.Reset()
	return &Tracker{cfg: cfg, policy: p, rand: rand, nominal: nominal, clock: clock}
}

func randFloat64() float64 { return rand.Float64() }

// Ready records that the worker became ready at now.
func (t *Tracker) Ready(now time.Time) { t.readyAt = now }

// Exited records an exit at now and decides what to do.
func (t *Tracker) Exited(e Exit, now time.Time) Decision {
	t.clock.now = now
	if !t.readyAt.IsZero() && now.Sub(t.readyAt) >= t.cfg.StableAfter {
		// It ran well for long enough: this exit starts a fresh history.
		t.nominal.Reset()
		t.restarts = t.restarts[:0]
	}
	t.readyAt = time.Time{}

	t.dropOutsideWindow(now)
	if !ShouldRestart(t.policy, e, len(t.restarts)) {
		return Decision{Reason: noRestartReason(t.policy, e)}
	}
	attempt := len(t.restarts) + 1
	if attempt > t.cfg.MaxRestarts {
		return Decision{
			Attempt: attempt,
			Reason:  fmt.Sprintf("restart budget exhausted: %d restarts in %s", attempt, t.cfg.Window),
		}
	}
	t.restarts = append(t.restarts, now)
	t.total++
	return Decision{
		Restart: true,
		Delay:   t.jitter(t.nominal.NextBackOff()),
		Attempt: attempt,
		Reason:  fmt.Sprintf("policy %s after %s exit", t.policy, e.Kind),
	}
}

// Restarts returns how many restarts the tracker has allowed in total.
func (t *Tracker) Restarts() int { return t.total }

// dropOutsideWindow forgets restarts that happened Window or longer ago.
func (t *Tracker) dropOutsideWindow(now time.Time) {
	keep := 0
	for keep < len(t.restarts) && now.Sub(t.restarts[keep]) >= t.cfg.Window {
		keep++
	}
	t.restarts = append(t.restarts[:0], t.restarts[keep:]...)
}

// jitter spreads d uniformly over [d(1-j), d(1+j)) so that workers that
// crashed together do not restart together.
func (t *Tracker) jitter(d time.Duration) time.Duration {
	j := t.cfg.Backoff.Jitter
	if j == 0 {
		return d
	}
	return time.Duration(float64(d) * (1 - j + 2*j*t.rand()))
}

func noRestartReason(p Policy, e Exit) string {
	switch {
	case e.Kind == ExitStopped:
		return "stopped by the hive"
	case p == Never:
		return "policy never"
	case p == OnFailure && e.Kind == ExitClean:
		return "policy on-failure after clean exit"
	case p != Always && p != OnFailure:
		return fmt.Sprintf("unknown policy %q", p)
	}
	return fmt.Sprintf("policy %s does not restart after %q exit", p, e.Kind)
}
