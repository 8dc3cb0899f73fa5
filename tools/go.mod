module github.com/rbee-hive/rbee-hive/tools

go 1.26.0

require (
	github.com/rbee-hive/rbee-hive/monitor v0.1.0
	golang.org/x/mod v0.40.0
)

replace github.com/rbee-hive/rbee-hive/monitor => ../monitor

replace github.com/rbee-hive/rbee-hive/registry => ../registry

replace github.com/rbee-hive/rbee-hive/resources => ../resources

replace github.com/rbee-hive/rbee-hive/provisioner => ../provisioner

replace github.com/rbee-hive/rbee-hive/restart => ../restart
