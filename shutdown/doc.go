// Package shutdown owns the hive's graceful shutdown: it turns SIGTERM, SIGINT
// or an admin request into one ordered drain (refuse new work, cancel
// downloads, stop every worker in parallel under a deadline) and reports when
// it is done.
package shutdown
