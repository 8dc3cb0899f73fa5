package registry

// The worker state machine of DESIGN.md, written down as data. This table is
// the only place a transition is decided: CanTransition reads it, and every
// Update of the registry goes through CanTransition.
//
//	loading    -> idle                ready (callback or poll)
//	idle      <-> busy                heartbeat or health probe body
//	loading, idle, busy -> unhealthy  health probes failing
//	unhealthy  -> idle, busy          probes pass again
//	loading, idle, busy, unhealthy -> restarting   exited or killed, waiting out backoff
//	restarting -> loading             backoff over, started again
//	every state but stopping -> stopping   the hive is stopping it (failed too)
//	stopping   -> (removed)           Remove works from any state
//	loading, idle, busy, unhealthy, restarting -> failed   gave up; kept with LastError
//
// Keeping a state (from == to) is always allowed, so updates that only touch
// other fields never need to know the current state.
var transitions = map[State][]State{
	StateLoading:    {StateIdle, StateUnhealthy, StateRestarting, StateStopping, StateFailed},
	StateIdle:       {StateBusy, StateUnhealthy, StateRestarting, StateStopping, StateFailed},
	StateBusy:       {StateIdle, StateUnhealthy, StateRestarting, StateStopping, StateFailed},
	StateUnhealthy:  {StateIdle, StateBusy, StateRestarting, StateStopping, StateFailed},
	StateRestarting: {StateLoading, StateStopping, StateFailed},
	StateStopping:   {},
	StateFailed:     {StateStopping},
}

// Valid reports whether s is one of the states of DESIGN.md.
func (s State) Valid() bool {
	_, ok := transitions[s]
	return ok
}

// CanTransition reports whether the state machine allows from -> to.
// A change that keeps the state is always allowed.
func CanTransition(from, to State) bool {
	next, ok := transitions[from]
	if !ok || !to.Valid() {
		return false
	}
	if from == to {
		return true
	}
	for _, s := range next {
		if s == to {
			return true
		}
	}
	return false
}

// Next returns the states a worker in state from may move to, besides
// staying where it is (nil for an unknown state). The slice is a copy.
func Next(from State) []State {
	next, ok := transitions[from]
	if !ok {
		return nil
	}
	return append([]State{}, next...)
}
