// Package client is the typed Go client of the rbee-hive HTTP API, for
// queen-rbee and other Go services: one method per endpoint of DESIGN.md,
// request and response types that are the JSON shapes, and errors as
// *APIError carrying the error envelope's code.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// HeaderCorrelationID is the correlation id header.
const HeaderCorrelationID = "X-Correlation-ID"

// APIError is an error answer of the hive: the HTTP status and the error
// envelope {"error":{"code","message","details"}}.
type APIError struct {
	Status        int
	Code          string
	Message       string
	Details       map[string]any
	CorrelationID string // of the failed request, for the hive's logs
}

func (e *APIError) Error() string {
	return fmt.Sprintf("rbee-hive: %d %s: %s", e.Status, e.Code, e.Message)
}

// IsCode reports whether err is an *APIError with code.
func IsCode(err error, code string) bool {
	var e *APIError
	return errors.As(err, &e) && e.Code == code
}

// Client talks to one hive. Safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient uses hc for every request (default: http.DefaultClient;
// give it no overall Timeout if you read event streams, bound calls with
// their context instead).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a client for the hive at baseURL ("http://127.0.0.1:8080")
// authenticating with token ("" sends no Authorization header). A worker
// passes its RBEE_WORKER_TOKEN to call Ready and Heartbeat.
func New(baseURL, token string, opts ...Option) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), token: token, hc: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	return c
}

// BaseURL returns the hive's base URL.
func (c *Client) BaseURL() string { return c.base }

// Token returns the bearer token.
func (c *Client) Token() string { return c.token }

// HTTPClient returns the HTTP client in use.
func (c *Client) HTTPClient() *http.Client { return c.hc }

type correlationKey struct{}

// WithCorrelationID makes requests made with ctx carry id as
// X-Correlation-ID (1-128 of [A-Za-z0-9._-], else the hive makes its own).
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey{}, id)
}

// Spawn starts a worker: 202 with the record in state loading, or, with
// Wait, the record once ready.
func (c *Client) Spawn(ctx context.Context, req SpawnRequest) (Worker, error) {
	var w Worker
	_, err := c.doJSON(ctx, http.MethodPost, "/v1/workers/spawn", nil, req, &w)
	return w, err
}

// ListWorkers lists workers, optionally filtered.
func (c *Client) ListWorkers(ctx context.Context, opts ListWorkersOptions) ([]Worker, error) {
	q := url.Values{}
	if opts.State != "" {
		q.Set("state", opts.State)
	}
	if opts.ModelRef != "" {
		q.Set("model_ref", opts.ModelRef)
	}
	var out WorkerList
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/workers/list", q, nil, &out)
	return out.Workers, err
}

// Ready is a worker's ready callback.
func (c *Client) Ready(ctx context.Context, req ReadyRequest) (Worker, error) {
	var w Worker
	_, err := c.doJSON(ctx, http.MethodPost, "/v1/workers/ready", nil, req, &w)
	return w, err
}

// Heartbeat is a worker's heartbeat.
func (c *Client) Heartbeat(ctx context.Context, req HeartbeatRequest) (Worker, error) {
	var w Worker
	_, err := c.doJSON(ctx, http.MethodPost, "/v1/heartbeat", nil, req, &w)
	return w, err
}

// ShutdownWorker stops a worker and removes it.
func (c *Client) ShutdownWorker(ctx context.Context, req ShutdownRequest) (ShutdownResult, error) {
	var out ShutdownResult
	_, err := c.doJSON(ctx, http.MethodPost, "/v1/workers/shutdown", nil, req, &out)
	return out, err
}

// WorkersHealth returns probe state for one worker, or all with "".
func (c *Client) WorkersHealth(ctx context.Context, workerID string) ([]WorkerHealth, error) {
	q := url.Values{}
	if workerID != "" {
		q.Set("worker_id", workerID)
	}
	var out HealthList
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/workers/health", q, nil, &out)
	return out.Workers, err
}

// WorkerLogs returns the last tail lines of a worker's output (tail <= 0:
// the hive's default, 100).
func (c *Client) WorkerLogs(ctx context.Context, workerID string, tail int) ([]byte, error) {
	q := url.Values{"worker_id": {workerID}}
	if tail > 0 {
		q.Set("tail", strconv.Itoa(tail))
	}
	return c.doRaw(ctx, "/v1/workers/logs", q)
}

