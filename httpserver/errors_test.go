package httpserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/rbee-hive/rbee-hive/httpmiddleware"
	"github.com/rbee-hive/rbee-hive/monitor"
	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
)

// TestErrorMapping is the table of DESIGN.md's error codes: each typed
// error of the layers below, wrapped the way callers wrap, maps to its
// status, code and details.
func TestErrorMapping(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("spawn worker-x: %w", err) }
	cases := []struct {
		name    string
		err     error
		status  int
		code    string
		details map[string]any
	}{
		{"worker not found", wrap(registry.ErrNotFound), 404, CodeWorkerNotFound, nil},
		{"invalid transition", wrap(&registry.TransitionError{WorkerID: "w", From: registry.StateIdle, To: registry.StateLoading}), 409, CodeInvalidState,
			map[string]any{"worker_id": "w", "state": "idle", "requested_state": "loading"}},
		{"field error", wrap(&monitor.FieldError{Field: "restart_policy", Reason: "unknown"}), 400, CodeInvalidRequest, map[string]any{"field": "restart_policy"}},
		{"bare invalid request", wrap(monitor.ErrInvalidRequest), 400, CodeInvalidRequest, nil},
		{"ref error", wrap(&provisioner.RefError{Ref: "x", Rule: "traversal"}), 400, CodeInvalidRequest, map[string]any{"field": "model_ref", "rule": "traversal"}},
		{"unknown backend", wrap(resources.ErrUnknownBackend), 400, CodeInvalidRequest, map[string]any{"field": "backend"}},
		{"unknown device", wrap(resources.ErrUnknownDevice), 400, CodeInvalidRequest, map[string]any{"field": "device"}},
		{"model not found", wrap(provisioner.ErrModelNotFound), 404, CodeModelNotFound, nil},
		{"access denied", wrap(provisioner.ErrAccessDenied), 403, CodeAccessDenied, map[string]any{"hint": "set HF_TOKEN"}},
		{"upstream", wrap(provisioner.ErrUpstream), 502, CodeUpstreamError, nil},
		{"checksum", wrap(provisioner.ErrChecksumMismatch), 502, CodeUpstreamError, map[string]any{"reason": "checksum mismatch"}},
		{"storage", wrap(&provisioner.StorageError{Path: "/c", RequiredBytes: 10, AvailableBytes: 3}), 507, CodeInsufficientStorage,
			map[string]any{"required_bytes": int64(10), "available_bytes": int64(3)}},
		{"bare storage", wrap(provisioner.ErrInsufficientStorage), 507, CodeInsufficientStorage, nil},
		{"memory", wrap(&resources.InsufficientMemoryError{Backend: "cuda", Device: 2, RequiredBytes: 100, AvailableBytes: 7}), 503, CodeInsufficientResources,
			map[string]any{"backend": "cuda", "device": 2, "required_bytes": uint64(100), "available_bytes": uint64(7)}},
		{"backend unavailable", wrap(&resources.UnavailableError{Backend: "cuda", Reason: "no driver"}), 503, CodeBackendUnavailable,
			map[string]any{"backend": "cuda", "reason": "no driver"}},
		{"backend unavailable via monitor", wrap(monitor.ErrBackendUnavailable), 503, CodeBackendUnavailable, nil},
		{"spawn failed", wrap(monitor.ErrSpawnFailed), 500, CodeSpawnFailed, nil},
		{"not cached", wrap(provisioner.ErrNotCached), 404, CodeModelNotCached, nil},
		{"in use", wrap(provisioner.ErrInUse), 409, CodeModelInUse, nil},
		{"unknown provision", wrap(provisioner.ErrUnknownProvision), 404, CodeProvisionNotFound, nil},
		{"unauthorized worker", wrap(monitor.ErrUnauthorized), 401, httpmiddleware.CodeInvalidAPIKey, nil},
		{"monitor closed", wrap(monitor.ErrClosed), 503, CodeShuttingDown, nil},
		{"deadline", wrap(context.DeadlineExceeded), 504, CodeTimeout, nil},
		{"too large", wrap(&http.MaxBytesError{Limit: 1 << 20}), 413, httpmiddleware.CodePayloadTooLarge, map[string]any{"limit_bytes": int64(1 << 20)}},
		{"echo 404", echo.ErrNotFound, 404, CodeNotFound, nil},
		{"echo 405", echo.ErrMethodNotAllowed, 405, CodeMethodNotAllowed, nil},
		{"anything else", errors.New("disk on fire at /secret/path"), 500, httpmiddleware.CodeInternal, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ae := errorFor(tc.err)
			if ae.status != tc.status || ae.code != tc.code {
				t.Fatalf("got %d %s, want %d %s", ae.status, ae.code, tc.status, tc.code)
			}
			if fmt.Sprint(ae.details) != fmt.Sprint(tc.details) && !(len(ae.details) == 0 && len(tc.details) == 0) {
				t.Fatalf("details %v, want %v", ae.details, tc.details)
			}
			if tc.code == httpmiddleware.CodeInternal && ae.message != "internal error" {
				t.Fatalf("internal errors must not leak: %q", ae.message)
			}
		})
	}
}
