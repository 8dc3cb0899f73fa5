// Package httpmiddleware owns the cross-cutting HTTP concerns of rbee-hive:
// bearer authentication with constant-time comparison, the audit log, request
// logging, correlation ids and request limits. It imports no other rbee-hive
// module.
package httpmiddleware
