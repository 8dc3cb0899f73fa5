package httpmiddleware

import (
	"encoding/json"
	"net/http"
)

// Error codes the middlewares answer with. httpserver uses the same
// envelope for everything else.
const (
	CodeMissingAPIKey   = "MISSING_API_KEY"
	CodeInvalidAPIKey   = "INVALID_API_KEY"
	CodePayloadTooLarge = "PAYLOAD_TOO_LARGE"
	CodeInternal        = "INTERNAL"
	CodeForbidden       = "FORBIDDEN"
)

// ErrorBody is the error envelope of DESIGN.md:
// {"error":{"code":"UPPER_SNAKE","message":"...","details":{...}}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of the envelope.
type ErrorDetail struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

// WriteError writes the error envelope with status.
func WriteError(w http.ResponseWriter, status int, code, message string, details map[string]any) {
	body, err := json.Marshal(ErrorBody{Error: ErrorDetail{Code: code, Message: message, Details: details}})
	if err != nil {
		// Details that cannot be encoded must not lose the error itself.
		body, _ = json.Marshal(ErrorBody{Error: ErrorDetail{Code: code, Message: message}})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
