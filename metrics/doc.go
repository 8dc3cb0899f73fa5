// Package metrics owns the Prometheus collectors of rbee-hive. They live on a
// private registry and read worker, device and cache figures from the
// registry, resources and provisioner modules at scrape time, so there is no
// second copy of state to drift.
package metrics
