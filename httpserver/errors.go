package httpserver

import (
	"context"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/rbee-hive/rbee-hive/httpmiddleware"
	"github.com/rbee-hive/rbee-hive/monitor"
	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
)

// Error codes of the API (DESIGN.md), besides the middleware's
// MISSING_API_KEY, INVALID_API_KEY, PAYLOAD_TOO_LARGE and INTERNAL.
const (
	CodeInvalidRequest        = "INVALID_REQUEST"
	CodeNotFound              = "NOT_FOUND"
	CodeMethodNotAllowed      = "METHOD_NOT_ALLOWED"
	CodeWorkerNotFound        = "WORKER_NOT_FOUND"
	CodeInvalidState          = "INVALID_STATE"
	CodeModelNotFound         = "MODEL_NOT_FOUND"
	CodeModelNotCached        = "MODEL_NOT_CACHED"
	CodeModelInUse            = "MODEL_IN_USE"
	CodeProvisionNotFound     = "PROVISION_NOT_FOUND"
	CodeAccessDenied          = "ACCESS_DENIED"
	CodeUpstreamError         = "UPSTREAM_ERROR"
	CodeInsufficientStorage   = "INSUFFICIENT_STORAGE"
	CodeInsufficientResources = "INSUFFICIENT_RESOURCES"
	CodeBackendUnavailable    = "BACKEND_UNAVAILABLE"
	CodeSpawnFailed           = "SPAWN_FAILED"
	CodeShuttingDown          = "SHUTTING_DOWN"
	CodeUnavailable           = "UNAVAILABLE"
	CodeTimeout               = "TIMEOUT"
)

// apiError is an answer decided by a handler (validation) or by errorFor.
type apiError struct {
	status  int
	code    string
	message string
	details map[string]any
	cause   error // logged for 5xx, never sent
}

func (e *apiError) Error() string { return e.code + ": " + e.message }
func (e *apiError) Unwrap() error { return e.cause }

func newError(status int, code, message string, details map[string]any) *apiError {
	return &apiError{status: status, code: code, message: message, details: details}
}

// invalidField is 400 INVALID_REQUEST naming the field.
func invalidField(field, reason string) *apiError {
	return newError(http.StatusBadRequest, CodeInvalidRequest, "invalid "+field+": "+reason,
		map[string]any{"field": field})
}

