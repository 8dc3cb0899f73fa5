package httpserver

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
)

// FuzzDecodeSpawn: any body either decodes into a SpawnRequest or is a
// 400 INVALID_REQUEST answer; never a panic, never another kind of error.
func FuzzDecodeSpawn(f *testing.F) {
	for _, seed := range []string{``, `{}`, `{"model_ref":"m","backend":"cpu","device":1,"wait":true}`,
		`{"device":"x"}`, `{"x":1}`, `[]`, `null`, `{"model_ref":"m"} 1`, `{"device":1e99}`, `{"model_ref":"\u0000"}`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/v1/workers/spawn", strings.NewReader(body))
		var sr client.SpawnRequest
		err := decodeJSON(req, &sr, false)
		if err == nil {
			return
		}
		var ae *apiError
		if !errors.As(err, &ae) || ae.status != 400 || ae.code != CodeInvalidRequest {
			t.Fatalf("body %q: %v", body, err)
		}
	})
}
