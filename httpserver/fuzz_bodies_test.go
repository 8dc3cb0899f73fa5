package httpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpmiddleware"
	"github.com/rbee-hive/rbee-hive/monitor"
	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/provisioner/hubtest"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/restart"
)

// fuzzStack is the whole hive behind the server, built once per fuzz
// target (newStack needs a *testing.T).
type fuzzStack struct {
	*harness
	mon   *monitor.Monitor
	cache string
	model string
}

func newFuzzStack(tb testing.TB) *fuzzStack {
	tb.Helper()
	fs := &fuzzStack{cache: tb.TempDir()}
	modelDir := tb.TempDir()
	fs.model = filepath.Join(modelDir, "tiny.gguf")
	if err := os.WriteFile(fs.model, bytes.Repeat([]byte("m"), 4096), 0o644); err != nil {
		tb.Fatal(err)
	}
	hub, err := hubtest.New(hubtest.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { hub.Close() })
	prov, err := provisioner.New(provisioner.Config{
		CacheDir: fs.cache, Endpoint: hub.URL(), Token: "-", LocalDirs: []string{modelDir},
		Catalog:      []provisioner.CatalogEntry{{Name: "tiny", ModelRef: "file:" + fs.model}},
		RetryInitial: time.Millisecond, MaxAttempts: 1, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { prov.Close() })
	srv := httptest.NewUnstartedServer(nil)
	tb.Cleanup(srv.Close)
	fs.harness = newHarness(tb, func(c *Config) {
		mon, res := startTestMonitor(tb, c.Registry, prov, "http://"+srv.Listener.Addr().String(), func(mc *monitor.Config) {
			mc.Grace, mc.TermTimeout = 100*time.Millisecond, time.Second
			mc.DefaultPolicy = restart.Never
		})
		c.Resources = res
		fs.mon = mon
		c.Monitor = mon
		c.Provisioner = prov
	})
	srv.Config.Handler = fs.server.Handler()
	srv.Start()
	fs.harness.srv.Close()
	fs.harness.srv = srv
	return fs
}

// allowed5xx are the server-side answers a well-formed request may get
// from this stack: upstream and capacity conditions, never a client's
// mistake and never INTERNAL or SPAWN_FAILED.
var allowed5xx = map[string]bool{
	CodeUpstreamError: true, CodeInsufficientResources: true, CodeBackendUnavailable: true, CodeInsufficientStorage: true,
}

// FuzzHandlerBodies sends arbitrary JSON bodies (and query strings) to
// every route that reads one, with the admin token, through the real
// registry, provisioner (local dir and an empty loopback hub) and monitor.
// Every answer is a JSON success or the error envelope; no 500, no
// 5xx but the capacity and upstream ones; nothing is written to the
// cache; a worker the body managed to start is stopped after.
func FuzzHandlerBodies(f *testing.F) {
	routes := []struct{ method, path string }{
		{"POST", "/v1/workers/spawn"},
		{"POST", "/v1/workers/ready"},
		{"POST", "/v1/heartbeat"},
		{"POST", "/v1/workers/shutdown"},
		{"POST", "/v1/models/provision"},
		{"DELETE", "/v1/models/evict"},
		{"GET", "/v1/workers/list"},
		{"GET", "/v1/workers/health"},
		{"GET", "/v1/workers/logs"},
		{"GET", "/v1/models/provision/x"},
	}
	seeds := []struct {
		route       uint8
		body, query string
	}{
		{0, `{"model_ref":"tiny","backend":"cpu","restart_policy":"never"}`, ""},
		{0, `{"model_ref":"hf:acme/none/x.gguf","backend":"cpu"}`, ""},
		{0, `{"model_ref":"tiny","backend":"cuda","device":7}`, ""},
		{0, `{"model_ref":"tiny","backend":"cpu","device":-1}`, ""},
		{0, `{"model_ref":"tiny","backend":"rocm","restart_policy":"sometimes"}`, ""},
		{1, `{"worker_id":"worker-x","url":"http://127.0.0.1:1","model_ref":"tiny","backend":"cpu","device":0,"vram_bytes":-5}`, ""},
		{2, `{"worker_id":"worker-x","state":"sleeping","vram_bytes":1e300}`, ""},
		{3, `{"worker_id":"worker-x","timeout_s":-1}`, ""},
		{3, `{"worker_id":"worker-x","timeout_s":1e308}`, ""},
		{4, `{"model_ref":"tiny"}`, "wait=true"},
		{4, `{"model_ref":"hf:acme/none"}`, "wait=maybe"},
		{5, `{"model_ref":"tiny"}`, ""},
		{5, ``, "model_ref=hf:../../etc"},
		{6, ``, "state=idle&model_ref=tiny"},
		{6, ``, "state=%ff"},
		{7, ``, "worker_id=../../etc/passwd"},
		{8, ``, "worker_id=worker-x&tail=-1"},
		{8, ``, "worker_id=worker-x&tail=99999999999999999999"},
		{9, ``, ""},
		{0, `{"model_ref":"tiny","backend":"cpu","wait":true,"x":1}`, ""},
		{0, `{"model_ref":"` + strings.Repeat("a", 600) + `","backend":"cpu"}`, ""},
		{4, `{"model_ref":null}`, ""},
		{2, `[]`, ""},
		{1, `{"worker_id":"worker-x"}{}`, ""},
	}
	for _, s := range seeds {
		f.Add(s.route, s.body, s.query)
	}
	st := newFuzzStack(f)
	f.Fuzz(func(t *testing.T, route uint8, body, query string) {
		rt := routes[int(route)%len(routes)]
		target := rt.path
		if query != "" {
			target += "?" + query
		}
		req, err := http.NewRequest(rt.method, st.srv.URL+"/", strings.NewReader(body))
		if err != nil {
			return
		}
		// Set the target raw, so that any query the fuzzer makes is sent.
		req.URL.Opaque = target
		if strings.ContainsFunc(target, func(r rune) bool { return r <= ' ' || r >= 0x7f || r == '#' }) {
			return // not something an HTTP client sends
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := st.srv.Client().Do(req.WithContext(ctx))
		if err != nil {
			t.Fatalf("%s %s: %v", rt.method, target, err)
		}
		var raw bytes.Buffer
		raw.ReadFrom(resp.Body)
		resp.Body.Close()
		defer func() {
			if ws := st.reg.List(registry.Filter{}); len(ws) > 0 {
				sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer scancel()
				st.mon.StopAll(sctx)
			}
		}()
		if resp.StatusCode >= 400 {
			var e httpmiddleware.ErrorBody
			if err := json.Unmarshal(raw.Bytes(), &e); err != nil || e.Error.Code == "" {
				t.Fatalf("%s %s %q: %d without the envelope: %q", rt.method, target, body, resp.StatusCode, raw.Bytes())
			}
			if resp.StatusCode >= 500 && !allowed5xx[e.Error.Code] {
				t.Fatalf("%s %s %q: %d %s", rt.method, target, body, resp.StatusCode, raw.Bytes())
			}
		}
		// Nothing downloaded: the hub has no repos and the local model is
		// used in place.
		filepath.WalkDir(st.cache, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.Contains(path, "models--") && !strings.HasSuffix(path, ".lock") {
				t.Fatalf("%s %s %q wrote %s into the cache", rt.method, target, body, path)
			}
			return nil
		})
	})
}
