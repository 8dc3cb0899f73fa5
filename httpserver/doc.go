// Package httpserver owns the rbee-hive HTTP API: the echo/v4 routes of
// DESIGN.md, their handlers, the JSON error envelope, the OpenAPI document and
// a typed Go client.
package httpserver
