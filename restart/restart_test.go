package restart_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/restart"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func constRand(v float64) func() float64 { return func() float64 { return v } }

// noJitter is the default config without jitter, so delays are nominal.
func noJitter() restart.Config {
	cfg := restart.DefaultConfig()
	cfg.Backoff.Jitter = 0
	return cfg
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		in      string
		want    restart.Policy
		wantErr bool
	}{
		{"", restart.OnFailure, false},
		{"always", restart.Always, false},
		{"on-failure", restart.OnFailure, false},
		{"never", restart.Never, false},
		{"Always", "", true},
		{"on_failure", "", true},
		{"sometimes", "", true},
	}
	for _, tt := range tests {
		got, err := restart.ParsePolicy(tt.in)
		if tt.wantErr {
			if !errors.Is(err, restart.ErrUnknownPolicy) {
				t.Errorf("ParsePolicy(%q) error = %v, want ErrUnknownPolicy", tt.in, err)
			}
			if err != nil && !strings.Contains(err.Error(), tt.in) {
				t.Errorf("ParsePolicy(%q) error %q does not name the input", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParsePolicy(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name               string
		code               int
		signal             string
		stopped, unhealthy bool
		want               restart.Exit
	}{
		{"exit 0", 0, "", false, false, restart.Exit{Kind: restart.ExitClean}},
		{"exit 3", 3, "", false, false, restart.Exit{Kind: restart.ExitError, Code: 3}},
		{"exit -1 without signal", -1, "", false, false, restart.Exit{Kind: restart.ExitError, Code: -1}},
		{"killed", -1, "killed", false, false, restart.Exit{Kind: restart.ExitSignal, Code: -1, Signal: "killed"}},
		{"stopped wins over signal", -1, "terminated", true, false, restart.Exit{Kind: restart.ExitStopped, Code: -1, Signal: "terminated"}},
		{"stopped wins over unhealthy", 0, "", true, true, restart.Exit{Kind: restart.ExitStopped}},
		{"stopped with clean exit", 0, "", true, false, restart.Exit{Kind: restart.ExitStopped}},
		{"unhealthy wins over signal", -1, "killed", false, true, restart.Exit{Kind: restart.ExitUnhealthy, Code: -1, Signal: "killed"}},
		{"unhealthy with exit code", 2, "", false, true, restart.Exit{Kind: restart.ExitUnhealthy, Code: 2}},
	}
	for _, tt := range tests {
		if got := restart.Classify(tt.code, tt.signal, tt.stopped, tt.unhealthy); got != tt.want {
			t.Errorf("%s: Classify = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

var allKinds = []restart.ExitKind{
	restart.ExitClean, restart.ExitError, restart.ExitSignal,
	restart.ExitStopped, restart.ExitUnhealthy, restart.ExitStartFailed,
}

// restartMatrix is DESIGN.md's policy table: policy → exit kind → restart?
var restartMatrix = map[restart.Policy]map[restart.ExitKind]bool{
	restart.Always: {
		restart.ExitClean: true, restart.ExitError: true, restart.ExitSignal: true,
		restart.ExitStopped: false, restart.ExitUnhealthy: true, restart.ExitStartFailed: true,
	},
	restart.OnFailure: {
		restart.ExitClean: false, restart.ExitError: true, restart.ExitSignal: true,
		restart.ExitStopped: false, restart.ExitUnhealthy: true, restart.ExitStartFailed: true,
	},
	restart.Never: {
		restart.ExitClean: false, restart.ExitError: false, restart.ExitSignal: false,
		restart.ExitStopped: false, restart.ExitUnhealthy: false, restart.ExitStartFailed: false,
	},
}

func TestShouldRestartMatrix(t *testing.T) {
	for p, row := range restartMatrix {
		for _, k := range allKinds {
			want, ok := row[k]
			if !ok {
				t.Fatalf("matrix misses %s × %s", p, k)
			}
			for _, attempt := range []int{0, 1, 100} {
				if got := restart.ShouldRestart(p, restart.Exit{Kind: k}, attempt); got != want {
					t.Errorf("ShouldRestart(%s, %s, %d) = %v, want %v", p, k, attempt, got, want)
				}
			}
		}
	}
	// Things the package does not know never restart.
	if restart.ShouldRestart("sometimes", restart.Exit{Kind: restart.ExitError}, 0) {
		t.Error("unknown policy restarted")
	}
	if restart.ShouldRestart(restart.Always, restart.Exit{Kind: "vanished"}, 0) {
		t.Error("unknown exit kind restarted")
	}
}

func TestTrackerFollowsPolicyMatrix(t *testing.T) {
	for p, row := range restartMatrix {
		for _, k := range allKinds {
			tr := restart.NewTracker(noJitter(), p, nil)
			d := tr.Exited(restart.Exit{Kind: k}, t0)
			if d.Restart != row[k] {
				t.Errorf("%s × %s: Restart = %v, want %v (%s)", p, k, d.Restart, row[k], d.Reason)
			}
			if d.Reason == "" {
				t.Errorf("%s × %s: empty reason", p, k)
			}
			wantTotal := 0
			if row[k] {
				wantTotal = 1
				if d.Attempt != 1 || d.Delay != time.Second {
					t.Errorf("%s × %s: attempt %d delay %s, want 1 and 1s", p, k, d.Attempt, d.Delay)
				}
			}
			if tr.Restarts() != wantTotal {
				t.Errorf("%s × %s: Restarts() = %d, want %d", p, k, tr.Restarts(), wantTotal)
			}
		}
	}
}

func TestTrackerReasons(t *testing.T) {
	tests := []struct {
		p    restart.Policy
		k    restart.ExitKind
		want string
	}{
		{restart.Always, restart.ExitStopped, "stopped by the hive"},
		{restart.Never, restart.ExitError, "policy never"},
		{restart.OnFailure, restart.ExitClean, "policy on-failure after clean exit"},
		{"sometimes", restart.ExitError, `unknown policy "sometimes"`},
		{restart.OnFailure, restart.ExitSignal, "policy on-failure after signal exit"},
	}
	for _, tt := range tests {
		d := restart.NewTracker(noJitter(), tt.p, nil).Exited(restart.Exit{Kind: tt.k}, t0)
		if d.Reason != tt.want {
			t.Errorf("%s × %s: reason %q, want %q", tt.p, tt.k, d.Reason, tt.want)
		}
	}
}

func TestEmptyPolicyIsOnFailure(t *testing.T) {
	tr := restart.NewTracker(noJitter(), "", nil)
	if d := tr.Exited(restart.Exit{Kind: restart.ExitClean}, t0); d.Restart {
		t.Error("empty policy restarted a clean exit")
	}
	if d := tr.Exited(restart.Exit{Kind: restart.ExitError}, t0); !d.Restart {
		t.Error("empty policy did not restart an error exit")
	}
}

func TestBackoffGrowsAndCaps(t *testing.T) {
	cfg := noJitter()
	cfg.MaxRestarts = 100
	tr := restart.NewTracker(cfg, restart.Always, nil)
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	now := t0
	for i, w := range want {
		d := tr.Exited(restart.Exit{Kind: restart.ExitError, Code: 1}, now)
		if !d.Restart || d.Delay != w*time.Second || d.Attempt != i+1 {
			t.Fatalf("restart %d: %+v, want delay %s attempt %d", i+1, d, w*time.Second, i+1)
		}
		now = now.Add(time.Second)
	}
	if tr.Restarts() != len(want) {
		t.Errorf("Restarts() = %d, want %d", tr.Restarts(), len(want))
	}
}

func TestBackoffCustomMultiplier(t *testing.T) {
	cfg := noJitter()
	cfg.Backoff = restart.Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 3}
	cfg.MaxRestarts = 10
	tr := restart.NewTracker(cfg, restart.Always, nil)
	for i, w := range []time.Duration{100, 300, 900, 1000, 1000} {
		if d := tr.Exited(restart.Exit{Kind: restart.ExitClean}, t0); d.Delay != w*time.Millisecond {
			t.Fatalf("restart %d: delay %s, want %s", i+1, d.Delay, w*time.Millisecond)
		}
	}
}

func TestJitterBounds(t *testing.T) {
	tests := []struct {
		r        float64
		min, max time.Duration // for a nominal 1s, jitter 0.2
	}{
		{0, 800 * time.Millisecond, 800 * time.Millisecond},
		{0.5, time.Second, time.Second},
		{0.25, 900 * time.Millisecond, 900 * time.Millisecond},
		{math.Nextafter(1, 0), 1199 * time.Millisecond, 1200 * time.Millisecond},
	}
	for _, tt := range tests {
		tr := restart.NewTracker(restart.DefaultConfig(), restart.Always, constRand(tt.r))
		d := tr.Exited(restart.Exit{Kind: restart.ExitError}, t0)
		if d.Delay < tt.min || d.Delay > tt.max {
			t.Errorf("rand %v: delay %s, want in [%s, %s]", tt.r, d.Delay, tt.min, tt.max)
		}
	}

	// With the real random source every delay stays within ±20% of the
	// nominal one, including after the cap.
	cfg := restart.DefaultConfig()
	cfg.MaxRestarts = 1000
	tr := restart.NewTracker(cfg, restart.OnFailure, nil)
	nominal := time.Second
	seen := map[time.Duration]bool{}
	for i := range 200 {
		d := tr.Exited(restart.Exit{Kind: restart.ExitSignal, Signal: "killed"}, t0)
		lo, hi := time.Duration(float64(nominal)*0.8), time.Duration(float64(nominal)*1.2)
		if d.Delay < lo || d.Delay > hi {
			t.Fatalf("restart %d: delay %s outside [%s, %s]", i+1, d.Delay, lo, hi)
		}
		if nominal == 60*time.Second {
			seen[d.Delay] = true
		}
		nominal = min(2*nominal, 60*time.Second)
	}
	if len(seen) < 2 {
		t.Errorf("real jitter produced %d distinct capped delays, want spread", len(seen))
	}
}

func TestBudgetExhaustion(t *testing.T) {
	cfg := noJitter() // 5 restarts within 10m
	tr := restart.NewTracker(cfg, restart.OnFailure, nil)
	crash := restart.Exit{Kind: restart.ExitError, Code: 1}
	for i := range 5 {
		if d := tr.Exited(crash, t0.Add(time.Duration(i)*time.Minute)); !d.Restart || d.Attempt != i+1 {
			t.Fatalf("restart %d refused: %+v", i+1, d)
		}
	}
	d := tr.Exited(crash, t0.Add(5*time.Minute))
	if d.Restart {
		t.Fatalf("6th restart within the window allowed: %+v", d)
	}
	if want := "restart budget exhausted: 6 restarts in 10m0s"; d.Reason != want {
		t.Errorf("reason %q, want %q", d.Reason, want)
	}
	if tr.Restarts() != 5 {
		t.Errorf("Restarts() = %d after refusal, want 5", tr.Restarts())
	}

	// The window slides: once the first restart (at t0) is 10m old, one
	// more fits; the others are still inside, so the next is refused again.
	if d := tr.Exited(crash, t0.Add(10*time.Minute-time.Nanosecond)); d.Restart {
		t.Fatalf("restart allowed 1ns before the oldest left the window: %+v", d)
	}
	d = tr.Exited(crash, t0.Add(10*time.Minute))
	if !d.Restart || d.Attempt != 5 {
		t.Fatalf("restart after the oldest left the window: %+v, want attempt 5", d)
	}
	// Backoff is not reset by the window sliding: 5 earlier delays → 32s.
	if d.Delay != 32*time.Second {
		t.Errorf("delay %s, want 32s (backoff continues)", d.Delay)
	}
	if d := tr.Exited(crash, t0.Add(10*time.Minute+time.Second)); d.Restart {
		t.Fatalf("restart allowed with 5 in the window: %+v", d)
	}
	if tr.Restarts() != 6 {
		t.Errorf("Restarts() = %d, want 6", tr.Restarts())
	}
}

func TestZeroBudgetNeverRestarts(t *testing.T) {
	cfg := noJitter()
	cfg.MaxRestarts = 0
	d := restart.NewTracker(cfg, restart.Always, nil).Exited(restart.Exit{Kind: restart.ExitError}, t0)
	if d.Restart || !strings.Contains(d.Reason, "budget") {
		t.Errorf("MaxRestarts 0: %+v", d)
	}
}

func TestStableRunResets(t *testing.T) {
	cfg := noJitter() // stable after 5m
	crash := restart.Exit{Kind: restart.ExitSignal, Signal: "segmentation fault"}
	tests := []struct {
		name      string
		readyFor  time.Duration
		wantReset bool
	}{
		{"exactly stable_after", 5 * time.Minute, true},
		{"longer", time.Hour, true},
		{"1ns short", 5*time.Minute - time.Nanosecond, false},
		{"briefly", time.Second, false},
	}
	for _, tt := range tests {
		tr := restart.NewTracker(cfg, restart.OnFailure, nil)
		now := t0
		for range 5 { // use the whole budget: delays 1,2,4,8,16s
			if d := tr.Exited(crash, now); !d.Restart {
				t.Fatalf("%s: setup restart refused: %+v", tt.name, d)
			}
			now = now.Add(time.Second)
		}
		tr.Ready(now)
		d := tr.Exited(crash, now.Add(tt.readyFor))
		if tt.wantReset {
			if !d.Restart || d.Attempt != 1 || d.Delay != time.Second {
				t.Errorf("%s: %+v, want restart attempt 1 after 1s", tt.name, d)
			}
		} else if d.Restart && d.Delay == time.Second {
			t.Errorf("%s: reset although not stable: %+v", tt.name, d)
		}
	}
}

func TestReadinessIsForgottenAtExit(t *testing.T) {
	tr := restart.NewTracker(noJitter(), restart.Always, nil)
	crash := restart.Exit{Kind: restart.ExitError, Code: 1}
	tr.Ready(t0)
	tr.Exited(crash, t0.Add(time.Second)) // not stable: 1s
	// Restarted but never became ready again; a long time later it fails to
	// start. The old Ready must not count as a stable period.
	d := tr.Exited(restart.Exit{Kind: restart.ExitStartFailed}, t0.Add(6*time.Minute))
	if !d.Restart || d.Attempt != 2 || d.Delay != 2*time.Second {
		t.Errorf("%+v, want attempt 2 with 2s (no reset)", d)
	}
}

func TestValidate(t *testing.T) {
	if err := restart.DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	tests := []struct {
		key    string
		mutate func(*restart.Config)
	}{
		{"restart.backoff.initial", func(c *restart.Config) { c.Backoff.Initial = 0 }},
		{"restart.backoff.initial", func(c *restart.Config) { c.Backoff.Initial = -time.Second }},
		{"restart.backoff.max", func(c *restart.Config) { c.Backoff.Max = 500 * time.Millisecond }},
		{"restart.backoff.multiplier", func(c *restart.Config) { c.Backoff.Multiplier = 0.5 }},
		{"restart.backoff.multiplier", func(c *restart.Config) { c.Backoff.Multiplier = math.NaN() }},
		{"restart.backoff.jitter", func(c *restart.Config) { c.Backoff.Jitter = -0.1 }},
		{"restart.backoff.jitter", func(c *restart.Config) { c.Backoff.Jitter = 1 }},
		{"restart.max_restarts", func(c *restart.Config) { c.MaxRestarts = -1 }},
		{"restart.window", func(c *restart.Config) { c.Window = 0 }},
		{"restart.stable_after", func(c *restart.Config) { c.StableAfter = 0 }},
		// The first bad field is the one named.
		{"restart.backoff.initial", func(c *restart.Config) { c.Backoff.Initial = 0; c.Window = 0 }},
	}
	for _, tt := range tests {
		cfg := restart.DefaultConfig()
		tt.mutate(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, restart.ErrInvalidConfig) {
			t.Errorf("%s: error %v, want ErrInvalidConfig", tt.key, err)
			continue
		}
		var ce *restart.ConfigError
		if !errors.As(err, &ce) || ce.Key != tt.key || !strings.HasPrefix(err.Error(), tt.key+" must") {
			t.Errorf("error %q, want one naming %s", err, tt.key)
		}
	}
	// Edge values that are fine.
	cfg := restart.DefaultConfig()
	cfg.Backoff = restart.Backoff{Initial: time.Second, Max: time.Second, Multiplier: 1, Jitter: 0}
	cfg.MaxRestarts = 0
	if err := cfg.Validate(); err != nil {
		t.Errorf("edge config rejected: %v", err)
	}
	if got := restart.DefaultConfig().Backoff.Multiplier; got != 2 {
		t.Errorf("default multiplier %v", got)
	}
}

func TestMultiplierErrorMessage(t *testing.T) {
	cfg := restart.DefaultConfig()
	cfg.Backoff.Multiplier = 0.9
	if err := cfg.Validate(); err == nil || err.Error() != "restart.backoff.multiplier must be >= 1" {
		t.Errorf("error %v", err)
	}
}
