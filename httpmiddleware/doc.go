// Package httpmiddleware owns the cross-cutting HTTP concerns of rbee-hive:
// bearer authentication with constant-time comparison, the audit log, request
// logging, correlation ids and request limits. It imports no other rbee-hive
// module: everything it needs from the daemon (the per-worker token check,
// where audit lines go, a metrics hook) comes in as plain functions and
// writers, and every middleware is a func(http.Handler) http.Handler, so any
// router (echo included) can sit behind it.
//
// Stack composes them in the order the daemon needs, outermost first:
//
//	correlation id → request log → panic recovery → body limit → auth → audit → next
//
// so authentication runs before routing (an unknown path without a token is
// 401, not 404) and every response, errors included, carries the
// correlation id.
package httpmiddleware
