package httpserver

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

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

// BenchmarkListWorkers1000 is GET /v1/workers/list of 1,000 workers with
// every field of a live record set, as a fleet-sized hive serves it.
func BenchmarkListWorkers1000(b *testing.B) {
	h := newHarness(b, nil)
	now := time.Now().UTC()
	for i := range 1000 {
		id := fmt.Sprintf("worker-00000000-0000-4000-8000-%012d", i)
		ready := now.Add(time.Duration(i) * time.Millisecond)
		w := registry.Worker{ID: id, PID: 10000 + i, ModelRef: "hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
			ModelPath: "/var/cache/huggingface/hub/models--TheBloke--TinyLlama-1.1B-Chat-v1.0-GGUF/snapshots/52e7645ba7c309695bec7ac98f4f005b139cf465/tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
			Backend:   "cuda", Device: i % 8, State: registry.StateIdle, URL: fmt.Sprintf("http://127.0.0.1:%d", 20000+i), Port: 20000 + i,
			VRAMBytes: 1500000000, RestartPolicy: "on-failure", CreatedAt: now, ReadyAt: &ready, LastHeartbeat: &ready}
		if _, err := h.reg.Register(w); err != nil {
			b.Fatal(err)
		}
	}
	req, _ := http.NewRequest("GET", h.srv.URL+"/v1/workers/list", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	hc := h.srv.Client()
	b.ReportAllocs()
	var n int64
	for b.Loop() {
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	b.SetBytes(n)
}
