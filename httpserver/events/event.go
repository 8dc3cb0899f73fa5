package events

import (
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
)

// The event types, exactly as they appear on the wire.
const (
	TypeWorkerRegistered   = "worker_registered"
	TypeWorkerStateChanged = "worker_state_changed"
	TypeWorkerRestarted    = "worker_restarted"
	TypeWorkerRemoved      = "worker_removed"
	TypeProvisionStarted   = string(provisioner.EventProvisionStarted)
	TypeProvisionProgress  = string(provisioner.EventProvisionProgress)
	TypeProvisionDone      = string(provisioner.EventProvisionDone)
	TypeProvisionFailed    = string(provisioner.EventProvisionFailed)
	TypeModelEvicted       = string(provisioner.EventModelEvicted)
	TypeHiveShuttingDown   = "hive_shutting_down"
	TypeReset              = "reset"
)

// Types lists every event type.
func Types() []string {
	return []string{
		TypeWorkerRegistered, TypeWorkerStateChanged, TypeWorkerRestarted, TypeWorkerRemoved,
		TypeProvisionStarted, TypeProvisionProgress, TypeProvisionDone, TypeProvisionFailed,
		TypeModelEvicted, TypeHiveShuttingDown, TypeReset,
	}
}

// ValidType reports whether t is one of Types.
func ValidType(t string) bool { return slices.Contains(Types(), t) }

// Event is one change, as served on the stream and pushed to queen-rbee.
type Event struct {
	ID        uint64              `json:"id"`
	Type      string              `json:"type"`
	Time      time.Time           `json:"time"`
	Worker    *registry.Worker    `json:"worker,omitempty"`
	From      registry.State      `json:"from,omitempty"`
	To        registry.State      `json:"to,omitempty"`
	Reason    string              `json:"reason,omitempty"`
	Attempt   int                 `json:"attempt,omitempty"`
	LastExit  *registry.Exit      `json:"last_exit,omitempty"`
	Provision *provisioner.Status `json:"provision,omitempty"`
	Model     *provisioner.Model  `json:"model,omitempty"`
	Snapshot  *Snapshot           `json:"snapshot,omitempty"`
}

// WorkerID returns the id of the worker the event is about, or "".
func (e *Event) WorkerID() string {
	if e.Worker == nil {
		return ""
	}
	return e.Worker.ID
}

// Snapshot is the full state a reset event carries.
type Snapshot struct {
	Workers    []registry.Worker    `json:"workers"`
	Models     []provisioner.Model  `json:"models"`
	Provisions []provisioner.Status `json:"provisions,omitempty"`
}

// entry is an event as the hub keeps it: encoded once, shared read-only by
// every consumer.
type entry struct {
	id       uint64
	typ      string
	workerID string
	regSeq   uint64 // registry Seq of the change; 0 for other events
	data     []byte // the JSON (a part of frame)
	frame    []byte // the SSE frame
}

// encode builds the entry of ev.
func encode(ev *Event, regSeq uint64) (*entry, error) {
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	frame, off := sseFrame(ev.ID, ev.Type, data)
	return &entry{
		id:       ev.ID,
		typ:      ev.Type,
		workerID: ev.WorkerID(),
		regSeq:   regSeq,
		data:     frame[off : off+len(data) : off+len(data)],
		frame:    frame,
	}, nil
}

// sseFrame returns "id: N\nevent: T\ndata: JSON\n\n" and where the JSON
// starts in it. JSON from encoding/json never holds a raw newline, so one
// data line suffices.
func sseFrame(id uint64, typ string, data []byte) ([]byte, int) {
	b := make([]byte, 0, len(data)+len(typ)+40)
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, "\nevent: "...)
	b = append(b, typ...)
	b = append(b, "\ndata: "...)
	off := len(b)
	b = append(b, data...)
	b = append(b, "\n\n"...)
	return b, off
}

// workerEvents turns one registry change into its events (none for an
// update that leaves the state as it was).
func workerEvents(ev *registry.Event) []Event {
	w := ev.Worker.Clone()
	switch ev.Kind {
	case registry.EventRegistered:
		return []Event{{Type: TypeWorkerRegistered, Time: ev.At, Worker: &w}}
	case registry.EventRemoved:
		return []Event{{Type: TypeWorkerRemoved, Time: ev.At, Worker: &w, From: ev.From}}
	case registry.EventUpdated:
		if ev.From == w.State {
			return nil
		}
		out := []Event{{Type: TypeWorkerStateChanged, Time: ev.At, Worker: &w, From: ev.From, To: w.State, Reason: reason(&w)}}
		if w.State == registry.StateRestarting {
			w2 := w.Clone()
			r := Event{Type: TypeWorkerRestarted, Time: ev.At, Worker: &w2, Attempt: w2.RestartCount}
			if w2.LastExit != nil {
				e := *w2.LastExit
				r.LastExit = &e
			}
			out = append(out, r)
		}
		return out
	}
	return nil
}

// reason says why a worker entered its state, where the record tells.
func reason(w *registry.Worker) string {
	exitReason := ""
	if w.LastExit != nil {
		exitReason = w.LastExit.Reason
	}
	switch w.State {
	case registry.StateRestarting:
		return exitReason
	case registry.StateFailed:
		if w.LastError != "" {
			return w.LastError
		}
		return exitReason
	case registry.StateUnhealthy:
		return w.LastError
	}
	return ""
}
