package monitor

import (
	"testing"
	"time"
)

// Probes stay on the slot grid, one interval apart, whatever the moment a
// probe finished.
func TestUntilNextProbeKeepsTheGrid(t *testing.T) {
	base := time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		interval time.Duration
		after    time.Duration // since the last slot boundary
		want     time.Duration
	}{
		{time.Second, 0, time.Second},
		{time.Second, 3 * time.Millisecond, time.Second - 3*time.Millisecond},
		{time.Second, 99 * time.Millisecond, time.Second - 99*time.Millisecond},
		{10 * time.Second, 5 * time.Millisecond, 10*time.Second - 5*time.Millisecond},
		{5 * time.Millisecond, 400 * time.Microsecond, 5*time.Millisecond - 400*time.Microsecond},
	} {
		slot := probeSlot(c.interval)
		now := base.Add(c.after)
		got := untilNextProbe(c.interval, slot, now)
		if got != c.want {
			t.Errorf("interval %s, %s past a slot: next probe in %s, want %s", c.interval, c.after, got, c.want)
		}
		if at := now.Add(got); !at.Equal(at.Truncate(slot)) {
			t.Errorf("interval %s: next probe at %s is off the %s grid", c.interval, at, slot)
		}
		if got <= c.interval/2 || got > c.interval+slot {
			t.Errorf("interval %s: next probe in %s, outside (interval/2, interval+slot]", c.interval, got)
		}
	}
	if s := probeSlot(2 * time.Millisecond); s != time.Millisecond {
		t.Errorf("probeSlot(2ms) = %s, want the 1ms floor", s)
	}
}
