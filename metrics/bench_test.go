package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
)

// BenchmarkScrape1000 is one scrape of the handler with 1,000 workers
// registered and traffic recorded on a dozen routes (the histograms a busy
// hive exposes), CPU devices read from /proc/meminfo.
func BenchmarkScrape1000(b *testing.B) {
	reg, err := registry.Open(registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	for i := range 1000 {
		if _, err := reg.Register(registry.Worker{ID: fmt.Sprintf("worker-%d", i), State: registry.StateIdle}); err != nil {
			b.Fatal(err)
		}
	}
	res, err := resources.New(resources.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer res.Close()
	prov, err := provisioner.New(provisioner.Config{CacheDir: b.TempDir(), Endpoint: "http://127.0.0.1:1"})
	if err != nil {
		b.Fatal(err)
	}
	defer prov.Close()
	m := New(reg, res, prov)
	for i, route := range []string{"/v1/health", "/v1/workers/list", "/v1/status", "/v1/metrics", "/v1/workers/spawn", "/v1/workers/ready",
		"/v1/heartbeat", "/v1/workers/shutdown", "/v1/workers/health", "/v1/models/provision", "/v1/models/list", "/v1/events"} {
		m.ObserveRequest(http.MethodGet, route, 200, time.Duration(i)*time.Millisecond)
	}
	h := m.Handler()
	for _, enc := range []string{"identity", "gzip"} {
		b.Run(enc, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
				r.Header.Set("Accept-Encoding", enc) // Prometheus and Go clients send gzip
				h.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatalf("status %d", w.Code)
				}
				io.Copy(io.Discard, w.Body)
			}
		})
	}
}
