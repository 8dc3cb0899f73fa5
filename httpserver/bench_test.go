package httpserver

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/rbee-hive/rbee-hive/registry"
)

// BenchmarkListWorkers measures one authenticated GET /v1/workers/list of
// 100 workers over loopback through the whole stack (correlation id, log,
// auth, audit, echo, JSON).
func BenchmarkListWorkers(b *testing.B) {
	h := newHarness(b, nil)
	for i := range 100 {
		id := fmt.Sprintf("worker-00000000-0000-4000-8000-%012d", i)
		if _, err := h.reg.Register(registry.Worker{ID: id, ModelRef: "hf:a/b", Backend: "cpu"}); err != nil {
			b.Fatal(err)
		}
	}
	req, _ := http.NewRequest("GET", h.srv.URL+"/v1/workers/list", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	hc := h.srv.Client()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
