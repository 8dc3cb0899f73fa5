package httpserver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/rbee-hive/rbee-hive/httpmiddleware"
	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/monitor"
	"github.com/rbee-hive/rbee-hive/registry"
)

func (s *Server) monitor() (*monitor.Monitor, error) {
	if s.cfg.Monitor == nil {
		return nil, unavailable("worker supervision")
	}
	return s.cfg.Monitor, nil
}

// POST /v1/workers/spawn
func (s *Server) spawn(c echo.Context) error {
	var req client.SpawnRequest
	if err := decodeJSON(c.Request(), &req, false); err != nil {
		return err
	}
	if req.ModelRef == "" {
		return invalidField("model_ref", "required")
	}
	if req.Backend == "" {
		return invalidField("backend", "required")
	}
	if req.Device != nil && *req.Device < 0 {
		return invalidField("device", "must be >= 0")
	}
	mon, err := s.monitor()
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	w, err := mon.Spawn(ctx, monitor.SpawnRequest{
		ModelRef:      req.ModelRef,
		Backend:       req.Backend,
		Device:        req.Device,
		RestartPolicy: req.RestartPolicy,
		CorrelationID: correlationID(c),
	})
	if err != nil {
		return err
	}
	if !req.Wait {
		return c.JSON(http.StatusAccepted, w)
	}
	ready, err := mon.WaitReady(ctx, w.ID)
	switch {
	case err == nil && (ready.State == registry.StateIdle || ready.State == registry.StateBusy):
		return c.JSON(http.StatusOK, ready)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case err == nil:
		msg := ready.LastError
		if msg == "" {
			msg = fmt.Sprintf("worker ended in state %s before it became ready", ready.State)
		}
		return newError(http.StatusInternalServerError, CodeSpawnFailed, msg, map[string]any{"worker_id": w.ID})
	default:
		return &apiError{status: http.StatusInternalServerError, code: CodeSpawnFailed,
			message: fmt.Sprintf("worker %s did not become ready: %v", w.ID, err),
			details: map[string]any{"worker_id": w.ID}, cause: err}
	}
}

// GET /v1/workers/list
func (s *Server) listWorkers(c echo.Context) error {
	state := registry.State(c.QueryParam("state"))
	if state != "" && !state.Valid() {
		return invalidField("state", fmt.Sprintf("unknown state %q", state))
	}
	ref := c.QueryParam("model_ref")
	if ref != "" && s.cfg.Provisioner != nil {
		// Workers carry canonical references; let a catalog name match.
		if r, err := s.cfg.Provisioner.Resolve(ref); err == nil {
			ref = r.String()
		}
	}
	f := registry.Filter{State: state, ModelRef: ref}

	// A poller that sends back the ETag of its last answer gets 304 while
	// no record has changed: the registry's sequence number moves with
	// every change a list can show. (A fleet's list is hundreds of KiB;
	// on loopback its cost is the kernel copying those bytes.)
	hdr := c.Response().Header()
	seq := s.cfg.Registry.Seq()
	if etagMatches(c.Request().Header.Get("If-None-Match"), s.listETag(seq)) {
		hdr.Set("ETag", s.listETag(seq))
		hdr.Set("Cache-Control", "no-cache")
		return c.NoContent(http.StatusNotModified)
	}
	if _, pretty := c.QueryParams()["pretty"]; pretty {
		return c.JSON(http.StatusOK, client.WorkerList{Workers: s.cfg.Registry.List(f)})
	}
	// The registry keeps each record's encoding, so a fleet's list is a
	// copy rather than a thousand encodings; the bytes are those c.JSON
	// writes for client.WorkerList.
	bp := listBufs.Get().(*[]byte)
	defer listBufs.Put(bp)
	b := append((*bp)[:0], `{"workers":`...)
	b = s.cfg.Registry.AppendJSON(b, f)
	b = append(b, "}\n"...)
	*bp = b
	// The sequence number unchanged across the encoding means the body is
	// that of seq; otherwise the answer goes without a validator.
	if s.cfg.Registry.Seq() == seq {
		hdr.Set("ETag", s.listETag(seq))
		hdr.Set("Cache-Control", "no-cache")
	}
	// A known length spares net/http the chunked encoding of a large body.
	hdr.Set(echo.HeaderContentLength, strconv.Itoa(len(b)))
	return c.JSONBlob(http.StatusOK, b)
}

// listETag is the strong validator of the list answers at registry seq.
// The server's epoch keeps a hive without a state dir, whose seq starts
// again at zero, from repeating an earlier hive's tag.
func (s *Server) listETag(seq uint64) string {
	return `"` + s.epoch + "." + strconv.FormatUint(seq, 10) + `"`
}

