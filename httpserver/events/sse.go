package events

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxBatch bounds how many queued events one write gathers before a flush.
const maxBatch = 128

// ServeHTTP serves the event stream (GET /v1/events); see the package doc.
// Authentication is the router's job.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "only GET is allowed", nil)
		return
	}
	q := r.URL.Query()
	types, err := parseTypes(q["type"])
	if err != nil {
		writeError(w, http.StatusBadRequest, "INVALID_REQUEST", err.Error(), map[string]any{"field": "type"})
		return
	}
	resume, lastID, err := parseLastID(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "INVALID_REQUEST", err.Error(), map[string]any{"field": "last_event_id"})
		return
	}

	rc := http.NewResponseController(w)
	// A stream outlives any server write timeout; it is bounded by the hub
	// dropping it instead. Cleared before subscribing, so it cannot undo
	// the hub's kill.
	canKill := rc.SetWriteDeadline(time.Time{}) == nil
	var kill func()
	if canKill {
		kill = func() { _ = rc.SetWriteDeadline(time.Now()) }
	}
	res, err := h.subscribe(subscribeRequest{
		types:     types,
		workers:   parseList(q["worker_id"]),
		buffer:    h.cfg.SubscriberBuffer,
		resume:    resume,
		lastID:    lastID,
		kill:      kill,
		countDrop: true,
	})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "SHUTTING_DOWN", "the event stream has stopped", nil)
		return
	}
	s := res.sub
	defer h.unsubscribe(s)

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)

	// skip: registry changes the reset's snapshot already holds.
	var skip uint64
	var err2 error
	switch {
	case res.reset:
		snap, seq := h.snapshot()
		skip = seq
		var e *entry
		e, err2 = encode(&Event{ID: res.pos, Type: TypeReset, Time: time.Now(), Snapshot: &snap}, 0)
		if err2 == nil {
			_, err2 = w.Write(e.frame)
		}
	case len(res.replay) > 0:
		for _, e := range res.replay {
			if _, err2 = w.Write(e.frame); err2 != nil {
				break
			}
		}
	default:
		// No event yet: name the position, so a reconnect resumes from it.
		_, err2 = w.Write([]byte("id: " + strconv.FormatUint(res.pos, 10) + "\n\n"))
	}
	if err2 == nil {
		err2 = rc.Flush()
	}
	if err2 != nil {
		h.log.Debug("events: stream ended while starting", "err", err2)
		return
	}
	if !canKill {
		h.log.Debug("events: response writer has no write deadline; a stuck consumer's writer stays blocked until its connection fails")
	}

	ping := time.NewTicker(h.cfg.Heartbeat)
	defer ping.Stop()
	ctx := r.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			return // dropped for falling behind, or the hub stopped
		case e := <-s.ch:
			n := 0
			for {
				if e.regSeq == 0 || e.regSeq > skip {
					if _, err := w.Write(e.frame); err != nil {
						return
					}
				}
				if n++; n == maxBatch {
					break
				}
				var ok bool
				select {
				case e, ok = <-s.ch:
				default:
				}
				if !ok {
					break
				}
			}
			if rc.Flush() != nil {
				return
			}
		case <-ping.C:
			if _, err := w.Write([]byte(": ping\n\n")); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
	}
}

// parseTypes reads ?type=a,b (repeatable); nil means every type.
func parseTypes(vals []string) (map[string]bool, error) {
	set := parseList(vals)
	for t := range set {
		if !ValidType(t) {
			return nil, errors.New("unknown event type " + strconv.Quote(t) + "; known: " + strings.Join(Types(), ", "))
		}
	}
	return set, nil
}

// parseList reads comma-separated, repeatable values; nil when none.
func parseList(vals []string) map[string]bool {
	var set map[string]bool
	for _, v := range vals {
		for item := range strings.SplitSeq(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				if set == nil {
					set = make(map[string]bool)
				}
				set[item] = true
			}
		}
	}
	return set
}

// parseLastID reads the Last-Event-ID header, else ?last_event_id=.
func parseLastID(r *http.Request) (bool, uint64, error) {
	v := strings.TrimSpace(r.Header.Get("Last-Event-ID"))
	if v == "" {
		v = strings.TrimSpace(r.URL.Query().Get("last_event_id"))
	}
	if v == "" {
		return false, 0, nil
	}
	id, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return false, 0, errors.New("last event id " + strconv.Quote(v) + " is not an event id")
	}
	return true, id, nil
}

// writeError writes the DESIGN error envelope.
func writeError(w http.ResponseWriter, status int, code, msg string, details map[string]any) {
	type body struct {
		Code    string         `json:"code"`
		Message string         `json:"message"`
		Details map[string]any `json:"details,omitempty"`
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]body{"error": {Code: code, Message: msg, Details: details}})
}
