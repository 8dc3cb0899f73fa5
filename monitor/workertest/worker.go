// Package workertest is the reference worker: a small program that speaks
// the rbee worker protocol of DESIGN.md (flags, environment, ready callback,
// GET /health, POST /v1/shutdown, a trivial OpenAI-style API) and misbehaves
// on request, so the monitor can be tested against real processes. It uses
// the standard library only.
//
// Main reads the flags of the default worker command (--worker-id --model
// --model-ref --backend --device --port --callback-url) and these knobs from
// the environment (durations are Go duration strings):
//
//	RBEE_REF_LOAD_DELAY      time before it is ready (GET /health is 503 until then)
//	RBEE_REF_CRASH_AFTER     exit with RBEE_REF_EXIT_CODE this long after ready
//	RBEE_REF_EXIT_CODE       exit code of a crash (default 1)
//	RBEE_REF_CRASH_AT_START  "1": exit with RBEE_REF_EXIT_CODE at once
//	RBEE_REF_HANG_AFTER      this long after ready, every handler blocks forever
//	RBEE_REF_IGNORE_SIGTERM  "1": ignore SIGTERM (only SIGKILL ends it)
//	RBEE_REF_BUSY            "1": GET /health reports state busy
//	RBEE_REF_VRAM_BYTES      vram_bytes reported by GET /health and the callback
//	RBEE_REF_PRINT_LINES     print this many numbered lines at start
//	RBEE_REF_SPAWN_CHILD     "1": start a `sleep` child in the worker's process group
//	RBEE_REF_SHUTDOWN_DELAY  time to exit after POST /v1/shutdown (default 0)
//	RBEE_REF_NO_SHUTDOWN     "1": POST /v1/shutdown is 404, as on servers
//	                         without it (llama-server, vLLM); SIGTERM ends it
//	RBEE_REF_READINESS       "callback" (default) POSTs the callback URL when
//	                         ready; "none" does not (poll readiness)
//
// It prints "rbee-ref start <unix nanoseconds>" first, then the rbee
// environment it was given (not the token) on a "rbee-ref env" line, and "rbee-ref exit
// <unix nanoseconds>" just before it exits on its own, so tests and
// benchmarks can time restarts from the log.
package workertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// Knob names (environment variables).
const (
	EnvLoadDelay      = "RBEE_REF_LOAD_DELAY"
	EnvCrashAfter     = "RBEE_REF_CRASH_AFTER"
	EnvExitCode       = "RBEE_REF_EXIT_CODE"
	EnvCrashAtStart   = "RBEE_REF_CRASH_AT_START"
	EnvHangAfter      = "RBEE_REF_HANG_AFTER"
	EnvIgnoreSIGTERM  = "RBEE_REF_IGNORE_SIGTERM"
	EnvBusy           = "RBEE_REF_BUSY"
	EnvVRAMBytes      = "RBEE_REF_VRAM_BYTES"
	EnvPrintLines     = "RBEE_REF_PRINT_LINES"
	EnvSpawnChild     = "RBEE_REF_SPAWN_CHILD"
	EnvShutdownDelay  = "RBEE_REF_SHUTDOWN_DELAY"
	EnvNoShutdown     = "RBEE_REF_NO_SHUTDOWN"
	EnvReadiness      = "RBEE_REF_READINESS"
	EnvWorkerToken    = "RBEE_WORKER_TOKEN"
	ReadinessCallback = "callback"
	ReadinessNone     = "none"
)

// Options are the flags of the worker command.
type Options struct {
	WorkerID, Model, ModelRef, Backend string
	Device, Port                       int
	CallbackURL                        string
}

// Main runs the reference worker with os.Args and the environment, and exits
// the process.
func Main() {
	os.Exit(Run(os.Args[1:]))
}

