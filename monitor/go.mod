module github.com/rbee-hive/rbee-hive/monitor

go 1.26

require (
	github.com/rbee-hive/rbee-hive/provisioner v0.1.0
	github.com/rbee-hive/rbee-hive/registry v0.1.0
	github.com/rbee-hive/rbee-hive/resources v0.1.0
	github.com/rbee-hive/rbee-hive/restart v0.1.0
)

replace (
	github.com/rbee-hive/rbee-hive/provisioner => ../provisioner
	github.com/rbee-hive/rbee-hive/registry => ../registry
	github.com/rbee-hive/rbee-hive/resources => ../resources
	github.com/rbee-hive/rbee-hive/restart => ../restart
)