// Provision makes a model available. A cached model answers at once with
// Model; otherwise Accepted names the provision (the same id for the same
// ref in flight). With wait the call blocks until the model is ready.
func (c *Client) Provision(ctx context.Context, modelRef string, wait bool) (ProvisionResult, error) {
	var q url.Values
	if wait {
		q = url.Values{"wait": {"true"}}
	}
	var raw json.RawMessage
	status, err := c.doJSON(ctx, http.MethodPost, "/v1/models/provision", q, ProvisionRequest{ModelRef: modelRef}, &raw)
	if err != nil {
		return ProvisionResult{}, err
	}
	if status == http.StatusAccepted {
		var a ProvisionAccepted
		if err := json.Unmarshal(raw, &a); err != nil {
			return ProvisionResult{}, fmt.Errorf("rbee-hive: decode provision answer: %w", err)
		}
		return ProvisionResult{Accepted: &a}, nil
	}
	var m Model
	if err := json.Unmarshal(raw, &m); err != nil {
		return ProvisionResult{}, fmt.Errorf("rbee-hive: decode model: %w", err)
	}
	return ProvisionResult{Model: &m}, nil
}

// ProvisionStatus returns a provision's progress.
func (c *Client) ProvisionStatus(ctx context.Context, id string) (ProvisionStatus, error) {
	var out ProvisionStatus
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/models/provision/"+url.PathEscape(id), nil, nil, &out)
	return out, err
}

// ListModels lists cached models.
func (c *Client) ListModels(ctx context.Context) ([]Model, error) {
	var out ModelList
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/models/list", nil, nil, &out)
	return out.Models, err
}

// Catalog lists the configured catalog with cache state.
func (c *Client) Catalog(ctx context.Context) ([]CatalogEntry, error) {
	var out Catalog
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/models/catalog", nil, nil, &out)
	return out.Models, err
}

// Evict removes a cached model no worker uses.
func (c *Client) Evict(ctx context.Context, modelRef string) (EvictResult, error) {
	var out EvictResult
	_, err := c.doJSON(ctx, http.MethodDelete, "/v1/models/evict", url.Values{"model_ref": {modelRef}}, nil, &out)
	return out, err
}

// Health is the public liveness check. A hive that is shutting down
// answers 503, returned here as Status "shutting_down" without an error.
func (c *Client) Health(ctx context.Context) (Health, error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/v1/health", nil, nil)
	if err != nil {
		return Health{}, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return Health{}, fmt.Errorf("rbee-hive: GET /v1/health: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return Health{}, apiError(resp)
	}
	var h Health
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(&h); err != nil {
		return Health{}, fmt.Errorf("rbee-hive: decode health: %w", err)
	}
	return h, nil
}

// Status returns the hive's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var out Status
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/status", nil, nil, &out)
	return out, err
}

// Metrics returns the Prometheus text exposition.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	return c.doRaw(ctx, "/v1/metrics", nil)
}

// AdminShutdown starts the hive's graceful shutdown.
func (c *Client) AdminShutdown(ctx context.Context) (ShutdownStatus, error) {
	var out ShutdownStatus
	_, err := c.doJSON(ctx, http.MethodPost, "/v1/admin/shutdown", nil, nil, &out)
	return out, err
}

// OpenAPI returns the hive's OpenAPI 3 document.
func (c *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	return c.doRaw(ctx, "/v1/openapi.json", nil)
}

// maxAnswer bounds what the client reads of one JSON or text answer.
const maxAnswer = 64 << 20

func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body any) (*http.Request, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("rbee-hive: encode %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("rbee-hive: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if id, _ := ctx.Value(correlationKey{}).(string); id != "" {
		req.Header.Set(HeaderCorrelationID, id)
	}
	return req, nil
}

// doJSON sends body as JSON and decodes a 2xx answer into out; other
// answers are *APIError. It returns the status code.
func (c *Client) doJSON(ctx context.Context, method, path string, q url.Values, body, out any) (int, error) {
	req, err := c.newRequest(ctx, method, path, q, body)
	if err != nil {
		return 0, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("rbee-hive: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, apiError(resp)
	}
	if out != nil {
		if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("rbee-hive: decode %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// doRaw GETs path and returns the body of a 2xx answer.
func (c *Client) doRaw(ctx context.Context, path string, q url.Values) ([]byte, error) {
	req, err := c.newRequest(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Del("Accept")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("rbee-hive: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, apiError(resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("rbee-hive: GET %s: %w", path, err)
	}
	return b, nil
}

// apiError reads an error answer. One that is not an envelope (a proxy's
// page) keeps its status and the start of its text.
func apiError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := decodeEnvelope(b)
	e.Status = resp.StatusCode
	e.CorrelationID = resp.Header.Get(HeaderCorrelationID)
	return e
}

func decodeEnvelope(b []byte) *APIError {
	var env struct {
		Error struct {
			Code    string         `json:"code"`
			Message string         `json:"message"`
			Details map[string]any `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &env); err != nil || env.Error.Code == "" {
		msg := strings.TrimSpace(string(b))
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return &APIError{Code: "UNKNOWN", Message: msg}
	}
	return &APIError{Code: env.Error.Code, Message: env.Error.Message, Details: env.Error.Details}
}