// Run runs the worker and returns its exit code.
func Run(args []string) int {
	fmt.Printf("rbee-ref start %d\n", time.Now().UnixNano())
	fs := flag.NewFlagSet("refworker", flag.ContinueOnError)
	var o Options
	fs.StringVar(&o.WorkerID, "worker-id", "", "worker id")
	fs.StringVar(&o.Model, "model", "", "model path")
	fs.StringVar(&o.ModelRef, "model-ref", "", "model reference")
	fs.StringVar(&o.Backend, "backend", "cpu", "backend")
	fs.IntVar(&o.Device, "device", 0, "device index")
	fs.IntVar(&o.Port, "port", 0, "port to listen on (127.0.0.1)")
	fs.StringVar(&o.CallbackURL, "callback-url", "", "ready callback URL")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// What the hive put in the environment (the token stays secret).
	fmt.Printf("rbee-ref env RBEE_WORKER_ID=%s RBEE_HIVE_URL=%s RBEE_CORRELATION_ID=%s CUDA_VISIBLE_DEVICES=%s CUDA_DEVICE_ORDER=%s token_set=%t\n",
		os.Getenv("RBEE_WORKER_ID"), os.Getenv("RBEE_HIVE_URL"), os.Getenv("RBEE_CORRELATION_ID"),
		os.Getenv("CUDA_VISIBLE_DEVICES"), os.Getenv("CUDA_DEVICE_ORDER"), os.Getenv(EnvWorkerToken) != "")
	exitCode := envInt(EnvExitCode, 1)
	if os.Getenv(EnvCrashAtStart) == "1" {
		return exitNow(exitCode, "crash at start")
	}
	if os.Getenv(EnvIgnoreSIGTERM) == "1" {
		signal.Ignore(syscall.SIGTERM)
	}
	for i := range envInt(EnvPrintLines, 0) {
		fmt.Printf("rbee-ref line %d\n", i+1)
	}
	if os.Getenv(EnvSpawnChild) == "1" {
		child := exec.Command("sleep", "1000")
		if err := child.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "rbee-ref: start child: %v\n", err)
			return 3
		}
		fmt.Printf("rbee-ref child %d\n", child.Process.Pid)
	}

	w := &worker{opts: o, vram: int64(envInt(EnvVRAMBytes, 0)), busy: os.Getenv(EnvBusy) == "1",
		exit: make(chan exitReq, 1), hang: make(chan struct{})}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(o.Port)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "rbee-ref: listen: %v\n", err)
		return 4
	}
	srv := &http.Server{Handler: w.routes(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with the process

	time.Sleep(envDuration(EnvLoadDelay, 0))
	w.ready.Store(true)
	url := "http://" + ln.Addr().String()
	if os.Getenv(EnvReadiness) != ReadinessNone && o.CallbackURL != "" {
		if err := w.callback(url); err != nil {
			fmt.Fprintf(os.Stderr, "rbee-ref: ready callback: %v\n", err)
		}
	}
	if d, ok := envDurationOK(EnvCrashAfter); ok {
		time.AfterFunc(d, func() { w.exitWith(exitCode, false) })
	}
	if d, ok := envDurationOK(EnvHangAfter); ok {
		time.AfterFunc(d, func() { close(w.hang) })
	}
	req := <-w.exit
	if req.graceful {
		// Let the shutdown response (and anything else in flight) finish.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
	}
	return exitNow(req.code, "exiting")
}

func exitNow(code int, why string) int {
	fmt.Fprintf(os.Stderr, "rbee-ref: %s with code %d\n", why, code)
	fmt.Printf("rbee-ref exit %d\n", time.Now().UnixNano())
	return code
}

type worker struct {
	opts  Options
	vram  int64
	busy  bool
	ready atomic.Bool
	hang  chan struct{} // closed: handlers block forever
	exit  chan exitReq
}

type exitReq struct {
	code     int
	graceful bool // after POST /v1/shutdown: finish in-flight requests first
}

func (w *worker) exitWith(code int, graceful bool) {
	select {
	case w.exit <- exitReq{code, graceful}:
	default:
	}
}

func (w *worker) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(rw http.ResponseWriter, r *http.Request) {
		w.maybeHang(r)
		if !w.ready.Load() {
			http.Error(rw, `{"state":"loading"}`, http.StatusServiceUnavailable)
			return
		}
		state := "idle"
		if w.busy {
			state = "busy"
		}
		writeJSON(rw, map[string]any{"state": state, "vram_bytes": w.vram})
	})
	mux.HandleFunc("POST /v1/shutdown", func(rw http.ResponseWriter, r *http.Request) {
		w.maybeHang(r)
		if os.Getenv(EnvNoShutdown) == "1" {
			http.NotFound(rw, r)
			return
		}
		writeJSON(rw, map[string]any{"status": "shutting_down"})
		time.AfterFunc(envDuration(EnvShutdownDelay, 0), func() { w.exitWith(0, true) })
	})
	mux.HandleFunc("GET /v1/models", func(rw http.ResponseWriter, r *http.Request) {
		w.maybeHang(r)
		writeJSON(rw, map[string]any{"object": "list", "data": []any{
			map[string]any{"id": w.opts.ModelRef, "object": "model", "owned_by": "rbee"}}})
	})
	mux.HandleFunc("POST /v1/chat/completions", func(rw http.ResponseWriter, r *http.Request) {
		w.maybeHang(r)
		writeJSON(rw, map[string]any{"object": "chat.completion", "model": w.opts.ModelRef,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": "hello from the reference worker"}}}})
	})
	return mux
}

// maybeHang blocks forever once the hang knob fired (the process is killed
// eventually); it returns when the client gives up, so the server's
// goroutines do not pile up.
func (w *worker) maybeHang(r *http.Request) {
	select {
	case <-w.hang:
		<-r.Context().Done()
	default:
	}
}

func (w *worker) callback(url string) error {
	body, _ := json.Marshal(map[string]any{"worker_id": w.opts.WorkerID, "url": url,
		"model_ref": w.opts.ModelRef, "backend": w.opts.Backend, "device": w.opts.Device,
		"vram_bytes": w.vram})
	var last error
	for attempt := range 20 {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * 25 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.opts.CallbackURL, bytes.NewReader(body))
		if err != nil {
			cancel()
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+os.Getenv(EnvWorkerToken))
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err != nil {
			last = err
			continue
		}
		resp.Body.Close()
		switch {
		case resp.StatusCode < 300:
			return nil
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusNotFound:
			last = fmt.Errorf("status %d", resp.StatusCode)
			continue
		}
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return errors.Join(errors.New("giving up"), last)
}

func writeJSON(rw http.ResponseWriter, v any) {
	rw.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(rw).Encode(v)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, ok := envDurationOK(name); ok {
		return d
	}
	return def
}

func envDurationOK(name string) (time.Duration, bool) {
	d, err := time.ParseDuration(os.Getenv(name))
	return d, err == nil
}
