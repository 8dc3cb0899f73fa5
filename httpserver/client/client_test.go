package client

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestSSEScanner(t *testing.T) {
	stream := ": comment\n\nevent: progress\ndata: {\"provision_id\":\"p\",\"state\":\"downloading\",\"bytes_done\":5}\r\n\r\n" +
		"event: mystery\ndata: x\n\n" +
		"event: done\ndata: {\"model_ref\":\"hf:a/b\",\ndata: \"in_use_by\":[]}\n\n"
	s := &ProvisionEventStream{body: io.NopCloser(strings.NewReader(stream)), sc: newSSEScanner(strings.NewReader(stream))}
	ev, err := s.Next()
	if err != nil || ev.Type != "progress" || ev.Status.BytesDone != 5 || ev.Status.State != "downloading" {
		t.Fatalf("progress: %v %+v", err, ev)
	}
	ev, err = s.Next()
	if err != nil || ev.Type != "done" || ev.Model.ModelRef != "hf:a/b" {
		t.Fatalf("done (multi-line data, unknown event skipped): %v %+v", err, ev)
	}
	if _, err := s.Next(); err != io.EOF {
		t.Fatalf("after done: %v", err)
	}

	cut := "event: progress\ndata: {}\n\n"
	s = &ProvisionEventStream{body: io.NopCloser(strings.NewReader(cut)), sc: newSSEScanner(strings.NewReader(cut))}
	s.Next()
	if _, err := s.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("stream cut before done: %v", err)
	}
}

// Answers that are not the envelope (a proxy's error page) still become
// *APIError with the status.
func TestNonEnvelopeError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(HeaderCorrelationID, "cid")
		http.Error(w, "bad gateway from proxy", http.StatusBadGateway)
	}))
	t.Cleanup(srv.Close)
	_, err := New(srv.URL+"/", "t").Status(t.Context())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 502 || ae.Code != "UNKNOWN" || !strings.Contains(ae.Message, "proxy") || ae.CorrelationID != "cid" {
		t.Fatalf("%#v", err)
	}
}

func TestRequestShape(t *testing.T) {
	seen := make(chan *http.Request, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		w.Write([]byte(`{"model_ref":"x","freed_bytes":9}`))
	}))
	t.Cleanup(srv.Close)
	c := New(srv.URL, "tok")
	res, err := c.Evict(WithCorrelationID(t.Context(), "cid-9"), "hf:a/b@main")
	if err != nil || res.FreedBytes != 9 {
		t.Fatalf("%v %+v", err, res)
	}
	r := <-seen
	if r.Method != "DELETE" || r.URL.Path != "/v1/models/evict" || r.URL.Query().Get("model_ref") != "hf:a/b@main" ||
		r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get(HeaderCorrelationID) != "cid-9" {
		t.Fatalf("request %s %s %v", r.Method, r.URL, r.Header)
	}
	if c.BaseURL() != srv.URL || c.Token() != "tok" || c.HTTPClient() != http.DefaultClient {
		t.Fatal("accessors")
	}
}
