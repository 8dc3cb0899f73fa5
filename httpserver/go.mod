module github.com/rbee-hive/rbee-hive/httpserver

go 1.26.0

require (
	github.com/cenkalti/backoff/v4 v4.3.0
	github.com/labstack/echo/v4 v4.16.0
	github.com/rbee-hive/rbee-hive/httpmiddleware v0.1.0
	github.com/rbee-hive/rbee-hive/monitor v0.1.0
	github.com/rbee-hive/rbee-hive/provisioner v0.1.0
	github.com/rbee-hive/rbee-hive/registry v0.1.0
	github.com/rbee-hive/rbee-hive/resources v0.1.0
	go.uber.org/goleak v1.3.0
)

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

require (
	github.com/NVIDIA/go-nvml v0.13.4-1 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/labstack/gommon v0.5.0 // indirect
	github.com/mattn/go-colorable v0.1.15 // indirect
	github.com/mattn/go-isatty v0.0.22 // indirect
	github.com/rbee-hive/rbee-hive/metrics v0.1.0
	github.com/rbee-hive/rbee-hive/restart v0.1.0
	github.com/rbee-hive/rbee-hive/shutdown v0.1.0
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	github.com/valyala/fasttemplate v1.2.2 // indirect
	golang.org/x/crypto v0.57.0 // indirect
	golang.org/x/net v0.59.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.42.0 // indirect
)

replace (
	github.com/rbee-hive/rbee-hive/httpmiddleware => ../httpmiddleware
	github.com/rbee-hive/rbee-hive/monitor => ../monitor
	github.com/rbee-hive/rbee-hive/provisioner => ../provisioner
	github.com/rbee-hive/rbee-hive/registry => ../registry
	github.com/rbee-hive/rbee-hive/resources => ../resources
	github.com/rbee-hive/rbee-hive/restart => ../restart
)

replace github.com/rbee-hive/rbee-hive/metrics => ../metrics

replace github.com/rbee-hive/rbee-hive/shutdown => ../shutdown
