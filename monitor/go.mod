module github.com/rbee-hive/rbee-hive/monitor

go 1.26.0

require (
	github.com/google/uuid v1.6.0
	github.com/rbee-hive/rbee-hive/provisioner v0.1.0
	github.com/rbee-hive/rbee-hive/registry v0.1.0
	github.com/rbee-hive/rbee-hive/resources v0.1.0
	github.com/rbee-hive/rbee-hive/restart v0.1.0
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.50.0
)

require (
	github.com/NVIDIA/go-nvml v0.13.4-1 // indirect
	github.com/cenkalti/backoff/v4 v4.3.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
)

replace (
	github.com/rbee-hive/rbee-hive/provisioner => ../provisioner
	github.com/rbee-hive/rbee-hive/registry => ../registry
	github.com/rbee-hive/rbee-hive/resources => ../resources
	github.com/rbee-hive/rbee-hive/restart => ../restart
)
