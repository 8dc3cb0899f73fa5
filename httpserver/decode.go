package httpserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
)

// decodeJSON decodes the request body into v strictly: one JSON object, no
// unknown fields, no wrong types, nothing after it. Errors are 400
// INVALID_REQUEST naming the field where known, or 413 for a body over the
// limit. An empty body is an empty object when allowEmpty.
func decodeJSON(r *http.Request, v any, allowEmpty bool) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return err
		}
		return newError(http.StatusBadRequest, CodeInvalidRequest, "reading the request body failed", nil)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return nil
		}
		return newError(http.StatusBadRequest, CodeInvalidRequest, "a JSON request body is required", nil)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return newError(http.StatusBadRequest, CodeInvalidRequest, "unexpected data after the JSON object", nil)
	}
	return nil
}

var unknownField = regexp.MustCompile(`^json: unknown field "(.*)"$`)

// jsonError turns a decoding error into 400 INVALID_REQUEST with
// details.field where the decoder names one.
func jsonError(err error) *apiError {
	var (
		typeErr   *json.UnmarshalTypeError
		syntaxErr *json.SyntaxError
	)
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return newError(http.StatusBadRequest, CodeInvalidRequest,
				fmt.Sprintf("the request body must be a JSON object, not %s", typeErr.Value), nil)
		}
		return newError(http.StatusBadRequest, CodeInvalidRequest,
			fmt.Sprintf("invalid %s: got %s, want %s", field, typeErr.Value, jsonType(typeErr.Type.Kind().String())),
			map[string]any{"field": field})
	case errors.As(err, &syntaxErr):
		return newError(http.StatusBadRequest, CodeInvalidRequest,
			fmt.Sprintf("malformed JSON at byte %d: %s", syntaxErr.Offset, syntaxErr.Error()), nil)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return newError(http.StatusBadRequest, CodeInvalidRequest, "truncated JSON body", nil)
	}
	if m := unknownField.FindStringSubmatch(err.Error()); m != nil {
		return newError(http.StatusBadRequest, CodeInvalidRequest, fmt.Sprintf("unknown field %q", m[1]),
			map[string]any{"field": m[1]})
	}
	return newError(http.StatusBadRequest, CodeInvalidRequest, "invalid JSON body: "+err.Error(), nil)
}

func jsonType(kind string) string {
	switch kind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "integer"
	case "float32", "float64":
		return "number"
	case "bool":
		return "boolean"
	case "string":
		return "string"
	case "slice", "array":
		return "array"
	}
	return "object"
}

// workerIDPattern is the shape of worker ids the monitor issues. Ids are
// checked before anything uses them, so "../../etc/passwd" never reaches
// a file path.
var workerIDPattern = regexp.MustCompile(`^worker-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// checkWorkerID is 400 INVALID_REQUEST (details.field) unless id is a
// well-formed worker id.
func checkWorkerID(field, id string) error {
	if id == "" {
		return invalidField(field, "required")
	}
	if !workerIDPattern.MatchString(id) {
		return invalidField(field, "must be worker-<uuid>")
	}
	return nil
}
