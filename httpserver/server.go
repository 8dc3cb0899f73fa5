package httpserver

import (
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/rbee-hive/rbee-hive/httpmiddleware"
	"github.com/rbee-hive/rbee-hive/metrics"
	"github.com/rbee-hive/rbee-hive/monitor"
	"github.com/rbee-hive/rbee-hive/provisioner"
	"github.com/rbee-hive/rbee-hive/registry"
	"github.com/rbee-hive/rbee-hive/resources"
)

// APIVersion is served by GET /v1/health.
const APIVersion = "v1"

// Lifecycle is the daemon's shutdown coordinator (*shutdown.Coordinator).
type Lifecycle interface {
	ShuttingDown() bool
	RequestShutdown(reason string)
}

// Config wires the server to the hive's modules.
type Config struct {
	Registry    *registry.Registry
	Resources   *resources.Manager
	Provisioner *provisioner.Provisioner // nil: model routes answer 503 UNAVAILABLE
	Monitor     *monitor.Monitor         // nil: worker routes answer 503 UNAVAILABLE
	Metrics     *metrics.Metrics         // nil: /metrics answers 503, requests are not counted
	Lifecycle   Lifecycle                // nil: admin shutdown answers 503
	Events      http.Handler             // GET /v1/events; nil: 503 with the envelope
	Token       string                   // admin bearer token; "" = no auth (cmd allows that on loopback only)
	AuditLog    io.Writer                // JSON lines; nil = discard
	Logger      *slog.Logger
	Version     string
	StartedAt   time.Time
}

// Server is the HTTP API. Build it with New, serve Handler (or
// HTTPServer).
type Server struct {
	cfg     Config
	log     *slog.Logger
	echo    *echo.Echo
	handler http.Handler
	epoch   string // random per Server: part of the list ETag
}

// The worker callbacks: they accept the per-worker token too, and stay
// open while the hive drains (heartbeats keep workers healthy until they
// are stopped).
var workerCallbacks = []httpmiddleware.Route{
	{Method: http.MethodPost, Path: "/v1/workers/ready"},
	{Method: http.MethodPost, Path: "/v1/heartbeat"},
}

// newEpoch returns a random tag, different for every Server.
func newEpoch() string {
	return rand.Text()[:10]
}

