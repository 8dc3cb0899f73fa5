package httpserver

import (
	_ "embed"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/resources"
)

//go:embed openapi.json
var openAPIDocument []byte

// OpenAPI returns the OpenAPI 3 document of the API (a copy).
func OpenAPI() []byte { return append([]byte(nil), openAPIDocument...) }

// GET /v1/health (public)
func (s *Server) health(c echo.Context) error {
	if lc := s.cfg.Lifecycle; lc != nil && lc.ShuttingDown() {
		return c.JSON(http.StatusServiceUnavailable, client.Health{Status: "shutting_down"})
	}
	return c.JSON(http.StatusOK, client.Health{Status: "alive", Version: s.cfg.Version, APIVersion: APIVersion})
}

// GET /v1/status
func (s *Server) status(c echo.Context) error {
	out := client.Status{
		Version:          s.cfg.Version,
		UptimeS:          int64(time.Since(s.cfg.StartedAt) / time.Second),
		Workers:          map[string]int{},
		Devices:          []client.Device{},
		ActiveProvisions: []client.ProvisionStatus{},
	}
	for state, n := range s.cfg.Registry.Counts() {
		out.Workers[string(state)] = n
	}
	for _, d := range s.cfg.Resources.Devices() {
		out.Devices = append(out.Devices, client.Device{
			Index: d.Index, Backend: d.Backend, Name: d.Name,
			TotalBytes: d.TotalBytes, FreeBytes: d.FreeBytes, ReservedBytes: d.ReservedBytes,
		})
	}
	if prov := s.cfg.Provisioner; prov != nil {
		dir := prov.CacheDir()
		used, limit := prov.Usage()
		out.Cache = client.CacheStatus{Dir: dir, UsedBytes: used, LimitBytes: limit}
		if free, err := resources.DiskFree(dir); err == nil {
			out.Cache.FreeDiskBytes = free
		} else {
			s.log.Warn("reading free disk space of the model cache", "dir", dir, "err", err)
		}
		for _, st := range prov.Active() {
			out.ActiveProvisions = append(out.ActiveProvisions, provisionStatus(st))
		}
	}
	return c.JSON(http.StatusOK, out)
}

// GET /v1/metrics and /metrics (both need the admin token, like every
// route but health: a scraper is configured with it).
func (s *Server) metrics(c echo.Context) error {
	if s.cfg.Metrics == nil {
		return unavailable("metrics")
	}
	s.cfg.Metrics.Handler().ServeHTTP(c.Response(), c.Request())
	return nil
}

// POST /v1/admin/shutdown
func (s *Server) adminShutdown(c echo.Context) error {
	if s.cfg.Lifecycle == nil {
		return unavailable("shutdown control")
	}
	s.log.Info("shutdown requested over the API", "correlation_id", correlationID(c), "remote_addr", c.Request().RemoteAddr)
	s.cfg.Lifecycle.RequestShutdown("admin")
	return c.JSON(http.StatusAccepted, client.ShutdownStatus{Status: "shutting_down"})
}

// GET /v1/openapi.json
func (s *Server) openAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, openAPIDocument)
}

// GET /v1/events
func (s *Server) events(c echo.Context) error {
	if s.cfg.Events == nil {
		return unavailable("the event stream")
	}
	s.cfg.Events.ServeHTTP(c.Response(), c.Request())
	return nil
}
