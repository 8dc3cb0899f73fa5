// Package httpserver owns the rbee-hive HTTP API: the echo/v4 routes of
// DESIGN.md, their handlers, the JSON error envelope, the OpenAPI document
// (openapi.json, embedded and served at /v1/openapi.json) and, in
// sub-package client, a typed Go client.
//
// Decisions the design left open:
//
//   - Authentication runs before routing (httpmiddleware.Stack wraps echo):
//     an unknown path without a token is 401, not 404. The Bearer scheme is
//     matched case-insensitively ("bearer x" works, RFC 7235); a token with
//     spaces or control characters is INVALID_API_KEY.
//   - The worker callbacks (POST /v1/workers/ready, POST /v1/heartbeat)
//     accept the admin token or the per-worker token of the body's
//     worker_id; the middleware reads the (size-limited) body to find the
//     id and hands the same bytes on to strict decoding.
//   - /v1/metrics and /metrics need the token like every route but
//     GET /v1/health: scrapers are configured with it.
//   - While the hive shuts down, health is 503 {"status":"shutting_down"}
//     and POST/PUT/PATCH/DELETE are 503 SHUTTING_DOWN, except the worker
//     callbacks (a draining hive still tracks its workers until it stops
//     them) and the idempotent admin shutdown. Reads keep working.
//   - Worker ids in requests must look like worker-<uuid> (400
//     INVALID_REQUEST otherwise) before anything uses them: the logs route
//     never turns a crafted id into a file path.
//   - Typed errors of the layers below become codes in errors.go only
//     (errorFor); anything unknown is 500 INTERNAL with a generic message,
//     the cause logged with the correlation id.
//   - A missing Monitor or Provisioner (tests, partial wiring) makes the
//     routes that need it answer 503 UNAVAILABLE; so do /metrics, /v1/events
//     and admin shutdown when Metrics, Events or Lifecycle are nil.
package httpserver