// New builds the server. Registry and Resources are required.
func New(cfg Config) (*Server, error) {
	if cfg.Registry == nil {
		return nil, errors.New("httpserver: Config.Registry is required")
	}
	if cfg.Resources == nil {
		return nil, errors.New("httpserver: Config.Resources is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StartedAt.IsZero() {
		cfg.StartedAt = time.Now()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, epoch: newEpoch()}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.Use(s.routeInfo, s.recoverPanics, s.drainGate)
	s.routes(e)
	s.echo = e

	var authenticate httpmiddleware.WorkerAuthenticator
	if cfg.Monitor != nil {
		authenticate = cfg.Monitor.AuthenticateWorker
	}
	audit := httpmiddleware.NewAuditLog(cfg.AuditLog, func(err error) {
		s.log.Error("writing the audit log failed", "err", err)
	})
	var observe httpmiddleware.Observer
	if cfg.Metrics != nil {
		// route is the template or "" (metrics labels that "unmatched"):
		// never the raw path, whose values are unbounded.
		observe = cfg.Metrics.ObserveRequest
	}
	s.handler = httpmiddleware.Stack(httpmiddleware.Config{
		Logger:  cfg.Logger,
		Observe: observe,
		// Probes, scrapes and heartbeats arrive all the time; their
		// successes log at Debug.
		QuietRoutes: []httpmiddleware.Route{
			{Method: http.MethodGet, Path: "/v1/health"},
			{Method: http.MethodPost, Path: "/v1/heartbeat"},
			{Method: http.MethodGet, Path: "/v1/metrics"},
			{Method: http.MethodGet, Path: "/metrics"},
		},
		Auth: httpmiddleware.AuthConfig{
			Token:              cfg.Token,
			Exempt:             []httpmiddleware.Route{{Method: http.MethodGet, Path: "/v1/health"}},
			WorkerRoutes:       workerCallbacks,
			AuthenticateWorker: authenticate,
			Audit:              audit,
		},
	}, e)
	return s, nil
}

// Handler serves the API with every middleware: authentication runs
// before routing.
func (s *Server) Handler() http.Handler { return s.handler }

// HTTPServer returns an *http.Server for addr with the daemon's limits:
// 10s to read headers, 60s to read a body (net/http clears that deadline
// once the body is read, so long answers are not cut), no write timeout
// (event streams and waiting spawns run long; their contexts bound them),
// 120s idle keep-alive, 16 KiB of headers (larger is a clean 431).
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// routes registers every route of DESIGN.md's API table. openapi.json
// documents exactly these (TestRoutesMatchOpenAPI).
func (s *Server) routes(e *echo.Echo) {
	e.POST("/v1/workers/spawn", s.spawn)
	e.GET("/v1/workers/list", s.listWorkers)
	e.POST("/v1/workers/ready", s.ready)
	e.POST("/v1/heartbeat", s.heartbeat)
	e.POST("/v1/workers/shutdown", s.shutdownWorker)
	e.GET("/v1/workers/health", s.workersHealth)
	e.GET("/v1/workers/logs", s.workerLogs)

	e.POST("/v1/models/provision", s.provision)
	e.GET("/v1/models/provision/:id", s.provisionStatus)
	e.GET("/v1/models/provision/:id/events", s.provisionEvents)
	e.GET("/v1/models/list", s.listModels)
	e.GET("/v1/models/catalog", s.catalog)
	e.DELETE("/v1/models/evict", s.evict)

	e.GET("/v1/health", s.health)
	e.GET("/v1/status", s.status)
	e.GET("/v1/metrics", s.metrics)
	e.GET("/metrics", s.metrics)
	e.POST("/v1/admin/shutdown", s.adminShutdown)
	e.GET("/v1/openapi.json", s.openAPI)
	e.GET("/v1/events", s.events)
	// Unknown paths (echo.ErrNotFound) are 404 NOT_FOUND and known paths
	// with another method (echo.ErrMethodNotAllowed) 405
	// METHOD_NOT_ALLOWED, both through handleError.
}

// routeInfo hands the matched route template to the outer middlewares
// (request log, audit, metrics).
func (s *Server) routeInfo(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if p := c.Path(); p != "" && p != "/*" {
			httpmiddleware.SetRoute(c.Request().Context(), p)
		}
		return next(c)
	}
}

// recoverPanics answers 500 INTERNAL through the envelope when a handler
// (or a module below it) panics, and logs the panic.
func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if p := recover(); p != nil {
				if e, ok := p.(error); ok && errors.Is(e, http.ErrAbortHandler) {
					panic(p)
				}
				s.log.Error("handler panicked", "panic", p, "route", c.Path(), "correlation_id", correlationID(c))
				err = &apiError{status: http.StatusInternalServerError, code: httpmiddleware.CodeInternal, message: "internal error"}
			}
		}()
		return next(c)
	}
}

// drainGate answers mutating requests with 503 SHUTTING_DOWN once shutdown
// began. Worker callbacks stay open (a draining hive still tracks its
// workers until it stops them) and so does the idempotent admin shutdown.
func (s *Server) drainGate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		lc := s.cfg.Lifecycle
		r := c.Request()
		if lc == nil || !httpmiddleware.Mutating(r.Method) || !lc.ShuttingDown() {
			return next(c)
		}
		switch c.Path() {
		case "/v1/workers/ready", "/v1/heartbeat", "/v1/admin/shutdown":
			return next(c)
		}
		return newError(http.StatusServiceUnavailable, CodeShuttingDown, "the hive is shutting down", nil)
	}
}

func unavailable(what string) error {
	return newError(http.StatusServiceUnavailable, CodeUnavailable, what+" is not available on this hive", nil)
}
