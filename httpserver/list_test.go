package httpserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/registry"
)

// The list answer comes from the registry's cached encodings; it must be
// byte for byte what echo's c.JSON writes for the same records, with and
// without filters, after changes, and indented with ?pretty.
func TestListAnswerIsTheJSONOfTheRecords(t *testing.T) {
	h := newHarness(t, nil)
	now := time.Date(2026, 11, 27, 1, 2, 3, 4, time.UTC)
	for i := range 6 {
		w := registry.Worker{ID: fmt.Sprintf("worker-00000000-0000-4000-8000-%012d", i), ModelRef: "hf:a/b", Backend: "cpu",
			LastError: `<"quoted" & escaped>`, CreatedAt: now.Add(time.Duration(i%3) * time.Second)}
		if i%2 == 1 {
			w.ModelRef = "hf:c/d"
		}
		if _, err := h.reg.Register(w); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.reg.Update("worker-00000000-0000-4000-8000-000000000002", func(w *registry.Worker) error {
		w.State, w.ReadyAt, w.URL, w.Port = registry.StateIdle, &now, "http://127.0.0.1:9", 9
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	encode := func(f registry.Filter, indent bool) []byte {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		if indent {
			enc.SetIndent("", "  ")
		}
		if err := enc.Encode(client.WorkerList{Workers: h.reg.List(f)}); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	for _, c := range []struct {
		query  string
		filter registry.Filter
		indent bool
	}{
		{"", registry.Filter{}, false},
		{"?state=idle", registry.Filter{State: registry.StateIdle}, false},
		{"?state=busy", registry.Filter{State: registry.StateBusy}, false},
		{"?model_ref=hf:c/d", registry.Filter{ModelRef: "hf:c/d"}, false},
		{"?pretty", registry.Filter{}, true},
	} {
		a := h.do("GET", "/v1/workers/list"+c.query, "")
		if a.status != 200 {
			t.Fatalf("%s: status %d: %s", c.query, a.status, a.body)
		}
		if ct := a.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", c.query, ct)
		}
		if want := encode(c.filter, c.indent); !bytes.Equal(a.body, want) {
			t.Errorf("%s:\n got %s\nwant %s", c.query, a.body, want)
		}
	}
	if _, err := h.reg.Remove("worker-00000000-0000-4000-8000-000000000000"); err != nil {
		t.Fatal(err)
	}
	if a, want := h.do("GET", "/v1/workers/list", ""), encode(registry.Filter{}, false); !bytes.Equal(a.body, want) {
		t.Errorf("after a removal:\n got %s\nwant %s", a.body, want)
	}
}