// etagMatches implements If-None-Match's weak comparison (RFC 9110 13.1.2)
// of a header value, a comma-separated list of tags or "*", with etag.
func etagMatches(header, etag string) bool {
	for t := range strings.SplitSeq(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// listBufs holds the buffers of list answers (hundreds of KiB for a fleet).
var listBufs = sync.Pool{New: func() any { return new([]byte) }}

// POST /v1/workers/ready (worker callback)
func (s *Server) ready(c echo.Context) error {
	var req client.ReadyRequest
	if err := decodeJSON(c.Request(), &req, false); err != nil {
		return err
	}
	if err := s.checkCallback(c, req.WorkerID); err != nil {
		return err
	}
	if req.URL == "" {
		return invalidField("url", "required")
	}
	if req.VRAMBytes != nil && *req.VRAMBytes < 0 {
		return invalidField("vram_bytes", "must be >= 0")
	}
	mon, err := s.monitor()
	if err != nil {
		return err
	}
	w, err := mon.Ready(monitor.ReadyReport{
		WorkerID: req.WorkerID, URL: req.URL, ModelRef: req.ModelRef,
		Backend: req.Backend, Device: req.Device, VRAMBytes: req.VRAMBytes,
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, w)
}

// POST /v1/heartbeat (worker callback)
func (s *Server) heartbeat(c echo.Context) error {
	var req client.HeartbeatRequest
	if err := decodeJSON(c.Request(), &req, false); err != nil {
		return err
	}
	if err := s.checkCallback(c, req.WorkerID); err != nil {
		return err
	}
	state := registry.State(req.State)
	if state != "" && state != registry.StateIdle && state != registry.StateBusy {
		return invalidField("state", "must be idle or busy")
	}
	if req.VRAMBytes != nil && *req.VRAMBytes < 0 {
		return invalidField("vram_bytes", "must be >= 0")
	}
	mon, err := s.monitor()
	if err != nil {
		return err
	}
	w, err := mon.Heartbeat(monitor.Heartbeat{WorkerID: req.WorkerID, State: state, VRAMBytes: req.VRAMBytes})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, w)
}

// checkCallback validates a callback's worker id. A worker that
// authenticated with its own token was matched to the body's worker_id by
// the auth middleware (from these same bytes); this re-check keeps that
// invariant explicit.
func (s *Server) checkCallback(c echo.Context, workerID string) error {
	if err := checkWorkerID("worker_id", workerID); err != nil {
		return err
	}
	info := httpmiddleware.InfoFrom(c.Request().Context())
	if info != nil && info.Principal == httpmiddleware.PrincipalWorker && info.WorkerID != workerID {
		return newError(http.StatusUnauthorized, httpmiddleware.CodeInvalidAPIKey, "worker token does not match worker_id", nil)
	}
	return nil
}

// POST /v1/workers/shutdown
func (s *Server) shutdownWorker(c echo.Context) error {
	var req client.ShutdownRequest
	if err := decodeJSON(c.Request(), &req, false); err != nil {
		return err
	}
	if err := checkWorkerID("worker_id", req.WorkerID); err != nil {
		return err
	}
	if req.TimeoutS < 0 || math.IsNaN(req.TimeoutS) || req.TimeoutS > 3600 {
		return invalidField("timeout_s", "must be between 0 and 3600 seconds")
	}
	mon, err := s.monitor()
	if err != nil {
		return err
	}
	// The stop sequence runs to its end even if the caller goes away: a
	// half-stopped worker helps nobody.
	ctx := context.WithoutCancel(c.Request().Context())
	outcome, err := mon.Stop(ctx, req.WorkerID, time.Duration(req.TimeoutS*float64(time.Second)))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, client.ShutdownResult{WorkerID: req.WorkerID, Outcome: string(outcome)})
}

// GET /v1/workers/health
func (s *Server) workersHealth(c echo.Context) error {
	id := c.QueryParam("worker_id")
	if id != "" {
		if err := checkWorkerID("worker_id", id); err != nil {
			return err
		}
	}
	mon, err := s.monitor()
	if err != nil {
		return err
	}
	hs, err := mon.Health(id)
	if err != nil {
		return err
	}
	out := client.HealthList{Workers: make([]client.WorkerHealth, 0, len(hs))}
	for _, h := range hs {
		out.Workers = append(out.Workers, client.WorkerHealth{
			WorkerID: h.WorkerID, State: string(h.State), Healthy: h.Healthy,
			ConsecutiveFailures: h.ConsecutiveFailures, LastProbeAt: h.LastProbeAt,
			LastHeartbeat: h.LastHeartbeat, RestartCount: h.RestartCount, LastExit: h.LastExit,
		})
	}
	return c.JSON(http.StatusOK, out)
}

// Worker log tails.
const (
	defaultLogTail = 100
	maxLogTail     = 10000
)

// GET /v1/workers/logs
func (s *Server) workerLogs(c echo.Context) error {
	id := c.QueryParam("worker_id")
	// Checked before anything else touches it: the id names a log file.
	if err := checkWorkerID("worker_id", id); err != nil {
		return err
	}
	tail := defaultLogTail
	if t := c.QueryParam("tail"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 1 || n > maxLogTail {
			return invalidField("tail", fmt.Sprintf("must be an integer from 1 to %d", maxLogTail))
		}
		tail = n
	}
	mon, err := s.monitor()
	if err != nil {
		return err
	}
	logs, err := mon.Logs(id, tail)
	if err != nil {
		return err
	}
	c.Response().Header().Set("X-Content-Type-Options", "nosniff")
	return c.Blob(http.StatusOK, "text/plain; charset=utf-8", logs)
}
