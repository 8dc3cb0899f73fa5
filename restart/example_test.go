package restart_test

import (
	"fmt"
	"time"

	"github.com/rbee-hive/rbee-hive/restart"
)

// A supervisor keeps one Tracker per process, tells it when the process
// became ready and when it exited, and does what the Decision says.
func Example() {
	cfg := restart.DefaultConfig() // 1s ×2 up to 60s, jitter 0.2, 5 restarts per 10m
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	policy, err := restart.ParsePolicy("on-failure")
	if err != nil {
		panic(err)
	}
	// A fixed jitter source keeps the output stable; pass nil in production.
	midpoint := func() float64 { return 0.5 }
	tracker := restart.NewTracker(cfg, policy, midpoint)

	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 7 {
		// The process crashed with exit status 1 (os.ProcessState gives code
		// and signal; the supervisor knows whether it asked for the stop).
		exit := restart.Classify(1, "", false, false)
		d := tracker.Exited(exit, now)
		if !d.Restart {
			fmt.Println("give up:", d.Reason)
			break
		}
		fmt.Printf("restart #%d in %s\n", d.Attempt, d.Delay)
		now = now.Add(d.Delay + time.Second) // waited, started, crashed again
	}

	// A clean exit under on-failure is left alone.
	fmt.Println(restart.ShouldRestart(policy, restart.Classify(0, "", false, false), 0))
	// Output:
	// restart #1 in 1s
	// restart #2 in 2s
	// restart #3 in 4s
	// restart #4 in 8s
	// restart #5 in 16s
	// give up: restart budget exhausted: 6 restarts in 10m0s
	// false
}
