// Package restart owns restart policy: what a worker's exit means, whether it
// should run again, and after how long. It is pure mechanism-free policy in
// the manner of Nomad's restart tracker: no goroutines, no processes, the clock
// passed in. Another Go service can use it alone.
package restart

import (
	"errors"
	"time"
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
func ParsePolicy(s string) (Policy, error) { panic("restart: not implemented") }

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
func Classify(code int, signal string, stopped, unhealthy bool) Exit {
	panic("restart: not implemented")
}

// ShouldRestart reports whether policy p restarts after exit e. attempt is
// the number of restarts already made in the current window; it does not
// enforce the budget (Tracker does) but is part of the signature so policies
// that cap attempts stay expressible.
func ShouldRestart(p Policy, e Exit, attempt int) bool { panic("restart: not implemented") }

// Backoff configures the delay between restarts.
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
func DefaultConfig() Config { panic("restart: not implemented") }

// Validate reports the first invalid field by its config key name.
func (c Config) Validate() error { panic("restart: not implemented") }

// Decision is what a Tracker says after an exit.
type Decision struct {
	Restart bool
	Delay   time.Duration // how long to wait before starting again
	Attempt int           // 1 for the first restart in the window
	Reason  string        // why: "policy never", "restart budget exhausted: 6 restarts in 10m0s", ...
}

// Tracker keeps one worker's restart history. It is not safe for concurrent
// use; the caller owns it (one per supervised worker).
type Tracker struct{}

// NewTracker starts a history for one worker. rand supplies jitter in [0,1);
// nil means math/rand/v2.
func NewTracker(cfg Config, p Policy, rand func() float64) *Tracker {
	panic("restart: not implemented")
}

// Ready records that the worker became ready at now.
func (t *Tracker) Ready(now time.Time) { panic("restart: not implemented") }

// Exited records an exit at now and decides what to do.
func (t *Tracker) Exited(e Exit, now time.Time) Decision { panic("restart: not implemented") }

// Restarts returns how many restarts the tracker has allowed in total.
func (t *Tracker) Restarts() int { panic("restart: not implemented") }
