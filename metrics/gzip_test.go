package metrics

import (
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// acceptEncodings are headers clients send, and corner cases of the
// negotiation.
var acceptEncodings = [][]string{
	nil, {""}, {"gzip"}, {"gzip, deflate, br"}, {"identity"}, {"*"}, {"gzip, identity"},
	{"identity;q=0.5, gzip"}, {"gzip;q=0.5, identity"}, {"gzip;q=0"}, {"gzip;q=0, *"},
	{"*;q=0.5, gzip;q=0.1"}, {"identity;q=0.2, *;q=0.5, gzip;q=0.3"}, {"identity;q=0, gzip;q=0.001"},
	{"br", "gzip"}, {"deflate"}, {"gzip;level=1"}, {"x, gzip"}, {"x;q=bad, gzip"}, {"GZIP"},
	{"gzip;q=1.0"}, {"identity;q=1, gzip;q=1"}, {" gzip ; q=0.9 , identity ; q=0.8"},
}

// TestGzipNegotiatesAsPromhttp: for every header, the hive's handler picks
// the same encoding as promhttp with its own compression, and a gzip body
// decompresses to the exposition.
func TestGzipNegotiatesAsPromhttp(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "rbee_hive_test_total", Help: "A test counter."})
	c.Add(42)
	reg.MustRegister(c)
	ours := newHandler(reg)
	theirs := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	for _, ae := range acceptEncodings {
		serve := func(h http.Handler) *httptest.ResponseRecorder {
			r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			for _, v := range ae {
				r.Header.Add("Accept-Encoding", v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			return w
		}
		got, want := serve(ours), serve(theirs)
		if got.Code != 200 || got.Header().Get("Content-Encoding") != want.Header().Get("Content-Encoding") {
			t.Errorf("Accept-Encoding %q: status %d, Content-Encoding %q; promhttp: %q", ae, got.Code,
				got.Header().Get("Content-Encoding"), want.Header().Get("Content-Encoding"))
			continue
		}
		if got.Header().Get("Vary") == "" || got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
			t.Errorf("Accept-Encoding %q: headers %v; promhttp: %v", ae, got.Header(), want.Header())
		}
		body := got.Body.String()
		if got.Header().Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(got.Body)
			if err != nil {
				t.Fatalf("Accept-Encoding %q: %v", ae, err)
			}
			b, err := io.ReadAll(zr)
			if err != nil {
				t.Fatalf("Accept-Encoding %q: %v", ae, err)
			}
			body = string(b)
		}
		if !strings.Contains(body, "rbee_hive_test_total 42\n") {
			t.Errorf("Accept-Encoding %q: body %q", ae, body)
		}
	}
}

type failingCollector struct{ desc *prometheus.Desc }

func (f failingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }
func (f failingCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(f.desc, errors.New("device gone"))
}

// TestGzipLeavesTheErrorAnswerPlain: when nothing could be gathered,
// promhttp answers 500 in plain text (it removes Content-Encoding first);
// that answer is not compressed.
func TestGzipLeavesTheErrorAnswerPlain(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(failingCollector{prometheus.NewDesc("rbee_hive_broken", "Broken.", nil, nil)})
	r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	r.Header.Set("Accept-Encoding", "gzip")
	w := httptest.NewRecorder()
	newHandler(reg).ServeHTTP(w, r)
	if w.Code != http.StatusInternalServerError || w.Header().Get("Content-Encoding") != "" || !strings.Contains(w.Body.String(), "device gone") {
		t.Fatalf("status %d, Content-Encoding %q, body %q", w.Code, w.Header().Get("Content-Encoding"), w.Body.String())
	}
}

// TestGzipEmptyAnswer: a handler that writes nothing still sends a valid
// (empty) gzip stream, since the header promised one.
func TestGzipEmptyAnswer(t *testing.T) {
	h := gzipFast(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	r.Header.Set("Accept-Encoding", "gzip")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	zr, err := gzip.NewReader(w.Body)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(zr); err != nil || len(b) != 0 {
		t.Fatalf("body %q, %v", b, err)
	}
}