// errorFor maps every error a handler can return to its answer. It is the
// one place where typed errors of the layers below become HTTP codes.
func errorFor(err error) *apiError {
	var (
		ae       *apiError
		he       *echo.HTTPError
		tooLarge *http.MaxBytesError
		field    *monitor.FieldError
		refErr   *provisioner.RefError
		storage  *provisioner.StorageError
		memory   *resources.InsufficientMemoryError
		unavail  *resources.UnavailableError
	)
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &tooLarge):
		return newError(http.StatusRequestEntityTooLarge, httpmiddleware.CodePayloadTooLarge,
			"request body exceeds the size limit", map[string]any{"limit_bytes": tooLarge.Limit})
	case errors.As(err, &he):
		return echoError(he)

	case errors.As(err, &field):
		return &apiError{status: http.StatusBadRequest, code: CodeInvalidRequest, message: field.Error(),
			details: map[string]any{"field": field.Field}, cause: err}
	case errors.As(err, &refErr):
		return &apiError{status: http.StatusBadRequest, code: CodeInvalidRequest, message: refErr.Error(),
			details: map[string]any{"field": "model_ref", "rule": refErr.Rule}, cause: err}
	case errors.Is(err, monitor.ErrInvalidRequest), errors.Is(err, provisioner.ErrInvalidRef):
		return &apiError{status: http.StatusBadRequest, code: CodeInvalidRequest, message: err.Error(), cause: err}
	case errors.Is(err, resources.ErrUnknownBackend):
		return &apiError{status: http.StatusBadRequest, code: CodeInvalidRequest, message: err.Error(),
			details: map[string]any{"field": "backend"}, cause: err}
	case errors.Is(err, resources.ErrUnknownDevice):
		return &apiError{status: http.StatusBadRequest, code: CodeInvalidRequest, message: err.Error(),
			details: map[string]any{"field": "device"}, cause: err}

	case errors.Is(err, registry.ErrNotFound):
		return &apiError{status: http.StatusNotFound, code: CodeWorkerNotFound, message: "worker not found", cause: err}
	case errors.Is(err, registry.ErrInvalidTransition):
		details := map[string]any{}
		var te *registry.TransitionError
		if errors.As(err, &te) {
			details = map[string]any{"worker_id": te.WorkerID, "state": string(te.From), "requested_state": string(te.To)}
		}
		return &apiError{status: http.StatusConflict, code: CodeInvalidState, message: err.Error(), details: details, cause: err}

	case errors.As(err, &memory):
		return &apiError{status: http.StatusServiceUnavailable, code: CodeInsufficientResources, message: memory.Error(),
			details: map[string]any{"backend": memory.Backend, "device": memory.Device,
				"required_bytes": memory.RequiredBytes, "available_bytes": memory.AvailableBytes}, cause: err}
	case errors.Is(err, resources.ErrInsufficientMemory):
		return &apiError{status: http.StatusServiceUnavailable, code: CodeInsufficientResources, message: err.Error(), cause: err}
	case errors.As(err, &unavail):
		return &apiError{status: http.StatusServiceUnavailable, code: CodeBackendUnavailable, message: unavail.Error(),
			details: map[string]any{"backend": unavail.Backend, "reason": unavail.Reason}, cause: err}
	case errors.Is(err, resources.ErrBackendUnavailable):
		return &apiError{status: http.StatusServiceUnavailable, code: CodeBackendUnavailable, message: err.Error(), cause: err}

	case errors.Is(err, provisioner.ErrModelNotFound):
		return &apiError{status: http.StatusNotFound, code: CodeModelNotFound, message: err.Error(), cause: err}
	case errors.Is(err, provisioner.ErrAccessDenied):
		return &apiError{status: http.StatusForbidden, code: CodeAccessDenied, message: err.Error(),
			details: map[string]any{"hint": "set HF_TOKEN"}, cause: err}
	case errors.Is(err, provisioner.ErrUpstream):
		return &apiError{status: http.StatusBadGateway, code: CodeUpstreamError, message: err.Error(), cause: err}
	case errors.Is(err, provisioner.ErrChecksumMismatch):
		return &apiError{status: http.StatusBadGateway, code: CodeUpstreamError, message: err.Error(),
			details: map[string]any{"reason": "checksum mismatch"}, cause: err}
	case errors.As(err, &storage):
		return &apiError{status: http.StatusInsufficientStorage, code: CodeInsufficientStorage, message: storage.Error(),
			details: map[string]any{"required_bytes": storage.RequiredBytes, "available_bytes": storage.AvailableBytes}, cause: err}
	case errors.Is(err, provisioner.ErrInsufficientStorage):
		return &apiError{status: http.StatusInsufficientStorage, code: CodeInsufficientStorage, message: err.Error(), cause: err}
	case errors.Is(err, provisioner.ErrNotCached):
		return &apiError{status: http.StatusNotFound, code: CodeModelNotCached, message: err.Error(), cause: err}
	case errors.Is(err, provisioner.ErrInUse):
		return &apiError{status: http.StatusConflict, code: CodeModelInUse, message: err.Error(), cause: err}
	case errors.Is(err, provisioner.ErrUnknownProvision):
		return &apiError{status: http.StatusNotFound, code: CodeProvisionNotFound, message: "provision not found", cause: err}

	case errors.Is(err, monitor.ErrSpawnFailed):
		return &apiError{status: http.StatusInternalServerError, code: CodeSpawnFailed, message: err.Error(), cause: err}
	case errors.Is(err, monitor.ErrUnauthorized):
		return &apiError{status: http.StatusUnauthorized, code: httpmiddleware.CodeInvalidAPIKey, message: "invalid worker token", cause: err}
	case errors.Is(err, monitor.ErrClosed), errors.Is(err, registry.ErrClosed):
		return &apiError{status: http.StatusServiceUnavailable, code: CodeShuttingDown, message: "the hive is shutting down", cause: err}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return &apiError{status: http.StatusGatewayTimeout, code: CodeTimeout, message: "gave up waiting: " + err.Error(), cause: err}
	}
	return &apiError{status: http.StatusInternalServerError, code: httpmiddleware.CodeInternal, message: "internal error", cause: err}
}

// echoError maps echo's own errors: no route, wrong method, bad binds.
func echoError(he *echo.HTTPError) *apiError {
	switch he.Code {
	case http.StatusNotFound:
		return newError(http.StatusNotFound, CodeNotFound, "no such route", nil)
	case http.StatusMethodNotAllowed:
		return newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method not allowed on this route", nil)
	case http.StatusRequestEntityTooLarge:
		return newError(http.StatusRequestEntityTooLarge, httpmiddleware.CodePayloadTooLarge, "request body exceeds the size limit", nil)
	}
	if he.Code >= 400 && he.Code < 500 {
		return newError(he.Code, CodeInvalidRequest, http.StatusText(he.Code), nil)
	}
	return &apiError{status: http.StatusInternalServerError, code: httpmiddleware.CodeInternal, message: "internal error", cause: he}
}

// handleError is echo's HTTPErrorHandler: the envelope for every error,
// with 5xx causes logged (with the correlation id) and never sent.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		s.log.Debug("error after the answer started", "err", err, "correlation_id", correlationID(c))
		return
	}
	ae := errorFor(err)
	if ae.status >= 500 {
		s.log.Error("request failed", "code", ae.code, "err", err, "method", c.Request().Method,
			"route", c.Path(), "correlation_id", correlationID(c))
	}
	httpmiddleware.WriteError(c.Response(), ae.status, ae.code, ae.message, ae.details)
}

func correlationID(c echo.Context) string {
	return httpmiddleware.CorrelationIDFrom(c.Request().Context())
}
