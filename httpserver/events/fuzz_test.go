package events

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
)

// parseSSE splits a stream into events the way the EventSource spec does:
// lines end at CRLF, LF or a lone CR; a blank line dispatches.
func parseSSE(b []byte) []map[string]string {
	s := strings.ReplaceAll(strings.ReplaceAll(string(b), "\r\n", "\n"), "\r", "\n")
	var out []map[string]string
	cur := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if line == "" {
			if len(cur) > 0 {
				out = append(out, cur)
			}
			cur = map[string]string{}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		if field == "data" {
			if prev, ok := cur["data"]; ok {
				value = prev + "\n" + value
			}
		}
		cur[field] = value
	}
	return out
}

// FuzzEventFrame encodes events whose free text comes from the fuzzer
// (error messages, reasons, worker ids, model refs: all things a worker, a
// hub or a client can influence) and checks that the SSE frame is exactly
// one event, per the EventSource parsing rules, whose id, type and data
// decode back to what was encoded: no text can end the frame early or
// inject a field.
func FuzzEventFrame(f *testing.F) {
	f.Add(uint64(1), uint8(0), "worker-1", "", "", "hf:a/b", "", int64(0))
	f.Add(uint64(2), uint8(1), "worker-2", "exit 1\n\nevent: reset\ndata: {}", "crash\r\nid: 99", "file:/m", "", int64(5))
	f.Add(uint64(1<<63), uint8(5), "w\x00", "\r", "\n", "\u2028\u2029", "boom\n\ndata: x", int64(-1))
	f.Add(uint64(0), uint8(6), "\xff\xfe", "data:", ":", "id: 1", "event: x\r", int64(1<<62))
	f.Fuzz(func(t *testing.T, id uint64, typeIndex uint8, workerID, lastError, reason, modelRef, provErr string, bytesDone int64) {
		types := Types()
		typ := types[int(typeIndex)%len(types)]
		at := time.Date(2026, 11, 27, 1, 2, 3, 4, time.UTC)
		w := &registry.Worker{ID: workerID, ModelRef: modelRef, State: registry.StateIdle, LastError: lastError, CreatedAt: at,
			LastExit: &registry.Exit{Reason: reason, At: at}}
		ev := &Event{ID: id, Type: typ, Time: at, Worker: w, Reason: reason, From: registry.StateLoading, To: registry.StateIdle,
			Provision: &provisioner.Status{ID: "prov-" + workerID, ModelRef: modelRef, State: provisioner.StateFailed, BytesDone: bytesDone, Error: provErr},
			Model:     &provisioner.Model{Ref: modelRef, LocalPath: lastError}}
		e, err := encode(ev, 0)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		if !bytes.HasSuffix(e.frame, []byte("\n\n")) {
			t.Fatalf("frame does not end with a blank line: %q", e.frame)
		}
		evs := parseSSE(e.frame)
		if len(evs) != 1 {
			t.Fatalf("frame parses as %d events: %q", len(evs), e.frame)
		}
		got := evs[0]
		if len(got) != 3 || got["id"] != strconv.FormatUint(id, 10) || got["event"] != typ || got["data"] != string(e.data) {
			t.Fatalf("frame fields %q, want id %d, event %s and the data", got, id, typ)
		}
		var back Event
		if err := json.Unmarshal([]byte(got["data"]), &back); err != nil {
			t.Fatalf("data does not decode: %v", err)
		}
		if back.ID != id || back.Type != typ || back.Worker == nil || back.Provision == nil || back.Provision.BytesDone != bytesDone {
			t.Fatalf("decoded %+v", back)
		}
		for _, s := range [][2]string{{workerID, back.Worker.ID}, {lastError, back.Worker.LastError}, {reason, back.Reason}, {modelRef, back.Provision.ModelRef}, {provErr, back.Provision.Error}} {
			if utf8.ValidString(s[0]) && s[0] != s[1] {
				t.Fatalf("text %q came back as %q", s[0], s[1])
			}
		}
	})
}

// FuzzWatchRead feeds arbitrary bytes to the client's stream parser (what
// queen-rbee runs against a hive): it never panics, and every event it
// delivers was a data field that decodes.
func FuzzWatchRead(f *testing.F) {
	ok, _ := encode(&Event{ID: 7, Type: TypeHiveShuttingDown, Time: time.Unix(0, 0).UTC()}, 0)
	f.Add(ok.frame)
	f.Add([]byte(": heartbeat\n\nid: 5\n\n"))
	f.Add([]byte("id: 3\nevent: x\ndata: {\"id\":3,\n" + "data: \"type\":\"reset\"}\n\n"))
	f.Add([]byte("data: not json\n\ndata: {\"id\":-1}\n\n"))
	f.Add([]byte("id: 18446744073709551616\n\ndata: {}\r\n\r\n"))
	f.Add([]byte(strings.Repeat("data: x", 20000) + "\n\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s := &Stream{events: make(chan Event, 1), done: make(chan struct{})}
		w := &watcher{s: s, opts: WatchOptions{IdleTimeout: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
		st := &stream{body: io.NopCloser(bytes.NewReader(body)), cancel: func() {}, idle: time.AfterFunc(time.Hour, func() {})}
		defer st.idle.Stop()
		got := make(chan int)
		go func() {
			n := 0
			for range s.events {
				n++
			}
			got <- n
		}()
		err := w.read(ctx, st)
		close(s.events)
		n := <-got
		if err == nil {
			t.Fatalf("read of a finite body returned nil")
		}
		if n > bytes.Count(body, []byte("data")) {
			t.Fatalf("%d events from %d data fields", n, bytes.Count(body, []byte("data")))
		}
	})
}
