package httpserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/rbee-hive/rbee-hive/httpmiddleware"
	"github.com/rbee-hive/rbee-hive/httpserver/client"
	"github.com/rbee-hive/rbee-hive/provisioner"
)

func (s *Server) provisioner() (*provisioner.Provisioner, error) {
	if s.cfg.Provisioner == nil {
		return nil, unavailable("model provisioning")
	}
	return s.cfg.Provisioner, nil
}

// modelRecord is the API's model record: the cached model and the workers
// that use it.
func (s *Server) modelRecord(m provisioner.Model) client.Model {
	users := []string{}
	if s.cfg.Monitor != nil {
		if u := s.cfg.Monitor.UsersOf(m.Ref); len(u) > 0 {
			users = u
		}
	}
	return client.Model{
		ModelRef: m.Ref, LocalPath: m.LocalPath, SizeBytes: m.SizeBytes, SHA256: m.SHA256,
		Commit: m.Commit, VRAMBytes: m.VRAMBytes, ProvisionedAt: m.ProvisionedAt,
		LastUsedAt: m.LastUsedAt, InUseBy: users,
	}
}

func provisionStatus(st provisioner.Status) client.ProvisionStatus {
	return client.ProvisionStatus{
		ProvisionID: st.ID, ModelRef: st.ModelRef, State: string(st.State),
		BytesDone: st.BytesDone, BytesTotal: st.BytesTotal, Error: st.Error,
	}
}

// POST /v1/models/provision[?wait=true]
func (s *Server) provision(c echo.Context) error {
	var req client.ProvisionRequest
	if err := decodeJSON(c.Request(), &req, false); err != nil {
		return err
	}
	if req.ModelRef == "" {
		return invalidField("model_ref", "required")
	}
	wait, err := boolParam(c, "wait")
	if err != nil {
		return err
	}
	prov, err := s.provisioner()
	if err != nil {
		return err
	}
	if _, err := prov.Resolve(req.ModelRef); err != nil {
		return err
	}
	if m, ok := prov.Cached(req.ModelRef); ok {
		return c.JSON(http.StatusOK, s.modelRecord(m))
	}
	p, err := prov.Start(req.ModelRef)
	if err != nil {
		return err
	}
	if !wait {
		st := p.Status()
		return c.JSON(http.StatusAccepted, client.ProvisionAccepted{ProvisionID: p.ID(), ModelRef: st.ModelRef, State: string(st.State)})
	}
	select {
	case <-p.Done():
	case <-c.Request().Context().Done():
		// The provision goes on for whoever else wants it.
		return c.Request().Context().Err()
	}
	m, err := p.Result()
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.modelRecord(m))
}

// GET /v1/models/provision/:id
func (s *Server) provisionStatus(c echo.Context) error {
	p, err := s.lookupProvision(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, provisionStatus(p.Status()))
}

func (s *Server) lookupProvision(c echo.Context) (*provisioner.Provision, error) {
	prov, err := s.provisioner()
	if err != nil {
		return nil, err
	}
	id := c.Param("id")
	p, ok := prov.Lookup(id)
	if !ok {
		return nil, fmt.Errorf("provision %q: %w", id, provisioner.ErrUnknownProvision)
	}
	return p, nil
}

// GET /v1/models/provision/:id/events: progress events, then one done
// (the model) or error (the error envelope), then the stream ends.
func (s *Server) provisionEvents(c echo.Context) error {
	p, err := s.lookupProvision(c)
	if err != nil {
		return err
	}
	updates, cancel := p.Subscribe()
	defer cancel()

	res := c.Response()
	h := res.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set("X-Accel-Buffering", "no") // no proxy buffering
	res.WriteHeader(http.StatusOK)
	res.Flush()

	ctx := c.Request().Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case st, ok := <-updates:
			if !ok {
				return s.finalEvent(c, p)
			}
			if err := writeEvent(c, "progress", provisionStatus(st)); err != nil {
				return nil // the client went away
			}
		}
	}
}

// finalEvent writes the done or error event of a finished provision.
func (s *Server) finalEvent(c echo.Context, p *provisioner.Provision) error {
	select {
	case <-p.Done():
	case <-c.Request().Context().Done():
		return nil
	}
	m, err := p.Result()
	if err != nil {
		ae := errorFor(err)
		if ae.status >= 500 {
			s.log.Warn("provision failed", "provision_id", p.ID(), "err", err, "correlation_id", correlationID(c))
		}
		_ = writeEvent(c, "error", httpmiddleware.ErrorBody{Error: httpmiddleware.ErrorDetail{
			Code: ae.code, Message: ae.message, Details: ae.details}})
		return nil
	}
	_ = writeEvent(c, "done", s.modelRecord(m))
	return nil
}

func writeEvent(c echo.Context, event string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	res := c.Response()
	if _, err := fmt.Fprintf(res, "event: %s\ndata: %s\n\n", event, data); err != nil {
		return err
	}
	return http.NewResponseController(res.Writer).Flush()
}

// GET /v1/models/list
func (s *Server) listModels(c echo.Context) error {
	prov, err := s.provisioner()
	if err != nil {
		return err
	}
	models := prov.List()
	out := client.ModelList{Models: make([]client.Model, 0, len(models))}
	for _, m := range models {
		out.Models = append(out.Models, s.modelRecord(m))
	}
	return c.JSON(http.StatusOK, out)
}

// GET /v1/models/catalog
func (s *Server) catalog(c echo.Context) error {
	prov, err := s.provisioner()
	if err != nil {
		return err
	}
	entries := prov.Catalog()
	out := client.Catalog{Models: make([]client.CatalogEntry, 0, len(entries))}
	for _, e := range entries {
		_, cached := prov.Cached(e.ModelRef)
		out.Models = append(out.Models, client.CatalogEntry{
			Name: e.Name, ModelRef: e.ModelRef, Description: e.Description,
			SizeBytes: e.SizeBytes, VRAMBytes: e.VRAMBytes, Cached: cached,
		})
	}
	return c.JSON(http.StatusOK, out)
}

// DELETE /v1/models/evict?model_ref= (or {"model_ref"} in the body)
func (s *Server) evict(c echo.Context) error {
	ref := c.QueryParam("model_ref")
	var req client.EvictRequest
	if err := decodeJSON(c.Request(), &req, true); err != nil {
		return err
	}
	switch {
	case ref != "" && req.ModelRef != "" && ref != req.ModelRef:
		return invalidField("model_ref", "query and body disagree")
	case ref == "":
		ref = req.ModelRef
	}
	if ref == "" {
		return invalidField("model_ref", "required")
	}
	prov, err := s.provisioner()
	if err != nil {
		return err
	}
	var inUse func(string) bool
	if s.cfg.Monitor != nil {
		inUse = s.cfg.Monitor.InUse
	}
	freed, err := prov.Evict(ref, inUse)
	if errors.Is(err, provisioner.ErrInUse) && s.cfg.Monitor != nil {
		if users := s.cfg.Monitor.UsersOf(ref); len(users) > 0 {
			err = fmt.Errorf("%w (workers %s)", err, strings.Join(users, ", "))
		}
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, client.EvictResult{ModelRef: ref, FreedBytes: freed})
}

// boolParam parses an optional boolean query parameter.
func boolParam(c echo.Context, name string) (bool, error) {
	v := c.QueryParam(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, invalidField(name, "must be true or false")
	}
	return b, nil
}
