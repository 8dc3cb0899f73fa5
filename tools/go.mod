module github.com/rbee-hive/rbee-hive/tools

go 1.26.0

require (
	github.com/rbee-hive/rbee-hive/httpserver v0.1.0
	github.com/rbee-hive/rbee-hive/monitor v0.1.0
	github.com/rbee-hive/rbee-hive/provisioner v0.1.0
	golang.org/x/mod v0.40.0
)

require (
	github.com/NVIDIA/go-nvml v0.13.4-1 // indirect
	github.com/cenkalti/backoff/v4 v4.3.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/rbee-hive/rbee-hive/registry v0.1.0 // indirect
	github.com/rbee-hive/rbee-hive/resources v0.1.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

replace github.com/rbee-hive/rbee-hive/monitor => ../monitor

replace github.com/rbee-hive/rbee-hive/registry => ../registry

replace github.com/rbee-hive/rbee-hive/resources => ../resources

replace github.com/rbee-hive/rbee-hive/provisioner => ../provisioner

replace github.com/rbee-hive/rbee-hive/restart => ../restart

replace github.com/rbee-hive/rbee-hive/httpserver => ../httpserver

replace github.com/rbee-hive/rbee-hive/httpmiddleware => ../httpmiddleware

replace github.com/rbee-hive/rbee-hive/metrics => ../metrics

replace github.com/rbee-hive/rbee-hive/shutdown => ../shutdown
