module github.com/rbee-hive/rbee-hive/metrics

go 1.26.0

require (
	github.com/rbee-hive/rbee-hive/provisioner v0.1.0
	github.com/rbee-hive/rbee-hive/registry v0.1.0
	github.com/rbee-hive/rbee-hive/resources v0.1.0
)

require github.com/kylelemons/godebug v1.1.0 // indirect

require (
	github.com/NVIDIA/go-nvml v0.13.4-1 // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cenkalti/backoff/v4 v4.3.0 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_golang v1.25.0
	github.com/prometheus/client_model v0.6.3
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace (
	github.com/rbee-hive/rbee-hive/provisioner => ../provisioner
	github.com/rbee-hive/rbee-hive/registry => ../registry
	github.com/rbee-hive/rbee-hive/resources => ../resources
)
