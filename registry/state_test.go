package registry

import (
	"errors"
	"fmt"
	"testing"
)

// allowed is DESIGN.md's diagram written out again, independently of the
// table in state.go, so a wrong edit to either shows up here.
var allowed = []struct{ from, to State }{
	{StateLoading, StateIdle},         // ready
	{StateIdle, StateBusy},            // serving
	{StateBusy, StateIdle},            // done serving
	{StateLoading, StateUnhealthy},    // probes failing
	{StateIdle, StateUnhealthy},       //
	{StateBusy, StateUnhealthy},       //
	{StateUnhealthy, StateIdle},       // probes pass again
	{StateUnhealthy, StateBusy},       //
	{StateLoading, StateRestarting},   // exited or killed
	{StateIdle, StateRestarting},      //
	{StateBusy, StateRestarting},      //
	{StateUnhealthy, StateRestarting}, //
	{StateRestarting, StateLoading},   // backoff over
	{StateLoading, StateStopping},     // the hive stops it
	{StateIdle, StateStopping},        //
	{StateBusy, StateStopping},        //
	{StateUnhealthy, StateStopping},   //
	{StateRestarting, StateStopping},  //
	{StateFailed, StateStopping},      //
	{StateLoading, StateFailed},       // gave up
	{StateIdle, StateFailed},          //
	{StateBusy, StateFailed},          //
	{StateUnhealthy, StateFailed},     //
	{StateRestarting, StateFailed},    //
}

func isAllowed(from, to State) bool {
	if from == to {
		return true
	}
	for _, a := range allowed {
		if a.from == from && a.to == to {
			return true
		}
	}
	return false
}

func TestCanTransitionEveryPair(t *testing.T) {
	for _, from := range States() {
		for _, to := range States() {
			if got, want := CanTransition(from, to), isAllowed(from, to); got != want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", from, to, got, want)
			}
		}
	}
	for _, bad := range []struct{ from, to State }{{"", StateIdle}, {StateIdle, ""}, {"bogus", "bogus"}, {StateIdle, "IDLE"}} {
		if CanTransition(bad.from, bad.to) {
			t.Errorf("CanTransition(%q, %q) = true for an unknown state", bad.from, bad.to)
		}
	}
}

func TestNext(t *testing.T) {
	for _, from := range States() {
		next := Next(from)
		for _, to := range next {
			if !isAllowed(from, to) {
				t.Errorf("Next(%s) lists %s", from, to)
			}
		}
	}
	if Next("bogus") != nil {
		t.Error("Next of an unknown state is not nil")
	}
	n := Next(StateFailed)
	n[0] = StateIdle
	if CanTransition(StateFailed, StateIdle) {
		t.Error("changing Next's result changed the state machine")
	}
}

func TestUpdateAllowedTransitions(t *testing.T) {
	for _, tc := range allowed {
		t.Run(fmt.Sprintf("%s->%s", tc.from, tc.to), func(t *testing.T) {
			r := openMem(t)
			mustRegister(t, r, Worker{ID: "w", State: tc.from})
			got, err := r.Update("w", func(w *Worker) error { w.State = tc.to; return nil })
			if err != nil {
				t.Fatalf("Update: %v", err)
			}
			if got.State != tc.to {
				t.Fatalf("returned state %s, want %s", got.State, tc.to)
			}
			if stored := mustGet(t, r, "w"); stored.State != tc.to {
				t.Fatalf("stored state %s, want %s", stored.State, tc.to)
			}
		})
	}
}

func TestUpdateRefusedTransitions(t *testing.T) {
	refused := []struct{ from, to State }{
		{StateLoading, StateBusy},
		{StateIdle, StateLoading},
		{StateBusy, StateLoading},
		{StateUnhealthy, StateLoading},
		{StateRestarting, StateIdle},
		{StateRestarting, StateBusy},
		{StateRestarting, StateUnhealthy},
		{StateStopping, StateIdle},
		{StateStopping, StateLoading},
		{StateStopping, StateRestarting},
		{StateStopping, StateFailed},
		{StateFailed, StateIdle},
		{StateFailed, StateLoading},
		{StateFailed, StateRestarting},
		{StateIdle, "bogus"},
		{StateIdle, ""},
	}
	for _, tc := range refused {
		t.Run(fmt.Sprintf("%s->%s", tc.from, tc.to), func(t *testing.T) {
			r := openMem(t)
			before := mustRegister(t, r, Worker{ID: "w", State: tc.from, LastError: "before"})
			seq := r.Seq()
			_, err := r.Update("w", func(w *Worker) error {
				w.State = tc.to
				w.LastError = "after" // must not stick either
				return nil
			})
			if !errors.Is(err, ErrInvalidTransition) {
				t.Fatalf("err = %v, want ErrInvalidTransition", err)
			}
			var te *TransitionError
			if !errors.As(err, &te) || te.From != tc.from || te.To != tc.to || te.WorkerID != "w" {
				t.Fatalf("err = %#v, want a *TransitionError w %s -> %s", err, tc.from, tc.to)
			}
			if after := mustGet(t, r, "w"); after.State != before.State || after.LastError != "before" {
				t.Fatalf("record changed by a refused update: %+v", after)
			}
			if r.Seq() != seq {
				t.Fatalf("Seq moved from %d to %d on a refused update", seq, r.Seq())
			}
		})
	}
}

func TestSameStateAlwaysAllowed(t *testing.T) {
	for _, s := range States() {
		r := openMem(t)
		mustRegister(t, r, Worker{ID: "w", State: s})
		got, err := r.Update("w", func(w *Worker) error { w.VRAMBytes = 42; return nil })
		if err != nil || got.State != s || got.VRAMBytes != 42 {
			t.Fatalf("%s: same-state update = %+v, %v", s, got, err)
		}
	}
}
