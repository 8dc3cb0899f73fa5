package httpmiddleware

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// AuditEntry is one line of the audit log. It never holds a token: only
// its Fingerprint.
type AuditEntry struct {
	Time             time.Time `json:"time"`
	RemoteAddr       string    `json:"remote_addr"`
	Method           string    `json:"method"`
	Path             string    `json:"path"`
	Route            string    `json:"route,omitempty"`
	CorrelationID    string    `json:"correlation_id"`
	Principal        Principal `json:"principal,omitempty"`
	WorkerID         string    `json:"worker_id,omitempty"`
	TokenFingerprint string    `json:"token_fingerprint"`
	// Outcome is "denied" for an authentication failure, otherwise the
	// response status code as text ("202", "409", ...). Status repeats the
	// code as a number when one was sent.
	Outcome string `json:"outcome"`
	Status  int    `json:"status,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// AuditLog writes AuditEntry values as JSON lines. A nil *AuditLog discards
// everything. Safe for concurrent use: each entry is one Write.
type AuditLog struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
	err func(error)
}

// NewAuditLog writes to w (nil discards). onError, when set, is told about
// failed writes (the daemon logs them); requests never fail because the
// audit log could not be written.
func NewAuditLog(w io.Writer, onError func(error)) *AuditLog {
	if w == nil {
		return nil
	}
	return &AuditLog{w: w, now: time.Now, err: onError}
}

// Write appends one entry; a zero Time is now.
func (a *AuditLog) Write(e AuditEntry) {
	if a == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = a.now().UTC()
	}
	line, err := json.Marshal(e)
	if err != nil {
		a.fail(err)
		return
	}
	line = append(line, '\n')
	a.mu.Lock()
	_, err = a.w.Write(line)
	a.mu.Unlock()
	if err != nil {
		a.fail(err)
	}
}

func (a *AuditLog) fail(err error) {
	if a.err != nil {
		a.err(err)
	}
}

// Denied records an authentication failure.
func (a *AuditLog) Denied(r *http.Request, info *Info, reason string) {
	a.Write(entryFor(r, info, "denied", 0, reason))
}

func entryFor(r *http.Request, info *Info, outcome string, status int, reason string) AuditEntry {
	e := AuditEntry{
		RemoteAddr: r.RemoteAddr,
		Method:     r.Method,
		Path:       r.URL.Path,
		Outcome:    outcome,
		Status:     status,
		Reason:     reason,
	}
	if info != nil {
		e.Route = info.Route
		e.CorrelationID = info.CorrelationID
		e.Principal = info.Principal
		e.WorkerID = info.WorkerID
		e.TokenFingerprint = info.TokenFingerprint
	}
	return e
}

// Mutating reports whether method changes state (and is audited).
func Mutating(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// Audit records every mutating request that got past authentication, with
// the status it was answered with.
func Audit(log *AuditLog) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if log == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !Mutating(r.Method) {
				next.ServeHTTP(w, r)
				return
			}
			r, info := WithInfo(r)
			rec := newRecorder(w)
			defer func() {
				// Written even when the handler panics (the recovery
				// middleware outside answers 500).
				status := rec.status
				if p := recover(); p != nil {
					log.Write(entryFor(r, info, "500", http.StatusInternalServerError, "handler panicked"))
					panic(p)
				}
				if status == 0 {
					status = http.StatusOK
				}
				log.Write(entryFor(r, info, strconv.Itoa(status), status, ""))
			}()
			next.ServeHTTP(rec, r)
		})
	}
}
